"""Segmenter settings."""

from functools import lru_cache

from pydantic import Field

from kernel.settings import BusSettings, ConsumerSettings, DatabaseSettings, HeraldSettings


class SegmenterSettings(HeraldSettings, DatabaseSettings, BusSettings, ConsumerSettings):
    port: int = Field(8003, description="HTTP port")
    consumer_batch: int = 128
    consumer_concurrency: int = 2


@lru_cache
def get_settings() -> SegmenterSettings:
    return SegmenterSettings()
