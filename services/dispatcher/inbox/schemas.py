"""Inbox API shapes: a user's feed as an app fetches it, and an app's report of what the user did with a message."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_IDENTITY = 512  # a user id or anonymous id, as the profiles service keeps them
FEED_LIMIT_DEFAULT = 20
FEED_LIMIT_MAX = 100
_UNSTORABLE = ("\x00",)


def identity_problem(value: str | None) -> str | None:
    """Why a user id or anonymous id cannot name anyone (empty, NUL, a lone surrogate), or None."""
    if value is None:
        return None
    if not value:
        return "is empty"
    if any(c in value for c in _UNSTORABLE) or any("\ud800" <= c <= "\udfff" for c in value):
        return "holds NUL or a lone surrogate, which no stored id has"
    return None


Identity = Annotated[str, Field(max_length=MAX_IDENTITY)]
EventKind = Literal["impression", "click", "dismissal"]
FeedChannel = Literal["in_app", "content_card"]
FeedLimit = Annotated[int, Field(ge=1, le=FEED_LIMIT_MAX)]


class InAppButtonShown(BaseModel):
    text: str
    deep_link: str | None = None
    url: str | None = None
    action: Literal["open", "close", "request_push_permission"]


class InAppShown(BaseModel):
    """An in-app message as the app shows it (rendered for the user)."""

    layout: Literal["modal", "slide_up", "full_screen"]
    header: str | None = None
    body: str | None = None
    image_url: str | None = None
    deep_link: str | None = None
    buttons: list[InAppButtonShown] = Field(default_factory=list)


class ContentCardShown(BaseModel):
    """A content card as the app shows it (rendered for the user)."""

    title: str | None = None
    body: str | None = None
    image_url: str | None = None
    link: str | None = None
    link_text: str | None = None


class InboxMessageOut(BaseModel):
    id: str = Field(description="the message's id, for reporting what the user did with it")
    type: FeedChannel
    campaign_id: str
    variant: str | None = None
    pinned: bool
    sent_at: datetime
    expires_at: datetime
    viewed: bool = Field(description="an impression was reported")
    clicked: bool = Field(description="a click was reported")
    content: InAppShown | ContentCardShown


class InboxFeed(BaseModel):
    messages: list[InboxMessageOut] = Field(description="pinned first, then newest first")


class InboxEventIn(BaseModel):
    """What the user did with a message: saw it, clicked it (or one of its buttons), or dismissed it."""

    model_config = ConfigDict(extra="forbid")

    type: EventKind
    userId: Identity | None = None  # noqa: N815 (Segment's spelling, as the SDK calls send it)
    anonymousId: Identity | None = None  # noqa: N815
    button: int | None = Field(default=None, ge=0, le=1, description="a click's button (0 or 1), when it was one")

    @field_validator("userId", "anonymousId")
    @classmethod
    def _nameable(cls, value: str | None) -> str | None:
        if (problem := identity_problem(value)) is not None:
            raise ValueError(f"an id that {problem} names no user")
        return value

    @model_validator(mode="after")
    def _someone(self) -> "InboxEventIn":
        if self.userId is None and self.anonymousId is None:
            raise ValueError("give the user: `userId` or `anonymousId`")
        return self


class InboxEventOut(BaseModel):
    success: bool = True
    recorded: bool = Field(description="false when the same report was already recorded (nothing changed)")
