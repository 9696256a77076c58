"""Dispatcher settings."""

from functools import lru_cache

from pydantic import Field, SecretStr

from kernel.settings import BusSettings, ConsumerSettings, DatabaseSettings, HeraldSettings


class DispatcherSettings(HeraldSettings, DatabaseSettings, BusSettings, ConsumerSettings):
    port: int = Field(8005, description="HTTP port")
    consumer_batch: int = 128
    consumer_concurrency: int = 2
    max_attempts: int = Field(5, description="deliveries tried per send before it is marked failed")
    smtp_host: str = Field("127.0.0.1", description="SMTP relay for email")
    smtp_port: int = Field(1025, description="SMTP relay port")
    smtp_username: str | None = Field(None, description="SMTP login user (none: no login)")
    smtp_password: SecretStr | None = Field(None, description="SMTP login password")
    smtp_starttls: bool = Field(False, description="upgrade the SMTP connection with STARTTLS")
    email_from: str = Field("Herald <noreply@herald.local>", description="From: header of every email")
    webhook_timeout_seconds: float = Field(10.0, description="per-request timeout of webhook deliveries")


@lru_cache
def get_settings() -> DispatcherSettings:
    return DispatcherSettings()  # type: ignore[call-arg]
