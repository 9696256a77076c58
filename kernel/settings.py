"""Typed settings shared by every process; each service's config.py extends them."""

from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_PREFIX = "dev-"
# Every settings class carries the same config: pydantic merges it from all bases, last wins.
CONFIG = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")


class HeraldSettings(BaseSettings):
    """Settings every Herald process reads, from `HERALD_*` environment variables."""

    model_config = CONFIG

    env: Literal["development", "test", "production"] = "development"
    log_format: Literal["console", "json"] = "json"
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    # Shared secret that proves a request came through the gateway; no default anywhere.
    internal_token: SecretStr

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> "HeraldSettings":
        if self.env == "production":
            for name, value in self:
                if isinstance(value, SecretStr) and value.get_secret_value().startswith(
                    PLACEHOLDER_PREFIX
                ):
                    raise ValueError(f"HERALD_{name.upper()} is a development placeholder")
        return self


class DatabaseSettings(BaseSettings):
    """Mixin for processes that use PostgreSQL."""

    model_config = CONFIG

    database_url: str
    db_pool_size: int = 10
    db_max_overflow: int = 10


class BusSettings(BaseSettings):
    """Mixin for processes that use NATS."""

    model_config = CONFIG

    nats_url: str
    # How long JetStream waits for an ack before redelivering; SIGTERM grace must exceed it.
    ack_wait_seconds: float = 30.0
