"""Profiles API shapes."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel

from kernel import limits

# A stored document as every reader can read it: rows written before ingest enforced the input limits
# may hold numbers orjson cannot write (a trait of 1e20 reads back from jsonb as a 21-digit integer);
# those are shown as text, the way ingest now stores them, instead of failing the whole response.
Document = Annotated[dict[str, Any], AfterValidator(limits.readable)]


class Computed(BaseModel):
    first_seen: datetime
    last_seen: datetime
    event_counts: dict[str, int]


class UserProfile(BaseModel):
    user_id: str | None
    profile_id: str
    anonymous_ids: list[str]
    aliases: list[str]
    traits: Document
    attributes: Document  # the standard ones: language, time_zone, country, city, location, app, OS, device model
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
