"""Profiles API shapes."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kernel import limits
from kernel.contracts import SubscriptionsSnapshot

# A stored document as every reader can read it: rows written before ingest enforced the input limits
# may hold numbers orjson cannot write (a trait of 1e20 reads back from jsonb as a 21-digit integer);
# those are shown as text, the way ingest now stores them, instead of failing the whole response.
Document = Annotated[dict[str, Any], AfterValidator(limits.readable)]


class SessionsOut(BaseModel):
    count: int
    first: datetime | None
    last: datetime | None  # when the newest session began
    hour_of_week: list[list[int]]  # session starts: 7 rows (Monday first) of 24 hours, in the user's time zone


class PurchasesOut(BaseModel):
    count: int
    revenue: float  # lifetime, in `currency` (the workspace's)
    currency: str
    first: datetime | None
    last: datetime | None


class Computed(BaseModel):
    first_seen: datetime
    last_seen: datetime
    event_counts: dict[str, int]
    sessions: SessionsOut
    purchases: PurchasesOut


class DeviceOut(BaseModel):
    device_id: str
    platform: str | None
    app: str | None
    app_version: str | None
    os_version: str | None
    model: str | None
    locale: str | None
    time_zone: str | None
    push_token: str | None
    push_enabled: bool
    last_seen: datetime


class UserProfile(BaseModel):
    user_id: str | None
    profile_id: str
    anonymous_ids: list[str]
    aliases: list[str]
    traits: Document
    attributes: Document  # the standard ones: language, time_zone, country, city, location, app, OS, device model
    devices: list[DeviceOut]
    subscriptions: SubscriptionsSnapshot  # per channel and group: state, at, source (docs/subscriptions.md)
    computed: Computed


class TimelineEvent(BaseModel):
    message_id: str
    type: str
    name: str
    properties: Document
    traits: Document
    timestamp: datetime
    received_at: datetime


class Timeline(BaseModel):
    user_id: str | None
    events: list[TimelineEvent]


def _storable_text(text: str) -> str:
    """Text PostgreSQL can store (no NUL, no lone surrogate), or a 422 naming the field."""
    return limits.refuse_nul(text, "the value")


Text = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_storable_text)]


class DeviceRegistration(BaseModel):
    """A device an app or a back end registers for a user, usually to give its push token."""

    model_config = ConfigDict(extra="forbid")

    device_id: Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_storable_text)]
    platform: Literal["ios", "android", "web"]
    push_token: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_storable_text)] | None = None
    app: Text | None = None
    app_version: Text | None = None
    os_version: Text | None = None
    model: Text | None = None
    locale: Text | None = None
    time_zone: Text | None = None


class TokenDeactivation(BaseModel):
    """A push token a provider said is dead (unregistered, expired, for another app)."""

    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_storable_text)]


class Deactivated(BaseModel):
    deactivated: bool
    profile_id: str | None = None
    device_id: str | None = None


class UserSummary(BaseModel):
    """A user as a list shows them; `GET /api/v1/users/{user_id}` has the whole profile."""

    user_id: str | None
    profile_id: str
    email: str | None = Field(description="the `email` trait, when it is text")
    anonymous_ids: list[str]
    first_seen: datetime
    last_seen: datetime
    created_at: datetime


class UserList(BaseModel):
    users: list[UserSummary]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null on the last page")
