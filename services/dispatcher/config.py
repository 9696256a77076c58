"""Dispatcher settings."""

from functools import lru_cache

from pydantic import Field, SecretStr

from kernel.contracts import Channel
from kernel.settings import BusSettings, ConsumerSettings, DatabaseSettings, HeraldSettings, WebhookSettings


class DispatcherSettings(HeraldSettings, DatabaseSettings, BusSettings, ConsumerSettings, WebhookSettings):
    port: int = Field(8005, description="HTTP port")
    consumer_batch: int = 128
    consumer_concurrency: int = 2
    ack_wait_seconds: float = 30.0  # above attempt_timeout_seconds: an attempt older than it was interrupted
    smtp_host: str = Field("127.0.0.1", description="SMTP relay for email")
    smtp_port: int = Field(1025, description="SMTP relay port")
    smtp_username: str | None = Field(None, description="SMTP login user (none: no login)")
    smtp_password: SecretStr | None = Field(None, description="SMTP login password")
    smtp_starttls: bool = Field(False, description="upgrade the SMTP connection with STARTTLS")
    email_from: str = Field("Herald <noreply@herald.local>", description="From: header of every email")
    webhook_timeout_seconds: float = Field(10.0, description="per-request timeout of webhook deliveries")
    email_retry_hours: float = Field(
        24.0, gt=0, description="how long an email whose provider or profile lookup keeps failing is retried before it is failed"
    )
    webhook_retry_hours: float = Field(
        24.0, gt=0, description="how long a webhook whose endpoint keeps failing (network, 408, 429, 5xx) is retried"
    )
    retry_base_seconds: float = Field(5.0, gt=0, description="first retry delay after a transient failure; it doubles per attempt")
    retry_max_interval_seconds: float = Field(900.0, gt=0, description="longest delay between two attempts of one send")
    retry_poll_seconds: float = Field(1.0, gt=0, description="how often a replica looks for due retries and interrupted attempts")
    retry_batch: int = Field(100, ge=1, description="due retries one look claims at most")
    attempt_timeout_seconds: float = Field(
        20.0, gt=0, description="longest one delivery attempt may take (profile lookup, render, provider) before it counts as a transient failure"
    )

    def retry_hours(self, channel: Channel) -> float:
        """How long sends of this channel are retried."""
        return self.email_retry_hours if channel == "email" else self.webhook_retry_hours


@lru_cache
def get_settings() -> DispatcherSettings:
    return DispatcherSettings()
