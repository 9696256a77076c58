"""Delivery-policy API shapes: the workspace's rules, and a campaign's delivery, variants and locales.

Each refusal is a 422 whose `loc` names the field: an unknown time zone, an empty window (no days, or
start equal to end), a control group of 100 %, variant weights that do not add up to 100 minus the
control group.
"""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from kernel.contracts import CHANNELS
from services.scheduler.delivery import domain

MAX_CAPS = 20
MAX_VARIANTS = 10
MAX_LOCALES = 100
Clock = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="local wall-clock time, HH:MM")]
LocaleKey = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,3}$", max_length=35)]
RESERVED_VARIANT_NAMES = (domain.CONTROL, domain.GLOBAL_CONTROL)


class CapIn(BaseModel):
    """At most `max` sends on `channel` per user in any `per_days` days ("any": all channels together)."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description='a channel (push, email, sms, webhook, in_app, content_card) or "any"')
    max: int = Field(ge=1, le=1000)
    per_days: int = Field(ge=1, le=90)

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str) -> str:
        if value not in (*CHANNELS, domain.ANY_CHANNEL):
            raise PydanticCustomError(
                "unknown_channel", "unknown channel {channel}: one of {known}, or any",
                {"channel": repr(value), "known": ", ".join(CHANNELS)},
            )
        return value


class DeliverySettingsIn(BaseModel):
    """A workspace's delivery rules: caps across campaigns and channels, the global control group, the time zone of
    users without one, and the attribute holding a user's quiet hours."""

    model_config = ConfigDict(extra="forbid")

    # Both required: a PUT replaces the rules whole, so it says what the caps and the holdout are ([] and 0: none).
    frequency_caps: list[CapIn] = Field(max_length=MAX_CAPS, description="[] for none")
    global_control_percent: int = Field(
        ge=0, le=99, description="users held out of every marketing send (buckets 0 to percent × 100 − 1); 0 for none"
    )
    default_time_zone: str = Field(default="UTC", max_length=64, description="an IANA time zone, for users without one")
    quiet_hours_attribute: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_$.-]+$",
        description='a trait (or attribute) holding the user\'s quiet hours: "22:00-07:00" or {"start", "end"}',
    )

    @field_validator("default_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if domain.zone_named(value) is None:
            raise PydanticCustomError(
                "unknown_time_zone", "unknown time zone {zone}: an IANA name such as Europe/Berlin", {"zone": repr(value)}
            )
        return value

    @field_validator("frequency_caps")
    @classmethod
    def _one_cap_per_rule(cls, caps: list[CapIn]) -> list[CapIn]:
        seen: set[tuple[str, int]] = set()
        for cap in caps:
            if (cap.channel, cap.per_days) in seen:
                raise PydanticCustomError(
                    "duplicate_cap", "two caps for {channel} per {days} days: keep one", {"channel": cap.channel, "days": cap.per_days}
                )
            seen.add((cap.channel, cap.per_days))
        return caps


class DeliverySettingsOut(DeliverySettingsIn):
    updated_at: datetime | None = None


class WindowIn(BaseModel):
    """When a campaign's sends may go out, in each user's time zone: from `start` to `end` (an `end` before `start`
    closes the next morning) on `days`; `outside` it, a send waits for the next opening or is dropped."""

    model_config = ConfigDict(extra="forbid")

    start: Clock
    end: Clock
    days: list[domain.Weekday] = Field(default_factory=lambda: list(domain.DAYS), max_length=7)
    outside: domain.Outside = "wait"

    @model_validator(mode="after")
    def _not_empty(self) -> "WindowIn":
        if self.start == self.end:
            raise PydanticCustomError("empty_window", "start and end are equal: the window would never open", {})
        if not self.days:
            raise PydanticCustomError("empty_window", "a window needs at least one day", {})
        if len(set(self.days)) != len(self.days):
            raise PydanticCustomError("days_repeated", "each day at most once", {})
        return self


class DeliveryIn(BaseModel):
    """How a campaign's sends are paced: a delivery window in each user's time zone and a rate per minute."""

    model_config = ConfigDict(extra="forbid")

    window: WindowIn | None = None
    rate_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="at most this many sends a minute; the rest wait (never dropped)"
    )
    intelligent_timing: bool | None = Field(  # None (not given) keeps the stored delivery as it was written
        default=None, description="send each user's message at their best local hour within 24 h (docs/experiments.md)"
    )


class VariantIn(BaseModel):
    """One arm of an experiment: its share of users (percent) and its message (and its translations)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 _.-]+$")
    weight: int = Field(ge=1, le=100, description="percent of the campaign's users")
    message: dict[str, Any]
    locales: dict[LocaleKey, dict[str, Any]] | None = Field(default=None, max_length=MAX_LOCALES)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_VARIANT_NAMES:
            raise PydanticCustomError("reserved_name", "{name} is reserved for held-out users", {"name": value})
        return value


def experiment_problems(variants: list[VariantIn] | None, control_percent: int) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Weights and control add up to exactly 100 (percent of the campaign's users); names are unique."""
    if not variants:
        return []
    found: list[tuple[tuple[str | int, ...], str, str]] = []
    names = [v.name for v in variants]
    for index, name in enumerate(names):
        if name in names[:index]:
            found.append((("variants", index, "name"), "duplicate_variant", f"two variants are named {name!r}"))
    total = sum(v.weight for v in variants)
    if total + control_percent != 100:
        found.append((
            ("variants",), "weights_sum",
            f"the variants' weights add up to {total}; with control_percent {control_percent} they must add up to "
            f"{100 - control_percent} (weights + control = 100)",
        ))
    return found
