"""Everything that travels on the bus: streams, subjects and the pydantic models of each message.

This module is the one contract between producers and consumers. Subjects carry the workspace id
so that one workspace can be replayed, filtered or moved on its own.
"""

import hashlib
import math
import re
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from kernel.limits import MAX_SAFE_INTEGER, refuse_nul

# --- streams and subjects -------------------------------------------------------------------

STREAMS: dict[str, list[str]] = {
    "EVENTS": ["events.>"],
    "PROFILES": ["profiles.>"],
    "SEGMENTS": ["segments.>"],
    "SENDS": ["sends.>"],
    # Messages a consumer gave up on (permanent failure, or max deliveries reached), kept for
    # inspection and re-driven with `herald replay --dead-letters`.
    "DEADLETTERS": ["dead.>"],
    # Calls ingest dropped and why, the newest REJECTIONS_KEPT per workspace, for the developer
    # integrating an SDK (GET /api/v1/ingest/rejections). Diagnostics: nothing consumes them.
    "REJECTIONS": ["rejections.>"],
}

# How many rejected calls REJECTIONS keeps per workspace (the oldest go first).
REJECTIONS_KEPT = 200

# Durable consumers, one per consuming service: (stream, durable name, filter subject).
CONSUMERS: dict[str, tuple[str, str, str]] = {
    "profiles": ("EVENTS", "profiles", "events.>"),
    "segmenter": ("PROFILES", "segmenter", "profiles.changed.>"),
    "scheduler": ("PROFILES", "scheduler", "profiles.events.>"),
    "dispatcher": ("SENDS", "dispatcher", "sends.requested.>"),
}

EventType = Literal["identify", "track", "page", "screen", "group", "alias"]
Channel = Literal["email", "webhook"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)

# A send decision in the scheduler: scheduled → requested (handed to the dispatcher), or stopped.
SendStatus = Literal["scheduled", "requested", "cancelled", "not_in_audience"]
# A delivery in the dispatcher: new → sending → sent | failed | skipped | unknown, or
# sending → retrying → sending again (durably, at `next_attempt_at`) until a final answer.
DeliveryStatus = Literal["new", "sending", "retrying", "sent", "failed", "skipped", "unknown"]
FINAL_DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = ("sent", "failed", "skipped", "unknown")


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


def rejection_subject(workspace_id: str) -> str:
    return f"rejections.{workspace_id}"


def dead_letter_subject(workspace_id: str | None, consumer: str) -> str:
    """Where a consumer files a message it gave up on; `_` when the workspace is unknown (unparseable)."""
    return f"dead.{workspace_id or '_'}.{consumer}"


# Headers a dead letter carries: where it came from and why it was given up.
DEAD_SUBJECT_HEADER = "Herald-Dead-Subject"
DEAD_CONSUMER_HEADER = "Herald-Dead-Consumer"
DEAD_SEQUENCE_HEADER = "Herald-Dead-Sequence"
DEAD_REASON_HEADER = "Herald-Dead-Reason"


def workspace_subjects(stream: str, workspace_id: str) -> str:
    """The filter matching one workspace's messages in a stream (for replays and inspection)."""
    if not workspace_id or any(c in workspace_id for c in ".*> "):
        raise ValueError(f"not a workspace id: {workspace_id!r}")
    filters = {
        "EVENTS": event_subject(workspace_id, ">"),
        "PROFILES": f"profiles.*.{workspace_id}",  # profile_changed_subject and profile_event_subject
        "SEGMENTS": membership_subject(workspace_id),
        "SENDS": send_subject(workspace_id, ">"),
        "DEADLETTERS": f"dead.{workspace_id}.>",
        "REJECTIONS": rejection_subject(workspace_id),
    }
    if stream not in filters:
        raise ValueError(f"unknown stream {stream!r}; one of: {', '.join(filters)}")
    return filters[stream]


# Request/reply subjects (core NATS, outside every stream).
PROFILE_QUERY_SUBJECT = "rpc.profiles.get"
AUDIENCE_QUERY_SUBJECT = "rpc.segmenter.check"


_HEADER_SAFE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,200}")


def header_safe(value: str) -> str:
    """An id part that travels unchanged in a NATS header (`Nats-Msg-Id`): the value itself when it is
    plain, else a digest of it. Clients choose messageIds; NATS rewrites CR, LF and other bytes in
    header values, so `"a\nb"` and `"a b"` would otherwise share a de-duplication id and the second
    event, already answered 200, would be dropped as a duplicate."""
    if _HEADER_SAFE.fullmatch(value):
        return value
    return "sha256-" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Published(Protocol):
    """A message published to a stream: it knows its subject and its de-duplication id.

    The id is deterministic (`Nats-Msg-Id`): publishing the same fact twice, from a retry or a
    redelivery, stores it once within the stream's window, and consumers are idempotent beyond it.
    Event, ResolvedEvent, ProfileChanged, MembershipChanged and SendRequested are Published.
    """

    @property
    def subject(self) -> str: ...

    @property
    def dedupe_id(self) -> str: ...

    def model_dump_json(self) -> str: ...


