"""Dispatcher settings."""

from functools import lru_cache

from pydantic import SecretStr

from kernel.settings import BusSettings, DatabaseSettings, HeraldSettings


class DispatcherSettings(HeraldSettings, DatabaseSettings, BusSettings):
    port: int = 8005
    consumer_batch: int = 64
    consumer_concurrency: int = 16
    max_attempts: int = 5
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    email_from: str = "Herald <noreply@herald.local>"
    webhook_timeout_seconds: float = 10.0


@lru_cache
def get_settings() -> DispatcherSettings:
    return DispatcherSettings()  # type: ignore[call-arg]
