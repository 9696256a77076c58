"""Typed settings shared by every process; each service's config.py extends them.

Each field's description is the configuration reference (`herald settings`, docs/operations.md).
"""

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel import signing


def _public_origin(value: str | None) -> str | None:
    """An http(s) URL with a host and no query or fragment, without its trailing slash; empty is unset."""
    if not value:
        return None
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError("HERALD_PUBLIC_URL must be an http(s) URL such as https://events.example.com")
    return value.rstrip("/")


# HERALD_PUBLIC_URL: where clients reach the gateway (the gateway's SDK settings, the dispatcher's links).
PublicUrl = Annotated[str | None, AfterValidator(_public_origin)]


def _link_key(value: SecretStr | None) -> SecretStr | None:
    """At least 32 characters; empty is unset."""
    if value is None or not value.get_secret_value().strip():
        return None
    if len(value.get_secret_value().strip()) < 32:
        raise ValueError("HERALD_LINK_KEY must be at least 32 characters (`herald keys --secrets` makes one)")
    return value


# HERALD_LINK_KEY: signs the public links in messages (the dispatcher makes them, the gateway serves them).
LinkKey = Annotated[SecretStr | None, AfterValidator(_link_key)]
LINK_KEY_DESCRIPTION = (
    "the key (any text of 32+ characters) that signs the public links in messages (HMAC-SHA256): an email's open "
    "pixel, click redirects and one-click unsubscribe; the dispatcher makes them, the gateway serves them (a link "
    "that does not verify is a 404). The same in both. Unset: emails carry none of them"
)

PLACEHOLDER_PREFIX = "dev-"
# Every settings class carries the same config: pydantic merges it from all bases, last wins.
CONFIG = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")


class HeraldSettings(BaseSettings):
    """Settings every Herald process reads, from `HERALD_*` environment variables."""

    model_config = CONFIG

    env: Literal["development", "test", "production"] = Field(
        "development", description="`production` refuses secrets that still hold a `dev-` placeholder"
    )
    log_format: Literal["console", "json"] = Field("json", description="`json`: one object per line, for log shippers")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    host: str = Field("127.0.0.1", description="address the HTTP server binds; `0.0.0.0` in a container")
    gateway_public_keys: str = Field(
        description="the gateway's Ed25519 public key (base64url or PEM), or several comma-separated while "
        "rotating; a service acts only on requests the gateway signed with one of them (`herald keys` makes a pair)"
    )

    @field_validator("gateway_public_keys")
    @classmethod
    def _readable_public_keys(cls, value: str) -> str:
        signing.Verifier.from_setting(value)  # UnreadableKey (a ValueError) says what is wrong
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> "HeraldSettings":
        if self.env == "production":
            for name, value in self:
                if isinstance(value, SecretStr) and value.get_secret_value().startswith(
                    PLACEHOLDER_PREFIX
                ):
                    raise ValueError(f"HERALD_{name.upper()} is a development placeholder")
            if any(key.startswith(PLACEHOLDER_PREFIX) for key in signing.written_keys(self.gateway_public_keys)):
                raise ValueError("HERALD_GATEWAY_PUBLIC_KEYS holds a development placeholder key")
        return self


class DatabaseSettings(BaseSettings):
    """Mixin for processes that use PostgreSQL."""

    model_config = CONFIG

    database_url: str = Field(description="PostgreSQL URL, `postgresql://user:password@host:5432/db`")
    db_pool_size: int = Field(10, description="connections each process keeps open")
    db_max_overflow: int = Field(10, description="extra connections a process may open under load")


class BusSettings(BaseSettings):
    """Mixin for processes that use NATS."""

    model_config = CONFIG

    nats_url: str = Field(description="NATS URL, or several comma-separated; credentials as `nats://user:password@host:4222`")


MIB = 1024**2


class StreamSettings(BaseSettings):
    """Retention of Herald's JetStream streams, applied by `herald migrate` on create and on update.

    Read by whoever creates the streams (`kernel.bus.ensure_streams`), not by the services, which
    only publish and consume. JetStream reserves each stream's `max_bytes` on disk up front: all
    six streams together (REJECTIONS reserves a fixed 16 MiB) must fit the server's JetStream storage, or
    creating them fails.
    """

    model_config = CONFIG

    stream_max_age_hours: float = Field(
        168.0, gt=0, description="how long EVENTS, PROFILES, SEGMENTS and SENDS keep a message (the replay horizon)"
    )
    stream_max_bytes: int = Field(
        256 * MIB, gt=0, description="most bytes each of those four streams keeps; the oldest messages go first (the k8s ConfigMap sets 2 GiB)"
    )
    dead_letter_max_age_hours: float = Field(
        720.0, gt=0, description="how long DEADLETTERS keeps a message a consumer gave up on"
    )
    dead_letter_max_bytes: int = Field(
        64 * MIB, gt=0, description="most bytes DEADLETTERS keeps; the oldest dead letters go first (the k8s ConfigMap sets 1 GiB)"
    )


class ConsumerSettings(BaseSettings):
    """Mixin for services that consume a durable JetStream consumer (defaults differ per service)."""

    model_config = CONFIG

    ack_wait_seconds: float = Field(
        10.0,
        gt=0,
        description="how long JetStream waits for an ack before redelivering after a crash; a batch still being "
        "handled renews it every third of it (in_progress), so it bounds recovery, not work; SIGTERM grace must exceed it",
    )
    consumer_batch: int = Field(128, description="messages fetched from JetStream per pull")
    consumer_concurrency: int = Field(8, description="fetched batches each process handles at once (the next is fetched meanwhile)")


_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")


class WebhookSettings(BaseSettings):
    """Mixin for processes that judge where a webhook may go: the scheduler when a campaign is saved, the dispatcher when it sends."""

    model_config = CONFIG

    webhook_allowed_hosts: str = Field(
        "",
        description="comma-separated host names, IP addresses and CIDR networks that webhooks may reach although they "
        "are not public (loopback, private, link-local, ...); every other such address is refused, when a campaign is "
        "saved (the scheduler) and when it sends (the dispatcher). Empty: public addresses only",
    )

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _entries(cls, value: str) -> str:
        """Each entry a host name, an IP address or a network; anything else is refused at start."""
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                if not _HOST_NAME.fullmatch(entry):
                    raise ValueError(f"{entry!r} is neither a host name, an IP address nor a CIDR network") from None
        return ",".join(entries)