# --- the property-condition grammar -----------------------------------------------------------

ConditionOp = Literal["eq", "neq", "gt", "gte", "lt", "lte", "exists", "not_exists", "contains", "in"]
CONDITION_OPS: tuple[ConditionOp, ...] = get_args(ConditionOp)
ORDERED_OPS = ("gt", "gte", "lt", "lte")

# Limits of one condition. The segmenter compiles each `in` value to its own comparison, evaluated on
# every profile change (about 0.25 ms to compile and 2 KB held per value, measured), and the scheduler
# evaluates conditions on every event: a list is a hand-written set (countries of a region, US states,
# plan tiers), never an imported user list. Strings fit a long URL; names fit the longest event name
# ingest accepts. Numbers stay where every reader of the JSON (JavaScript's JSON.parse included) sees the
# same value; PostgreSQL text and jsonb cannot hold NUL.
CONDITION_MAX_IN_VALUES = 100
CONDITION_MAX_STRING_LENGTH = 2048
CONDITION_MAX_NAME_LENGTH = 512
CONDITION_MAX_NUMBER = MAX_SAFE_INTEGER  # the same bound every stored number keeps (kernel/limits.py)
CONDITION_MAX_VALUE_DEPTH = 5  # arrays and objects nested in one value, an `in` list counting as one
CONDITION_MAX_VALUE_ITEMS = 1000  # strings, numbers, booleans, nulls, arrays and objects in one value


def _check_condition_string(text: str) -> None:
    """Raise ValueError if a string in a condition is too long or holds NUL."""
    if len(text) > CONDITION_MAX_STRING_LENGTH:
        raise ValueError(f"a string is at most {CONDITION_MAX_STRING_LENGTH} characters (got {len(text)})")
    refuse_nul(text, "a string")


def _check_condition_value(value: Any) -> None:
    """Raise ValueError naming the first limit a condition's value passes."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    items = 0
    while pending:
        current, depth = pending.pop()
        items += 1
        if items > CONDITION_MAX_VALUE_ITEMS:
            raise ValueError(f"a value holds at most {CONDITION_MAX_VALUE_ITEMS} items")
        if isinstance(current, str):
            _check_condition_string(current)
        elif current is None or isinstance(current, bool):
            continue
        elif isinstance(current, (int, float)):
            if isinstance(current, float) and not math.isfinite(current):
                raise ValueError("a number must be finite (not NaN or Infinity)")
            if abs(current) > CONDITION_MAX_NUMBER:
                raise ValueError("a number must be between -(2^53 - 1) and 2^53 - 1")
        elif isinstance(current, (list, dict)):
            if depth >= CONDITION_MAX_VALUE_DEPTH:
                raise ValueError(f"a value nests at most {CONDITION_MAX_VALUE_DEPTH} levels of arrays and objects")
            if isinstance(current, dict):
                for key in current:
                    _check_condition_string(str(key))
            children = current.values() if isinstance(current, dict) else current
            pending.extend((child, depth + 1) for child in children)
        else:
            raise ValueError("a value is JSON: a string, number, boolean, null, array or object")


class PropertyCondition(Contract):
    """One comparison on a document (event properties or traits), the same in segments and campaigns.

    A condition on a missing value is false; `gt`/`gte`/`lt`/`lte` compare numbers with numbers and
    strings with strings; `contains` is a case-insensitive substring on strings and membership on
    arrays; `in` takes a non-empty list. The segmenter compiles it to SQL, the scheduler evaluates it
    in Python; both read it from here. Within the `CONDITION_MAX_*` limits above.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    property: str = Field(min_length=1, max_length=CONDITION_MAX_NAME_LENGTH)
    op: ConditionOp
    value: Any = None

    @field_validator("property")
    @classmethod
    def _property_storable(cls, name: str) -> str:
        return refuse_nul(name, "a name")

    @model_validator(mode="before")
    @classmethod
    def _value_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("op") not in ("exists", "not_exists", None) and "value" not in data:
            raise ValueError(f"`{data.get('op')}` needs a value")
        return data

    @model_validator(mode="after")
    def _value_fits(self) -> "PropertyCondition":
        value = self.value
        if self.op == "in" and isinstance(value, list) and len(value) > CONDITION_MAX_IN_VALUES:
            raise ValueError(f"`in` takes at most {CONDITION_MAX_IN_VALUES} values (got {len(value)})")
        _check_condition_value(value)  # even where the operator ignores it: a stored condition keeps its value
        if self.op in ("exists", "not_exists"):
            return self
        if self.op == "in" and (not isinstance(value, list) or not value):
            raise ValueError("`in` needs a non-empty list")
        if self.op in ORDERED_OPS and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
            raise ValueError(f"`{self.op}` compares a number or a string")
        if self.op == "contains" and not isinstance(value, (str, int, float, bool)):
            raise ValueError("`contains` takes a string or a scalar")
        if self.op in ("eq", "neq") and value is None:
            raise ValueError(f"`{self.op}` needs a value; use `not_exists` / `exists` for a missing value")
        return self


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
    def subject(self) -> str:
        return event_subject(self.workspace_id, self.type)

    @property
    def dedupe_id(self) -> str:
        return f"{self.workspace_id}:{header_safe(self.message_id)}"

    @property
    def display_name(self) -> str:
        """The name an event is counted and triggered under: track's event, page/screen name."""
        if self.type == "track":
            return self.event or ""
        if self.type in ("page", "screen"):
            return f"{self.type}:{self.name}" if self.name else self.type
        return self.type


