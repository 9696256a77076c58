"""Segmenter API shapes. Every input refuses a field it does not know (a typo is a 422 naming it)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kernel.limits import refuse_nul

# The `segments.name` column is varchar(200); PostgreSQL text cannot hold NUL.
MAX_NAME_LENGTH = 200
MAX_PREVIEW = 100
FILTER_DESCRIPTION = "a tree of all / any / not over trait and event conditions"


def _storable_name(name: str | None) -> str | None:
    """Refuse what PostgreSQL cannot store, as a 422 instead of a database error."""
    return name if name is None else refuse_nul(name, "a segment name")


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    filter: dict[str, Any] = Field(description=FILTER_DESCRIPTION)

    _name_storable = field_validator("name")(_storable_name)


class SegmentPatch(BaseModel):
    """What to change: a field left out stays as it is; a new filter stores the members again."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DESCRIPTION)

    _name_storable = field_validator("name")(_storable_name)


class SegmentOut(BaseModel):
    id: str
    name: str
    filter: dict[str, Any]
    size: int
    status: Literal["computing", "ready"] = Field(
        description="`computing` while a new segment's members are stored in the background; entered / exited events begin when `ready`"
    )
    created_at: datetime
    updated_at: datetime | None = None
    archived_at: datetime | None = Field(
        default=None, description="when it was archived (null: live); an archived segment matches nobody"
    )


class SegmentList(BaseModel):
    segments: list[SegmentOut]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null on the last page")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: dict[str, Any] = Field(description=FILTER_DESCRIPTION)
    limit: int = Field(default=10, ge=1, le=MAX_PREVIEW, description="how many user ids to list")


class Reach(BaseModel):
    """How many profiles match now, and how many of them each channel can reach."""

    size: int = Field(description="profiles matching now (anonymous ones included)")
    email: int = Field(
        description="of them, those with an `email` trait that looks like an address (name@domain.tld) who have not "
        "unsubscribed from email (docs/subscriptions.md)"
    )
    push: int = Field(
        description="of them, those with at least one push-enabled device with a token who have not unsubscribed from push"
    )


class Preview(BaseModel):
    user_ids: list[str] = Field(
        description="the first matching users by user id (code point order); anonymous profiles have none to list"
    )
    count: int = Field(description="how many profiles match now (anonymous ones included)")
    reach: Reach


class SegmentReach(Reach):
    segment_id: str


class UserSegment(BaseModel):
    segment_id: str
    name: str
    entered_at: datetime | None = Field(
        description="when the user was stored as a member; null while that is pending (the segment is computing)"
    )


class UserSegments(BaseModel):
    user_id: str
    segments: list[UserSegment]
