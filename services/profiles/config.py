"""Profiles settings."""

from datetime import timedelta
from functools import lru_cache

from pydantic import Field

from kernel.settings import BusSettings, ConsumerSettings, DatabaseSettings, HeraldSettings
from services.profiles.activity import Rules


class ProfilesSettings(HeraldSettings, DatabaseSettings, BusSettings, ConsumerSettings):
    port: int = Field(8002, description="HTTP port")
    consumer_batch: int = 256
    consumer_concurrency: int = 3
    session_timeout_minutes: float = Field(
        30.0, gt=0, description="a browser's session ends after this many minutes without an event (phones: their lifecycle events)"
    )

    def rules(self) -> Rules:
        """What the event path needs of these settings."""
        return Rules(session_gap=timedelta(minutes=self.session_timeout_minutes))


@lru_cache
def get_settings() -> ProfilesSettings:
    return ProfilesSettings()
