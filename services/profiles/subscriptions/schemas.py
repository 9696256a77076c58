"""Subscription and consent API shapes. Every input refuses a field it does not know (a typo is a 422 naming it)."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from kernel import limits
from kernel.contracts import SubscriptionChannel, SubscriptionEntry, SubscriptionState
from services.profiles.subscriptions.domain import MAX_GROUPS_PER_CALL, ConsentStatus

GroupState = Literal["subscribed", "unsubscribed"]
# Sources and purposes are short codes (they travel in event properties and are compared as they are).
Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Purpose = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
GroupId = Annotated[str, StringConstraints(min_length=4, max_length=64, pattern=r"^sg_[A-Za-z0-9_-]+$")]


def _instant(value: datetime | None) -> datetime | None:
    """A time in UTC (UTC when it names no zone), within the span every stored time keeps."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not limits.EARLIEST <= value < limits.LATEST:
        raise ValueError(f"must be between {limits.EARLIEST.date()} and {limits.LATEST.date()}")
    return value


def _text(value: str | None) -> str | None:
    return value if value is None else limits.refuse_nul(value, "the text")


Instant = Annotated[datetime | None, AfterValidator(_instant)]
Text = Annotated[str, AfterValidator(_text)]


class _Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: Instant = Field(default=None, description="when the user chose this (ISO 8601; default: now); the newest wins")
    source: Code = Field(default="api", description="where the choice was made, e.g. api, form, import")


class ChannelChange(_Change):
    state: SubscriptionState


class GroupChange(_Change):
    state: GroupState


class SubscriptionsIn(BaseModel):
    """What to set: channels and groups left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    email: ChannelChange | None = None
    push: ChannelChange | None = None
    sms: ChannelChange | None = None
    groups: dict[GroupId, GroupChange] = Field(
        default_factory=dict, max_length=MAX_GROUPS_PER_CALL, description="subscription group id -> its new state"
    )


class SubscriptionsOut(BaseModel):
    """A user's subscription states (null: never set; an unset channel is sendable, as `subscribed`)."""

    email: SubscriptionEntry | None
    push: SubscriptionEntry | None
    sms: SubscriptionEntry | None
    groups: dict[str, SubscriptionEntry]


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: SubscriptionChannel
    name: Annotated[Text, StringConstraints(min_length=1, max_length=256)]
    description: Annotated[Text, StringConstraints(max_length=2048)] | None = None


class GroupPatch(BaseModel):
    """What to change: a field left out stays as it is (the channel never changes)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[Text, StringConstraints(min_length=1, max_length=256)] | None = None
    description: Annotated[Text, StringConstraints(max_length=2048)] | None = None


class GroupOut(BaseModel):
    id: str
    channel: SubscriptionChannel
    name: str
    description: str | None
    subscribed: int = Field(description="users subscribed to it now")
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = Field(description="when it was archived (null: live); an archived group takes no new subscribers")


class GroupList(BaseModel):
    groups: list[GroupOut]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null on the last page")


class GroupRemoved(BaseModel):
    id: str
    deleted: bool = Field(description="true: it never had members and is gone")
    archived: bool = Field(description="true: it had members, so it is archived instead (their states are kept)")


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: Purpose = Field(description="what the consent is for, e.g. marketing_email, analytics")
    status: ConsentStatus
    policy_version: Annotated[Text, StringConstraints(min_length=1, max_length=64)]
    source: Code = "api"
    at: Instant = Field(default=None, description="when the user gave or withdrew it (ISO 8601; default: now)")


class ConsentOut(BaseModel):
    id: str
    purpose: str
    status: ConsentStatus
    policy_version: str
    source: str
    at: datetime
    recorded_at: datetime


class ConsentRecorded(ConsentOut):
    created: bool = Field(description="false: the same record was already held (a replay); nothing changed")
    in_force: bool = Field(description="whether it is the record that decides its purpose now (the newest)")


class Consents(BaseModel):
    in_force: dict[str, ConsentOut] = Field(description="purpose -> the record that decides it (the newest)")
    history: list[ConsentOut] = Field(description="every record, newest first")
