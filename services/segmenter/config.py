"""Segmenter settings."""

from functools import lru_cache

from kernel.settings import BusSettings, DatabaseSettings, HeraldSettings


class SegmenterSettings(HeraldSettings, DatabaseSettings, BusSettings):
    port: int = 8003
    consumer_batch: int = 128
    consumer_concurrency: int = 4


@lru_cache
def get_settings() -> SegmenterSettings:
    return SegmenterSettings()  # type: ignore[call-arg]
