"""Profiles API shapes."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class Computed(BaseModel):
    first_seen: datetime
    last_seen: datetime
    event_counts: dict[str, int]


class UserProfile(BaseModel):
    user_id: str | None
    profile_id: str
    anonymous_ids: list[str]
    aliases: list[str]
    traits: dict[str, Any]
    computed: Computed


class TimelineEvent(BaseModel):
    message_id: str
    type: str
    name: str
    properties: dict[str, Any]
    traits: dict[str, Any]
    timestamp: datetime
    received_at: datetime


class Timeline(BaseModel):
    user_id: str | None
    events: list[TimelineEvent]
