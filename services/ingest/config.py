"""Ingest settings."""

from functools import lru_cache

from pydantic import Field

from kernel.settings import BusSettings, HeraldSettings


class IngestSettings(HeraldSettings, BusSettings):
    port: int = Field(8001, description="HTTP port")
    max_call_bytes: int = Field(32 * 1024, description="largest single call accepted (decompressed JSON)")
    max_batch_bytes: int = Field(500 * 1024, description="largest batch accepted (decompressed JSON)")
    max_batch_events: int = Field(2500, description="most calls in one batch")
    publish_timeout_seconds: float = Field(5.0, description="wait for JetStream to store an event before a 503")


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
