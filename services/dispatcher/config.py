"""Dispatcher settings."""

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator

from kernel import signing
from kernel.contracts import Channel
from kernel.settings import (
    LINK_KEY_DESCRIPTION,
    BusSettings,
    ConsumerSettings,
    DatabaseSettings,
    HeraldSettings,
    LinkKey,
    PublicUrl,
    WebhookSettings,
)
from services.dispatcher.credentials import SecretBox, origin_of
from services.dispatcher.domain import Links


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
    email_from: str = Field(
        "Herald <noreply@herald.local>", description="From: header of an email whose campaign and workspace name none"
    )
    smtp_pool_size: int = Field(4, ge=1, le=100, description="SMTP connections kept open per server (and login), reused across messages")
    smtp_idle_seconds: float = Field(30.0, gt=0, description="an SMTP connection idle this long is closed, not reused")
    public_url: PublicUrl = Field(
        None,
        description="the gateway's public URL (https://events.example.com), where emails' signed links point; with "
        "HERALD_LINK_KEY, every email carries List-Unsubscribe, an open pixel and tracked links. Unset: none of them",
    )
    link_key: LinkKey = Field(None, description=LINK_KEY_DESCRIPTION)
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

    secrets_key: SecretStr | None = Field(
        None,
        description="Fernet keys, comma-separated, newest first, that encrypt channel credentials (APNs keys, FCM "
        "service accounts) at rest: the first encrypts, every one decrypts, so a new key goes first while the old "
        "still reads (`herald keys --secrets` makes one; `herald rotate-secrets` re-encrypts under the first). "
        "Unset: channel credentials cannot be saved or used",
    )
    apns_url: str = Field("https://api.push.apple.com", description="APNs provider API for apps configured `production`")
    apns_sandbox_url: str = Field(
        "https://api.sandbox.push.apple.com", description="APNs provider API for apps configured `sandbox` (development builds)"
    )
    fcm_url: str = Field("https://fcm.googleapis.com", description="FCM HTTP v1 API")
    fcm_token_origins: str = Field(
        "https://oauth2.googleapis.com",
        description="comma-separated origins a service account's `token_uri` may point at; the dispatcher sends its "
        "signed assertions nowhere else",
    )
    push_timeout_seconds: float = Field(10.0, gt=0, description="per-request timeout of APNs, FCM and token requests")
    push_retry_hours: float = Field(
        24.0, gt=0, description="how long a push whose provider keeps failing (network, 429, 5xx) is retried"
    )
    twilio_url: str = Field("https://api.twilio.com", description="the Twilio-compatible REST API SMS go through")
    sms_timeout_seconds: float = Field(10.0, gt=0, description="per-request timeout of SMS provider requests")
    sms_retry_hours: float = Field(
        24.0, gt=0, description="how long an SMS whose provider keeps failing (network, 429, 5xx) is retried"
    )

    @field_validator("secrets_key")
    @classmethod
    def _readable_secrets_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            SecretBox.from_setting(value.get_secret_value())  # UnreadableSecretsKey (a ValueError) says which entry
            return value
        return None

    def links(
        self, workspace_id: str, send_id: str, user_id: str | None, channel: str, group_id: str | None = None
    ) -> Links | None:
        """The signed public links of a send (unsubscribe, open pixel, click redirects), or None when not configured."""
        if not self.public_url or self.link_key is None:
            return None
        key = signing.link_key_bytes(self.link_key.get_secret_value())
        return Links(self.public_url, key, workspace_id, send_id, user_id, channel, group_id)

    def secret_box(self) -> SecretBox | None:
        """The box that seals channel secrets, or None when no key is configured."""
        return SecretBox.from_setting(self.secrets_key.get_secret_value()) if self.secrets_key else None

    def token_origins(self) -> frozenset[str]:
        """The origins a service account's token_uri may name."""
        return frozenset(origin_of(o.strip()) for o in self.fcm_token_origins.split(",") if o.strip())

    def retry_hours(self, channel: Channel) -> float:
        """How long sends of this channel are retried."""
        if channel == "email":
            return self.email_retry_hours
        if channel == "sms":
            return self.sms_retry_hours
        return self.push_retry_hours if channel == "push" else self.webhook_retry_hours


@lru_cache
def get_settings() -> DispatcherSettings:
    return DispatcherSettings()
