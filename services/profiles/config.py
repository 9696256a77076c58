"""Profiles settings."""

from functools import lru_cache

from pydantic import Field

from kernel.settings import BusSettings, ConsumerSettings, DatabaseSettings, HeraldSettings


class ProfilesSettings(HeraldSettings, DatabaseSettings, BusSettings, ConsumerSettings):
    port: int = Field(8002, description="HTTP port")
    consumer_batch: int = 256
    consumer_concurrency: int = 3


@lru_cache
def get_settings() -> ProfilesSettings:
    return ProfilesSettings()
