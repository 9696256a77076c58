"""Scheduler settings."""

from functools import lru_cache

from kernel.settings import BusSettings, DatabaseSettings, HeraldSettings


class SchedulerSettings(HeraldSettings, DatabaseSettings, BusSettings):
    port: int = 8004
    consumer_batch: int = 128
    consumer_concurrency: int = 4
    # How often an idle replica looks for due sends; each look claims up to `due_batch` rows.
    poll_seconds: float = 0.25
    due_batch: int = 200


@lru_cache
def get_settings() -> SchedulerSettings:
    return SchedulerSettings()  # type: ignore[call-arg]
