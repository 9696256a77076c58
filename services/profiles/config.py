"""Profiles settings."""

from datetime import timedelta
from decimal import Decimal
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

    workspace_currency: str = Field(
        "USD", pattern=r"^[A-Z]{3}$", description="the ISO 4217 currency profiles sum purchases' revenue in"
    )
    currency_rates: dict[str, Decimal] = Field(
        {},  # pydantic copies it for each instance
        description='JSON: units of the workspace currency one unit of each other currency is worth, e.g. '
        '`{"EUR": 1.08, "GBP": 1.27}`; a purchase in a currency not listed counts without its amount',
    )

    def rules(self) -> Rules:
        """What the event path needs of these settings."""
        return Rules(
            session_gap=timedelta(minutes=self.session_timeout_minutes),
            currency=self.workspace_currency,
            rates={code.upper(): rate for code, rate in self.currency_rates.items()},
        )


@lru_cache
def get_settings() -> ProfilesSettings:
    return ProfilesSettings()
