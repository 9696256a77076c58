"""Segmenter settings."""

from functools import lru_cache

from pydantic import Field

from kernel.settings import BusSettings, ConsumerSettings, DatabaseSettings, HeraldSettings


class SegmenterSettings(HeraldSettings, DatabaseSettings, BusSettings, ConsumerSettings):
    port: int = Field(8003, description="HTTP port")
    consumer_batch: int = 128
    consumer_concurrency: int = 2
    segment_backfill_chunk: int = Field(
        2000, ge=1, description="profiles per transaction when storing a new segment's members (in the background past the first chunk)"
    )
    segment_backfill_poll_seconds: float = Field(
        2.0, gt=0, description="how often a replica looks for segments still computing (one created here wakes it at once)"
    )
    segment_sweep_seconds: float = Field(
        300.0, gt=0,
        description="how often segments whose conditions read the clock (a window, \"more than N days ago\") are"
        " re-evaluated for every profile, so that members exit and enter as time passes",
    )


@lru_cache
def get_settings() -> SegmenterSettings:
    return SegmenterSettings()
