"""Ingest settings."""

from functools import lru_cache

from kernel.settings import BusSettings, HeraldSettings


class IngestSettings(HeraldSettings, BusSettings):
    port: int = 8001
    max_call_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_batch_events: int = 2500
    publish_timeout_seconds: float = 5.0


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()  # type: ignore[call-arg]
