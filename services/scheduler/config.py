"""Scheduler settings."""

from functools import lru_cache

from pydantic import Field

from kernel.settings import BusSettings, ConsumerSettings, DatabaseSettings, HeraldSettings, WebhookSettings


class SchedulerSettings(HeraldSettings, DatabaseSettings, BusSettings, ConsumerSettings, WebhookSettings):
    port: int = Field(8004, description="HTTP port")
    consumer_batch: int = 128
    consumer_concurrency: int = 2
    poll_seconds: float = Field(0.25, description="how often an idle replica looks for due sends")
    due_batch: int = Field(200, description="due sends one look claims at most")


@lru_cache
def get_settings() -> SchedulerSettings:
    return SchedulerSettings()
