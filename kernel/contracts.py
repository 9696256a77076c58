"""Everything that travels on the bus: streams, subjects and the pydantic models of each message.

This module is the one contract between producers and consumers. Subjects carry the workspace id
so that one workspace can be replayed, filtered or moved on its own.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- streams and subjects -------------------------------------------------------------------

STREAMS: dict[str, list[str]] = {
    "EVENTS": ["events.>"],
    "PROFILES": ["profiles.>"],
    "SEGMENTS": ["segments.>"],
    "SENDS": ["sends.>"],
}

# Durable consumers, one per consuming service: (stream, durable name, filter subject).
CONSUMERS: dict[str, tuple[str, str, str]] = {
    "profiles": ("EVENTS", "profiles", "events.>"),
    "segmenter": ("PROFILES", "segmenter", "profiles.changed.>"),
    "scheduler": ("PROFILES", "scheduler", "profiles.events.>"),
    "dispatcher": ("SENDS", "dispatcher", "sends.requested.>"),
}

EventType = Literal["identify", "track", "page", "screen", "group", "alias"]
Channel = Literal["email", "webhook"]


def event_subject(workspace_id: str, event_type: str) -> str:
    return f"events.{workspace_id}.{event_type}"


def profile_changed_subject(workspace_id: str) -> str:
    return f"profiles.changed.{workspace_id}"


def profile_event_subject(workspace_id: str) -> str:
    return f"profiles.events.{workspace_id}"


def membership_subject(workspace_id: str) -> str:
    return f"segments.membership.{workspace_id}"


def send_subject(workspace_id: str, channel: str) -> str:
    return f"sends.requested.{workspace_id}.{channel}"


def workspace_subjects(stream: str, workspace_id: str) -> str:
    """The filter matching one workspace's messages in a stream (for replays and inspection)."""
    if not workspace_id or any(c in workspace_id for c in ".*> "):
        raise ValueError(f"not a workspace id: {workspace_id!r}")
    filters = {
        "EVENTS": event_subject(workspace_id, ">"),
        "PROFILES": f"profiles.*.{workspace_id}",  # profile_changed_subject and profile_event_subject
        "SEGMENTS": membership_subject(workspace_id),
        "SENDS": send_subject(workspace_id, ">"),
    }
    if stream not in filters:
        raise ValueError(f"unknown stream {stream!r}; one of: {', '.join(filters)}")
    return filters[stream]


# Request/reply subjects (core NATS, outside every stream).
PROFILE_QUERY_SUBJECT = "rpc.profiles.get"
AUDIENCE_QUERY_SUBJECT = "rpc.segmenter.check"


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- EVENTS ---------------------------------------------------------------------------------


class Event(Contract):
    """One accepted Segment-spec call, validated and enriched by ingest (or emitted by Herald)."""

    workspace_id: str
    message_id: str
    type: EventType
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime

    @property
    def display_name(self) -> str:
        """The name an event is counted and triggered under: track's event, page/screen name."""
        if self.type == "track":
            return self.event or ""
        if self.type in ("page", "screen"):
            return f"{self.type}:{self.name}" if self.name else self.type
        return self.type


# --- PROFILES -------------------------------------------------------------------------------


class ProfileChanged(Contract):
    """A profile's traits, identities or behaviour changed; consumers re-read what they need."""

    workspace_id: str
    profile_id: str
    user_id: str | None = None
    cause_message_id: str
    changed_traits: list[str] = Field(default_factory=list)
    merged_profile_ids: list[str] = Field(default_factory=list)


class ResolvedEvent(Contract):
    """An event attributed to its canonical profile."""

    workspace_id: str
    profile_id: str
    user_id: str | None = None
    event: Event


# --- SEGMENTS -------------------------------------------------------------------------------


class MembershipChanged(Contract):
    workspace_id: str
    segment_id: str
    profile_id: str
    user_id: str | None = None
    change: Literal["entered", "exited"]
    at: datetime
    cause_message_id: str


# --- SENDS ----------------------------------------------------------------------------------


class TriggerEvent(Contract):
    """What a template may read of the event that triggered a send."""

    message_id: str
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime
    correlation_id: str | None = None  # of the request that triggered it, for logs across services


class SendRequested(Contract):
    send_id: str
    workspace_id: str
    campaign_id: str
    channel: Channel
    profile_id: str
    user_id: str | None = None
    message: dict[str, Any]
    trigger: TriggerEvent | None = None
    requested_at: datetime


# --- request / reply ------------------------------------------------------------------------


class ProfileQuery(Contract):
    workspace_id: str
    profile_id: str


class ProfileSnapshot(Contract):
    profile_id: str
    user_id: str | None = None
    traits: dict[str, Any] = Field(default_factory=dict)
    found: bool = True


class AudienceQuery(Contract):
    workspace_id: str
    segment_id: str
    profile_id: str


class AudienceAnswer(Contract):
    member: bool
    found: bool = True