class Rejection(Contract):
    """A call ingest dropped, with why: a malformed call inside an otherwise good batch, or a refused single call."""

    workspace_id: str
    rejection_id: str
    at: datetime
    route: str  # the SDK route it came in on: "batch", "track", …
    index: int | None = None  # its position in the batch
    type: str | None = None
    message_id: str | None = None
    event: str | None = None
    reason: str  # a stable code: invalid_call, call_too_large, not_an_object, …
    errors: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def subject(self) -> str:
        return rejection_subject(self.workspace_id)

    @property
    def dedupe_id(self) -> str:
        return f"{self.workspace_id}:rejection:{self.rejection_id}"


# --- PROFILES -------------------------------------------------------------------------------


class ProfileChanged(Contract):
    """A profile's traits, identities or behaviour changed; consumers re-read what they need."""

    workspace_id: str
    profile_id: str
    user_id: str | None = None
    cause_message_id: str
    changed_traits: list[str] = Field(default_factory=list)
    merged_profile_ids: list[str] = Field(default_factory=list)
    # What the cause was, so that a consumer can skip what it cannot affect: the event's display name,
    # and whether it made the profile. None: not known (a re-announcement): assume it may affect anything.
    event_name: str | None = None
    created: bool = False

    @property
    def subject(self) -> str:
        return profile_changed_subject(self.workspace_id)

    @property
    def dedupe_id(self) -> str:
        return f"{self.workspace_id}:changed:{header_safe(self.cause_message_id)}"


class ResolvedEvent(Contract):
    """An event attributed to its canonical profile."""

    workspace_id: str
    profile_id: str
    user_id: str | None = None
    event: Event

    @property
    def subject(self) -> str:
        return profile_event_subject(self.workspace_id)

    @property
    def dedupe_id(self) -> str:
        return f"{self.workspace_id}:event:{header_safe(self.event.message_id)}"


# --- SEGMENTS -------------------------------------------------------------------------------


class MembershipChanged(Contract):
    """A profile entered or exited a segment, because of the message `cause_message_id`."""

    workspace_id: str
    segment_id: str
    profile_id: str
    user_id: str | None = None
    change: Literal["entered", "exited"]
    at: datetime
    cause_message_id: str

    @property
    def subject(self) -> str:
        return membership_subject(self.workspace_id)

    @property
    def dedupe_id(self) -> str:
        return f"{self.workspace_id}:{self.segment_id}:{self.profile_id}:{self.change}:{header_safe(self.cause_message_id)}"


# --- SENDS ----------------------------------------------------------------------------------


class TriggerEvent(Contract):
    """What a template may read of the event that triggered a send."""

    message_id: str
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime
    correlation_id: str | None = None  # of the request that triggered it, for logs across services


class EmailContent(Contract):
    """An email campaign's message: Liquid templates for the subject and the plain-text body."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    subject: str = Field(min_length=1)
    body: str = Field(min_length=1)
    from_address: str | None = Field(default=None, alias="from", description="From: header; the workspace default if unset")


class WebhookContent(Contract):
    """A webhook campaign's request: an object body has its strings rendered; a string body must render to JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | str | None = None


MessageContent = EmailContent | WebhookContent
CONTENT_BY_CHANNEL: dict[Channel, type[EmailContent] | type[WebhookContent]] = {
    "email": EmailContent,
    "webhook": WebhookContent,
}


class SendRequested(Contract):
    """A decision to message one profile now, for the dispatcher; `send_id` is unique in the delivery log."""

    send_id: str
    workspace_id: str
    campaign_id: str
    channel: Channel
    profile_id: str
    user_id: str | None = None
    message: MessageContent
    trigger: TriggerEvent | None = None
    requested_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _content_of_its_channel(cls, data: Any) -> Any:
        # The content's shape follows the channel: parse it as that shape, never by guessing.
        if isinstance(data, dict) and isinstance(data.get("message"), dict) and data.get("channel") in CONTENT_BY_CHANNEL:
            data = {**data, "message": CONTENT_BY_CHANNEL[data["channel"]].model_validate(data["message"])}
        return data

    @property
    def subject(self) -> str:
        return send_subject(self.workspace_id, self.channel)

    @property
    def dedupe_id(self) -> str:
        return self.send_id


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
