"""Profiles settings."""

from functools import lru_cache

from kernel.settings import BusSettings, DatabaseSettings, HeraldSettings


class ProfilesSettings(HeraldSettings, DatabaseSettings, BusSettings):
    port: int = 8002
    consumer_batch: int = 128
    consumer_concurrency: int = 8


@lru_cache
def get_settings() -> ProfilesSettings:
    return ProfilesSettings()  # type: ignore[call-arg]
