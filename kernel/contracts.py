"""Everything that travels on the bus: streams, subjects and the pydantic models of each message.

This module is the one contract between producers and consumers. Subjects carry the workspace id
so that one workspace can be replayed, filtered or moved on its own.
"""

import difflib
import hashlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, cast, get_args

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
Channel = Literal["email", "webhook", "push", "sms", "in_app", "content_card"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)

# A send decision in the scheduler: scheduled → requested (handed to the dispatcher), or stopped.
# "suppressed": a delivery-policy rule stopped it (the send's `rule` says which; services/scheduler/delivery).
SendStatus = Literal["scheduled", "requested", "cancelled", "not_in_audience", "suppressed"]
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
PROFILE_LOOKUP_SUBJECT = "rpc.profiles.lookup"  # a user id or anonymous id to its profile (ProfileLookup)
TOKEN_DEACTIVATION_SUBJECT = "rpc.profiles.deactivate_token"
SUBSCRIPTION_SUBJECT = "rpc.profiles.set_subscription"
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


# --- the condition grammar --------------------------------------------------------------------
#
# One grammar for segment filters, campaign triggers and exception events; docs/segments.md shows
# every shape with examples. The segmenter compiles it to SQL and evaluates it in Python
# (services/segmenter/conditions.py); what a path, a date and a version are is defined here, once.

ConditionOp = Literal[
    "eq", "neq", "gt", "gte", "lt", "lte", "exists", "not_exists", "contains", "in",
    "before", "after",
    "more_than_days_ago", "within_last_days", "within_next_days", "more_than_days_from_now",
    "version_lt", "version_lte", "version_gt", "version_gte",
]
CONDITION_OPS: tuple[ConditionOp, ...] = get_args(ConditionOp)
ORDERED_OPS = ("gt", "gte", "lt", "lte")
# Instants: ISO 8601 text in a document (see ISO_TIME_PATTERN), or a time the profile keeps.
DATE_OPS = ("before", "after")
# Instants relative to now, in whole days: their verdicts change as time passes, with no event
# (the segmenter's sweep re-evaluates the segments that use them).
RELATIVE_DATE_OPS = ("more_than_days_ago", "within_last_days", "within_next_days", "more_than_days_from_now")
# Versions compared part by part as numbers: 3.10 is above 3.9, and 3.2 is 3.2.0 (see version_key).
VERSION_OPS = ("version_lt", "version_lte", "version_gt", "version_gte")
# A negative operator is the negation of its positive one: a user without the value is included,
# and on a path through arrays (`products[].category`) it holds when no element has the value.
NEGATED_OPS: dict[str, ConditionOp] = {"neq": "eq", "not_exists": "exists"}

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
CONDITION_MAX_DAYS = 36_500  # "more than N days ago": a hundred years reaches a birth date
CONDITION_MAX_PATH_STEPS = 16  # `a.b.c`: keys of objects inside one another
CONDITION_MAX_PATH_ARRAYS = 3  # `orders[].items[].sku`: each `[]` is a loop over an array's elements
CONDITION_MAX_COUNT = 1_000_000_000  # a count's bound (events, devices, sessions)
CONDITION_MAX_WITHIN_DAYS = 3650  # a window back from now: ten years
EARTH_RADIUS_KM = 6371.0088  # the mean radius: distances are great-circle (haversine)
MAX_DISTANCE_KM = 20_038.0  # half the equator: every point of the globe is within it

# A standard attribute (the profile's `attributes`, set by the profiles service from what apps send);
# a custom attribute is a trait.
STANDARD_ATTRIBUTES = (
    "language", "time_zone", "country", "city", "location",
    "app_name", "app_version", "os_name", "os_version", "device_model",
)
# What the profile computes (its `computed`), by name, and whether each is a time or a number.
COMPUTED_FIELDS: dict[str, Literal["time", "number"]] = {
    "first_seen": "time", "last_seen": "time",
    "sessions.count": "number", "sessions.first": "time", "sessions.last": "time",
    "purchases.count": "number", "purchases.revenue": "number", "purchases.first": "time", "purchases.last": "time",
}
# What a computed condition may count over a window of days (`within_days`).
WINDOWED_COMPUTED = ("sessions.count", "purchases.count", "purchases.revenue")
TIME_OPS: tuple[ConditionOp, ...] = ("exists", "not_exists", *DATE_OPS, *RELATIVE_DATE_OPS)  # type: ignore[assignment]
NUMBER_OPS: tuple[ConditionOp, ...] = ("eq", "neq", "gt", "gte", "lt", "lte", "in")
# A device's fields a condition may read (the profiles service's `segment_devices` view).
DEVICE_FIELDS = (
    "device_id", "platform", "app", "app_version", "os_version", "model", "locale", "time_zone", "push_enabled", "last_seen",
)
DevicePlatform = Literal["any", "ios", "android", "web"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)

# What a date is, to PostgreSQL and Python alike: ISO 8601, a date or a date and time ("T" or a space
# between), an optional offset (none means UTC); years 1000-9999, hours 00-23 and seconds 00-59 (the two
# disagree on 24:00 and leap seconds), offsets up to ±14:59, at most microseconds.
ISO_TIME_PATTERN = (
    r"[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?)?)?"
)
# What a version is: its leading numeric parts ("3.10.2-beta.1" is 3.10.2), each of at most 20 digits.
VERSION_PATTERN = r"[0-9]{1,20}(?:\.[0-9]{1,20})*"
_ISO_TIME = re.compile(ISO_TIME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)


def parse_time(text: str) -> datetime | None:
    """The instant an ISO 8601 date or time names (UTC when it names no offset); None if it is not one."""
    if not _ISO_TIME.fullmatch(text):
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:  # a day its month does not have
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def version_key(text: str) -> tuple[int, ...] | None:
    """A version's numeric parts, trailing zero parts dropped so that 3.2 and 3.2.0 are equal; None if it
    does not start with a number. Tuples compare as versions do: (3, 10) > (3, 9) and (3, 2) < (3, 2, 1)."""
    found = _VERSION.match(text)
    if found is None:
        return None
    parts = [int(part) for part in found.group().split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class PathStep:
    """One step of a condition's path: a key of an object; `each`: the key holds an array, and every element is tried."""

    key: str
    each: bool = False


@lru_cache(maxsize=4096)
def split_path(name: str) -> tuple[PathStep, ...]:
    """How a condition's name reads a document.

    `address.city` steps into an object; `products[].category` into every element of an array (the
    condition holds when it holds for one element; `neq` and `not_exists` when it holds for none); a
    trailing `[]` (`tags[]`) tries each element itself. A name with an empty step (`a..b`, `.a`) is a
    plain key. A document holding a key of exactly the name is read there first, whatever the name
    spells, so a trait named `utm.source` is found as it always was.
    """
    if "." not in name and "[]" not in name:
        return (PathStep(name),)
    steps = []
    for part in name.split("."):
        each = part.endswith("[]")
        key = part[:-2] if each else part
        if not key or "[]" in key:
            return (PathStep(name),)
        steps.append(PathStep(key, each))
    return tuple(steps)


def _brief(value: Any) -> str:
    """A client's value, short enough to quote in an error message."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:39] + "…"


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


def _condition_name(name: str) -> str:
    """A name or path a condition reads: storable, and a path within its limits."""
    refuse_nul(name, "a name")
    steps = split_path(name)
    if len(steps) > CONDITION_MAX_PATH_STEPS:
        raise ValueError(f"a path has at most {CONDITION_MAX_PATH_STEPS} steps (got {len(steps)})")
    if sum(step.each for step in steps) > CONDITION_MAX_PATH_ARRAYS:
        raise ValueError(f"a path goes into at most {CONDITION_MAX_PATH_ARRAYS} arrays (`[]`)")
    return name


ConditionName = Annotated[
    str, Field(min_length=1, max_length=CONDITION_MAX_NAME_LENGTH), AfterValidator(_condition_name)
]


def _unknown_op(op: Any) -> str:
    """Why an operator is refused: a close match if there is one, else the plain operators, briefly."""
    close = difflib.get_close_matches(op, CONDITION_OPS, n=1, cutoff=0.5) if isinstance(op, str) and len(op) <= 64 else []
    if close:
        return f"unknown operator {_brief(op)}; did you mean `{close[0]}`? (every operator: docs/segments.md)"
    return f"unknown operator {_brief(op)}; one of {', '.join(CONDITION_OPS[:10])}, or a date or version operator (docs/segments.md)"


def _known_keys(kind: str, data: Any, keys: Iterable[str]) -> None:
    """Refuse what is not an object, and keys a condition does not take (a typo such as `within_day`
    would otherwise mean "ever")."""
    if not isinstance(data, dict):
        raise PydanticCustomError("not_an_object", "must be an object")
    allowed = set(keys)
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise PydanticCustomError(
            "unknown_key",
            "unknown key {key}; a `{kind}` condition takes {keys}",
            {"key": _brief(unknown[0]), "kind": kind, "keys": ", ".join(sorted(allowed))},
        )


def _op_takes(op: str, value: Any) -> None:
    """Raise ValueError if `value` is not what `op` compares with (the value's own limits are checked apart)."""
    if op in ("exists", "not_exists"):
        return
    if op == "in" and (not isinstance(value, list) or not value):
        raise ValueError("`in` needs a non-empty list")
    if op in ORDERED_OPS and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
        raise ValueError(f"`{op}` compares a number or a string")
    if op == "contains" and not isinstance(value, (str, int, float, bool)):
        raise ValueError("`contains` takes a string or a scalar")
    if op in ("eq", "neq") and value is None:
        raise ValueError(f"`{op}` needs a value; use `not_exists` / `exists` for a missing value")
    if op in DATE_OPS and (not isinstance(value, str) or parse_time(value) is None):
        raise ValueError(f'`{op}` takes an ISO 8601 date or time, such as "2026-12-01" or "2026-12-01T09:00:00Z"')
    if op in RELATIVE_DATE_OPS and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CONDITION_MAX_DAYS):
        raise ValueError(f"`{op}` takes a whole number of days ≥ 1 and ≤ {CONDITION_MAX_DAYS:,}")
    if op in VERSION_OPS and (not isinstance(value, str) or version_key(value) is None):
        raise ValueError(f'`{op}` takes a version that starts with a number, such as "3.10" or "3.10.2"')


def _checked_value(op: str | None, value: Any, given: bool) -> Any:
    """A comparison's value checked against its limits and its operator (`op` None: the operator was refused)."""
    if op is not None and op not in ("exists", "not_exists") and not given:
        raise ValueError(f"`{op}` needs a value")
    if op == "in" and isinstance(value, list) and len(value) > CONDITION_MAX_IN_VALUES:
        raise ValueError(f"`in` takes at most {CONDITION_MAX_IN_VALUES} values (got {len(value)})")
    _check_condition_value(value)  # even where the operator ignores it: a stored condition keeps its value
    if op is not None:
        _op_takes(op, value)
    return value


_MISSING = object()  # a value not given (told apart from an explicit null, which `eq` also refuses)


# A comparison's value (declared by each kind after its name and `op`, so they dump in reading order).
VALUE = Field(default=None, validate_default=True)


class Comparison(Contract):
    """One comparison: the value at a name (or path) of a document, an operator and a value.

    The same in segments and campaigns, on event properties, traits, attributes, a device's fields and
    what the profile computes. A condition on a missing value is false; `gt`/`gte`/`lt`/`lte` compare
    numbers with numbers and strings with strings (by code point); `contains` is a case-insensitive
    substring on strings and membership on arrays; `in` takes a non-empty list (a null in it matches
    nothing); dates and versions compare with their own operators. The segmenter compiles it to SQL
    and evaluates it in Python, from this one definition. Within the `CONDITION_MAX_*` limits above.

    Each kind declares, in this order, its name field (`KEY`), `op: ConditionOp` and `value: Any = VALUE`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    KEY: ClassVar[str] = "property"
    OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ()  # what a kind takes besides its name, `op` and `value`
    if TYPE_CHECKING:
        op: ConditionOp
        value: Any

    @property
    def name(self) -> str:
        """The name or path the comparison reads."""
        return cast(str, getattr(self, self.KEY))

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        _known_keys(cls.KEY, data, (cls.KEY, "op", "value", *cls.OPTIONAL_KEYS))
        # A value left out is told apart from an explicit null, so "needs a value" is said at `value`.
        return data if "value" in data else {**data, "value": _MISSING}

    @field_validator("op", mode="before", check_fields=False)
    @classmethod
    def _op_known(cls, op: Any) -> Any:
        if op not in CONDITION_OPS:
            raise ValueError(_unknown_op(op))
        return op

    @field_validator("value", mode="after", check_fields=False)
    @classmethod
    def _value_fits(cls, value: Any, info: ValidationInfo) -> Any:
        given = value is not _MISSING
        return _checked_value(info.data.get("op"), value if given else None, given)


class PropertyCondition(Comparison):
    """A comparison on an event's properties (a trigger's, an exception event's, an event condition's `where`)."""

    property: ConditionName
    op: ConditionOp
    value: Any = VALUE


class TraitCondition(Comparison):
    """`{"trait": "plan", "op": "eq", "value": "pro"}`: a comparison on the profile's traits (custom attributes)."""

    KEY: ClassVar[str] = "trait"
    trait: ConditionName
    op: ConditionOp
    value: Any = VALUE


class AttributeCondition(Comparison):
    """`{"attribute": "country", "op": "eq", "value": "DE"}`: a comparison on a standard attribute
    (`location.lat` reads into the location)."""

    KEY: ClassVar[str] = "attribute"
    attribute: ConditionName
    op: ConditionOp
    value: Any = VALUE

    @field_validator("attribute")
    @classmethod
    def _standard(cls, name: str) -> str:
        root = split_path(name)[0].key
        if root not in STANDARD_ATTRIBUTES:
            raise ValueError(
                f"unknown attribute {_brief(root)}; one of {', '.join(STANDARD_ATTRIBUTES)} (a custom attribute is a `trait`)"
            )
        return name


class DevicePropertyCondition(PropertyCondition):
    """A comparison on one of a device's fields (DEVICE_FIELDS)."""

    @field_validator("property")
    @classmethod
    def _device_field(cls, name: str) -> str:
        if name not in DEVICE_FIELDS:
            raise ValueError(f"unknown device field {_brief(name)}; one of {', '.join(DEVICE_FIELDS)}")
        return name


class ComputedCondition(Comparison):
    """`{"computed": "last_seen", "op": "more_than_days_ago", "value": 30}`: a comparison on what the
    profile computes (COMPUTED_FIELDS): times take the date operators, numbers the numeric ones."""

    KEY: ClassVar[str] = "computed"
    OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ("within_days",)
    computed: str
    op: ConditionOp
    value: Any = VALUE
    # Counted over the last N days (UTC calendar days, today included) instead of all time: sessions started,
    # purchases and revenue (WINDOWED_COMPUTED), from the profiles service's `segment_activity_days`.
    within_days: int | None = None

    @field_validator("within_days", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return _within_days(value)

    @model_validator(mode="after")
    def _windowed(self) -> "ComputedCondition":
        if self.within_days is not None and self.computed not in WINDOWED_COMPUTED:
            raise ValueError(f"`within_days` counts {', '.join(WINDOWED_COMPUTED)}, not {self.computed}")
        return self

    @field_validator("computed", mode="before")
    @classmethod
    def _known_field(cls, name: Any) -> Any:
        if name not in COMPUTED_FIELDS:
            raise ValueError(f"unknown computed value {_brief(name)}; one of {', '.join(COMPUTED_FIELDS)}")
        return name

    @field_validator("op")
    @classmethod
    def _op_suits(cls, op: ConditionOp, info: ValidationInfo) -> ConditionOp:
        kind = COMPUTED_FIELDS.get(info.data.get("computed", ""))
        allowed = TIME_OPS if kind == "time" else NUMBER_OPS
        if kind is not None and op not in allowed:
            raise ValueError(f"`{op}` does not apply to {info.data['computed']} (a {kind}); use one of {', '.join(allowed)}")
        return op

    @field_validator("value")
    @classmethod
    def _numbers_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if COMPUTED_FIELDS.get(info.data.get("computed", "")) == "number" and op is not None:
            numbers = value if op == "in" else [value]
            if any(isinstance(n, bool) or not isinstance(n, (int, float)) for n in numbers):
                raise ValueError(f"{info.data['computed']} is a number: compare it with numbers")
        return value


def _whole(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(what)
    return value


class CountBounds(Contract):
    """How many: any of `gte`, `gt`, `lte`, `lt`, `eq` (whole numbers), such as `{"gte": 3}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gte: int | None = None
    gt: int | None = None
    lte: int | None = None
    lt: int | None = None
    eq: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError('must be an object such as {"gte": 3}')
        unknown = set(data) - set(cls.model_fields)
        if unknown or not data:
            raise ValueError(f"use gte, gt, lte, lt or eq (got {_brief(sorted(unknown)) if unknown else 'nothing'})")
        return data

    @field_validator("gte", "gt", "lte", "lt", "eq", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> int:
        return _whole(value, 0, CONDITION_MAX_COUNT, f"must be a whole number ≥ 0 and ≤ {CONDITION_MAX_COUNT:,}")

    @model_validator(mode="after")
    def _satisfiable(self) -> "CountBounds":
        low, high = self.low, self.high
        if low is not None and high is not None and low > high:
            raise ValueError("no count satisfies these bounds")
        return self

    @property
    def low(self) -> int | None:
        """The least count allowed, if any."""
        lows = [v for v in (self.gte, None if self.gt is None else self.gt + 1, self.eq) if v is not None]
        return max(lows) if lows else None

    @property
    def high(self) -> int | None:
        """The greatest count allowed, if any."""
        highs = [v for v in (self.lte, None if self.lt is None else self.lt - 1, self.eq) if v is not None]
        return min(highs) if highs else None


AT_LEAST_ONCE = CountBounds(gte=1)


def _within_days(value: Any) -> Any:
    if value is None:
        return None
    return _whole(
        value, 1, CONDITION_MAX_WITHIN_DAYS,
        f"must be a whole number of days ≥ 1 and ≤ {CONDITION_MAX_WITHIN_DAYS} (ten years); leave it out for all time",
    )


WithinDays = Annotated[int | None, BeforeValidator(_within_days)]


def _event_name(name: Any) -> Any:
    if not isinstance(name, str) or not name:
        raise ValueError("must be a non-empty event name")
    if len(name) > CONDITION_MAX_NAME_LENGTH or "\x00" in name:
        raise ValueError(f"must be at most {CONDITION_MAX_NAME_LENGTH} characters, without NUL")
    return refuse_nul(name, "an event name")


def _listed(what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of {what}")
        return value

    return check


Amount = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-CONDITION_MAX_NUMBER, le=CONDITION_MAX_NUMBER)]


class SumBounds(Contract):
    """A property added up over the matching events, and its bounds: `{"property": "revenue", "gte": 100}`.

    Numbers only (a missing or non-numeric value adds nothing; no event is a sum of 0), in whatever unit
    the events carry it: the profiles service converts lifetime revenue to the workspace currency
    (`{"computed": "purchases.revenue"}`), a sum of a property does not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    property: ConditionName
    gte: Amount | None = None
    gt: Amount | None = None
    lte: Amount | None = None
    lt: Amount | None = None

    @field_validator("property")
    @classmethod
    def _no_arrays(cls, name: str) -> str:
        if any(step.each for step in split_path(name)):
            raise ValueError("a sum reads one number per event: a path through arrays (`[]`) is not summed")
        return name

    @model_validator(mode="after")
    def _bounded(self) -> "SumBounds":
        if (self.gte, self.gt, self.lte, self.lt) == (None, None, None, None):
            raise ValueError("give at least one of gte, gt, lte, lt")
        return self


class EventCondition(Contract):
    """`{"event": "Order Completed", "count": {"gte": 3}, "within_days": 30, "where": [...]}`: did the
    user do it, how often, how recently, with which properties (at least once, ever, by default), and
    what a property of those events adds up to (`sum`; with a sum and no `count`, any number of events)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: Annotated[str, BeforeValidator(_event_name)]
    count: CountBounds = AT_LEAST_ONCE
    within_days: WithinDays = None
    where: Annotated[list[PropertyCondition], BeforeValidator(_listed("property conditions"))] = Field(default_factory=list)
    sum: SumBounds | None = None

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        _known_keys("event", data, cls.model_fields)
        return data


class DeviceCondition(Contract):
    """`{"device": "ios", "where": [{"property": "push_enabled", "op": "eq", "value": true}]}`: has the user
    a device of this platform (`any`: of any) whose fields match, how many, seen how recently."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: DevicePlatform
    count: CountBounds = AT_LEAST_ONCE
    within_days: WithinDays = None
    where: Annotated[list[DevicePropertyCondition], BeforeValidator(_listed("device field conditions"))] = Field(
        default_factory=list
    )

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        _known_keys("device", data, cls.model_fields)
        return data


Degrees = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class Circle(Contract):
    """A point and a radius: `{"lat": 52.52, "lon": 13.405, "km": 25}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: Annotated[Degrees, Field(ge=-90, le=90)]
    lon: Annotated[Degrees, Field(ge=-180, le=180)]
    km: Annotated[Degrees, Field(gt=0, le=MAX_DISTANCE_KM)]


class NearCondition(Contract):
    """`{"near": {"lat": 52.52, "lon": 13.405, "km": 25}}`: the user's last known location (the
    `location` attribute) is within `km` of the point, along the globe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    near: Circle

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        _known_keys("near", data, cls.model_fields)
        return data


class HourRange(Contract):
    """Hours of the day, `from` included, `to` excluded (0-24); `{"from": 22, "to": 2}` runs past midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    start: int = Field(alias="from", ge=0, le=23, strict=True)
    end: int = Field(alias="to", ge=1, le=24, strict=True)

    @model_validator(mode="after")
    def _not_empty(self) -> "HourRange":
        if self.start == self.end:
            raise ValueError("`from` and `to` are the same hour: an empty range (the whole day is from 0 to 24)")
        return self

    @property
    def hours(self) -> tuple[int, ...]:
        """The hours of the day in the range."""
        if self.start < self.end:
            return tuple(range(self.start, self.end))
        return tuple(range(self.start, 24)) + tuple(range(0, self.end % 24))


class ShareBounds(Contract):
    """A share of all the user's sessions, between 0 and 1: `{"gte": 0.5}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gte: Annotated[Degrees, Field(ge=0, le=1)] | None = None
    lte: Annotated[Degrees, Field(ge=0, le=1)] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> "ShareBounds":
        if self.gte is None and self.lte is None:
            raise ValueError("give `gte`, `lte` or both")
        if self.gte is not None and self.lte is not None and self.gte > self.lte:
            raise ValueError("no share satisfies these bounds")
        return self


class ActiveTimes(Contract):
    """When the user starts sessions: weekdays and hours in their own time zone, and how often."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1, max_length=7)
    hours: HourRange = HourRange(start=0, end=24)
    sessions: CountBounds | None = None
    share: ShareBounds | None = None

    @model_validator(mode="after")
    def _one_measure(self) -> "ActiveTimes":
        if self.sessions is not None and self.share is not None:
            raise ValueError("give `sessions` or `share`, not both")
        if len(set(self.days)) != len(self.days):
            raise ValueError("a day is listed twice")
        return self

    @property
    def cells(self) -> tuple[int, ...]:
        """The hours of the week chosen (0 is Monday 00:00-00:59 local time, 167 Sunday 23:00-23:59)."""
        return tuple(sorted(WEEKDAYS.index(day) * 24 + hour for day in self.days for hour in self.hours.hours))


class ActiveCondition(Contract):
    """`{"active": {"days": ["sat", "sun"], "hours": {"from": 18, "to": 23}, "sessions": {"gte": 2}}}`:
    time of use, from the profile's hour-of-week histogram of session starts in the user's time zone.
    Without `sessions` or `share`, at least one session started in those hours."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    active: ActiveTimes

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        _known_keys("active", data, cls.model_fields)
        return data


# The conditions of a segment filter, told apart by the key each has (`all` / `any` / `not` combine them).
CONDITION_KINDS: dict[str, type[Contract]] = {
    "trait": TraitCondition,
    "attribute": AttributeCondition,
    "computed": ComputedCondition,
    "event": EventCondition,
    "device": DeviceCondition,
    "near": NearCondition,
    "active": ActiveCondition,
}


def condition_kind(data: Any) -> str | None:
    """Which condition an object is, by its discriminating key; None if it names none or several."""
    if not isinstance(data, dict):
        return None
    kinds = [kind for kind in CONDITION_KINDS if kind in data]
    return kinds[0] if len(kinds) == 1 else None


SegmentCondition = Annotated[
    Annotated[TraitCondition, Tag("trait")]
    | Annotated[AttributeCondition, Tag("attribute")]
    | Annotated[ComputedCondition, Tag("computed")]
    | Annotated[EventCondition, Tag("event")]
    | Annotated[DeviceCondition, Tag("device")]
    | Annotated[NearCondition, Tag("near")]
    | Annotated[ActiveCondition, Tag("active")],
    Discriminator(condition_kind),
]
SEGMENT_CONDITION: TypeAdapter[SegmentCondition] = TypeAdapter(SegmentCondition)


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

ProfilePart = Literal["devices", "sessions", "purchases", "first_seen", "last_seen"]


class ProfileChanged(Contract):
    """A profile's traits, identities or behaviour changed; consumers re-read what they need."""

    workspace_id: str
    profile_id: str
    user_id: str | None = None
    cause_message_id: str
    changed_traits: list[str] = Field(default_factory=list)
    # The standard attributes (language, time_zone, country, ...) whose value changed, as changed_traits.
    changed_attributes: list[str] = Field(default_factory=list)
    # The other parts of the profile the change wrote, for consumers that read them (the segmenter's
    # device, session, purchase and first/last seen conditions). None: not reported, so any may have.
    changed_parts: list[ProfilePart] | None = None
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
    """An email campaign's message: Liquid templates for the subject, the plain-text body and the HTML body (one of
    the two at least; the text is made from the HTML when not given)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    subject: str = Field(min_length=1)
    body: str | None = Field(default=None, min_length=1, description="the plain text; made from `html` when not given")
    html: str | None = Field(default=None, min_length=1, description="the HTML (values escaped, <style> rules inlined)")
    from_address: str | None = Field(default=None, alias="from", description="From: header; the workspace default if unset")
    reply_to: str | None = Field(default=None, description="Reply-To: header; the workspace default if unset")

    @model_validator(mode="after")
    def _has_a_body(self) -> "EmailContent":
        if self.body is None and self.html is None:
            raise ValueError("an email needs a `body` (plain text), an `html` body, or both")
        return self


class WebhookContent(Contract):
    """A webhook campaign's request: an object body has its strings rendered; a string body must render to JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | str | None = None


PUSH_MAX_TTL_SECONDS = 28 * 24 * 3600  # FCM keeps a message at most four weeks
PushText = Annotated[str, Field(max_length=4096)]


class IosPush(Contract):
    """What an iOS device gets instead of the push's own values, and what only iOS has (Liquid in text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: PushText | None = None
    body: PushText | None = None
    subtitle: PushText | None = None
    sound: PushText | None = None
    badge: int | PushText | None = None
    thread_id: PushText | None = None
    category: PushText | None = None
    interruption_level: Literal["passive", "active", "time-sensitive", "critical"] | None = None
    content_available: bool = False


class AndroidPush(Contract):
    """What an Android device (and a browser through FCM) gets instead of the push's own values (Liquid in text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: PushText | None = None
    body: PushText | None = None
    channel_id: PushText | None = None
    icon: PushText | None = None
    color: Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$")] | None = None
    tag: PushText | None = None
    click_action: PushText | None = None
    sound: PushText | None = None
    notification_priority: Literal[
        "PRIORITY_MIN", "PRIORITY_LOW", "PRIORITY_DEFAULT", "PRIORITY_HIGH", "PRIORITY_MAX"
    ] | None = None


class PushContent(Contract):
    """A push campaign's message: every text a Liquid template; sent to each push-enabled device of the user
    for `app_id` (its credentials and, when they name one, its devices), over APNs or FCM by the token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    title: PushText | None = None
    body: PushText | None = None
    image_url: PushText | None = None
    deep_link: PushText | None = None
    sound: PushText | None = None
    badge: int | PushText | None = None
    data: dict[Annotated[str, Field(min_length=1, max_length=256)], PushText] = Field(default_factory=dict, max_length=100)
    ttl: int | None = Field(default=None, ge=0, le=PUSH_MAX_TTL_SECONDS, description="seconds the provider keeps trying")
    collapse_key: Annotated[str, Field(max_length=64)] | None = None
    priority: Literal["high", "normal"] = "high"
    ios: IosPush | None = None
    android: AndroidPush | None = None

    @model_validator(mode="after")
    def _says_something(self) -> "PushContent":
        if not (self.title or self.body or self.data or (self.ios and self.ios.content_available)):
            raise ValueError("a push needs a title, a body or data (or ios.content_available for a silent push)")
        return self


class SmsContent(Contract):
    """An SMS campaign's message: its text, a Liquid template, sent to the user's `phone` trait (E.164 once checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    body: str = Field(min_length=1, max_length=1600, description="the text (Twilio takes at most 1,600 characters)")


INBOX_DEFAULT_TTL_HOURS = 30 * 24  # an in-app message or card without an expiry leaves the feed after 30 days
INBOX_MAX_TTL_HOURS = 365 * 24
InboxText = Annotated[str, Field(max_length=4096)]


class _Expiring(Contract):
    """When an in-app message or a content card leaves the user's feed: at `expires_at`, or `ttl_hours` after it
    was sent (one of them at most; neither: INBOX_DEFAULT_TTL_HOURS)."""

    expires_at: datetime | None = Field(default=None, description="when it leaves the feed (with a time zone)")
    ttl_hours: float | None = Field(
        default=None, gt=0, le=INBOX_MAX_TTL_HOURS, description="hours after it was sent that it leaves the feed"
    )

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-24T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> "_Expiring":
        if self.expires_at is not None and self.ttl_hours is not None:
            raise ValueError("give `expires_at` or `ttl_hours`, not both")
        return self


class InAppButton(Contract):
    """A button of an in-app message: its text, where it leads (a deep link or a web URL) and what it does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: InboxText = Field(min_length=1)
    deep_link: InboxText | None = None
    url: InboxText | None = None
    action: Literal["open", "close", "request_push_permission"] | None = Field(
        default=None, description="open its link (the default when it has one), close the message (the default "
        "without one), or ask for push permission"
    )

    @model_validator(mode="after")
    def _leads_somewhere(self) -> "InAppButton":
        if self.deep_link is not None and self.url is not None:
            raise ValueError("a button leads to a `deep_link` or a `url`, not both")
        if self.action == "open" and self.deep_link is None and self.url is None:
            raise ValueError("a button whose action is `open` needs a `deep_link` or a `url`")
        return self


class InAppContent(_Expiring):
    """An in-app message: shown by the app (modal, slide-up or full screen) when it fetches its messages; every
    text and link a Liquid template, rendered for the user when it is sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layout: Literal["modal", "slide_up", "full_screen"] = "modal"
    header: InboxText | None = None
    body: InboxText | None = None
    image_url: InboxText | None = None
    deep_link: InboxText | None = Field(default=None, description="where a tap on the message leads")
    buttons: list[InAppButton] = Field(default_factory=list, max_length=2)

    @model_validator(mode="after")
    def _shows_something(self) -> "InAppContent":
        if not (self.header or self.body or self.image_url):
            raise ValueError("an in-app message needs a header, a body or an image_url")
        return self


class ContentCardContent(_Expiring):
    """A content card: a card in the app's feed until dismissed or expired; every text and link a Liquid template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: InboxText | None = None
    body: InboxText | None = None
    image_url: InboxText | None = None
    link: InboxText | None = Field(default=None, description="where a tap on the card leads (a web URL or a deep link)")
    link_text: InboxText | None = None
    pinned: bool = Field(default=False, description="kept above the unpinned cards")

    @model_validator(mode="after")
    def _shows_something(self) -> "ContentCardContent":
        if not (self.title or self.body or self.image_url):
            raise ValueError("a content card needs a title, a body or an image_url")
        return self


InboxContent = InAppContent | ContentCardContent
MessageContent = EmailContent | WebhookContent | PushContent | SmsContent | InAppContent | ContentCardContent
CONTENT_BY_CHANNEL: dict[Channel, type[MessageContent]] = {
    "email": EmailContent,
    "webhook": WebhookContent,
    "push": PushContent,
    "sms": SmsContent,
    "in_app": InAppContent,
    "content_card": ContentCardContent,
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
    # The campaign's subscription rules, checked by the dispatcher before rendering (docs/subscriptions.md):
    # a transactional send ignores the channel's marketing state, never an unsubscribe from its group.
    transactional: bool = False
    subscription_group_id: str | None = None
    # The campaign's experiment arm this user is in (a variant's name), None when the campaign has no variants.
    variant: str | None = None

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


# The parts of a ProfileSnapshot a ProfileQuery asks for. Devices and computed values cost the profiles service
# reads the traits do not (they cut dispatch from 448 to 350 messages/s when every answer had them), so a
# renderer asks for what its template reads; push needs `devices` anyway.
SnapshotPart = Literal["traits", "attributes", "devices", "computed", "subscriptions"]
SNAPSHOT_PARTS: tuple[SnapshotPart, ...] = get_args(SnapshotPart)
DEFAULT_SNAPSHOT_PARTS: tuple[SnapshotPart, ...] = ("traits", "subscriptions")  # what a query without `parts` gets


class ProfileQuery(Contract):
    workspace_id: str
    profile_id: str
    # What the answer fills; the other parts keep their empty defaults.
    parts: list[SnapshotPart] = Field(default_factory=lambda: list(DEFAULT_SNAPSHOT_PARTS))


class ProfileLookup(Contract):
    """Which profile a user id (or alias), or else an anonymous id, is; answered with its ProfileSnapshot (`found`
    false when no profile has it)."""

    workspace_id: str
    user_id: str | None = None
    anonymous_id: str | None = None


class Location(Contract):
    lat: float
    lon: float
    at: datetime | None = None


class StandardAttributes(Contract):
    """The standard attributes a profile holds (each only when known), as `GET /api/v1/users/{id}` shows them."""

    language: str | None = None
    time_zone: str | None = None
    country: str | None = None
    city: str | None = None
    location: Location | None = None
    app_name: str | None = None
    app_version: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    device_model: str | None = None


class DeviceSnapshot(Contract):
    """One of a profile's devices. Its push token stays with the profiles service: no template needs it."""

    device_id: str
    platform: str | None = None
    app: str | None = None
    app_version: str | None = None
    os_version: str | None = None
    model: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    push_enabled: bool = False
    last_seen: datetime | None = None


class SessionsSnapshot(Contract):
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    hour_of_week: list[list[int]] = Field(default_factory=list)  # 7 rows (Monday first) of 24 hours


class PurchasesSnapshot(Contract):
    count: int = 0
    revenue: float = 0.0
    currency: str | None = None
    first: datetime | None = None
    last: datetime | None = None


class ComputedSnapshot(Contract):
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_counts: dict[str, int] = Field(default_factory=dict)
    sessions: SessionsSnapshot = Field(default_factory=SessionsSnapshot)
    purchases: PurchasesSnapshot = Field(default_factory=PurchasesSnapshot)


# --- subscriptions (the profiles service owns them; docs/subscriptions.md) --------------------

SubscriptionState = Literal["opted_in", "subscribed", "unsubscribed"]
SUBSCRIPTION_STATES: tuple[SubscriptionState, ...] = get_args(SubscriptionState)
SubscriptionChannel = Literal["email", "push", "sms"]
SUBSCRIPTION_CHANNELS: tuple[SubscriptionChannel, ...] = get_args(SubscriptionChannel)


class SubscriptionEntry(Contract):
    """A profile's state on one channel or in one subscription group: what, since when, and from where."""

    state: SubscriptionState
    at: datetime
    source: str


class SubscriptionsSnapshot(Contract):
    """A profile's subscription states, as `GET /api/v1/users/{id}` shows them (None: never set)."""

    email: SubscriptionEntry | None = None
    push: SubscriptionEntry | None = None
    sms: SubscriptionEntry | None = None
    groups: dict[str, SubscriptionEntry] = Field(default_factory=dict)  # subscription group id -> state


class SubscriptionChange(Contract):
    """Set one profile's state on a channel or in a subscription group, as of `at` (the newest `at` wins, so a
    late or replayed change changes nothing). Asked on SUBSCRIPTION_SUBJECT, e.g. by the dispatcher for an SMS
    STOP (source "sms") or an unsubscribe link (source "link")."""

    workspace_id: str
    user_id: str | None = None
    profile_id: str | None = None  # one of user_id or profile_id names the profile
    channel: SubscriptionChannel | None = None
    group_id: str | None = None  # one of channel or group_id says what is changed
    state: SubscriptionState
    source: str = Field(min_length=1, max_length=64)
    at: datetime
    # Said on the `$subscription_changed` event besides channel/group, from, to and source (an SMS keyword, a number).
    details: dict[str, str] = Field(default_factory=dict, max_length=8)

    @model_validator(mode="after")
    def _one_target(self) -> "SubscriptionChange":
        if (self.user_id is None) == (self.profile_id is None):
            raise ValueError("exactly one of user_id or profile_id")
        if (self.channel is None) == (self.group_id is None):
            raise ValueError("exactly one of channel or group_id")
        return self


class SubscriptionSet(Contract):
    """The answer to a SubscriptionChange: the state now held (after the newest-wins rule), or why none was set.

    `error`: "no_user" (found false), "unknown_group", "archived_group" or "invalid" (opted_in for a group)."""

    found: bool = True
    profile_id: str | None = None
    changed: bool = False
    current: SubscriptionEntry | None = None
    error: str | None = None


class ProfileSnapshot(Contract):
    """What the dispatcher renders a message with: the profile as `GET /api/v1/users/{id}` shows it (its
    `describe` shape validates as this), less what no template needs. Templates read it as `user`."""

    profile_id: str
    user_id: str | None = None
    traits: dict[str, Any] = Field(default_factory=dict)
    attributes: StandardAttributes = Field(default_factory=StandardAttributes)
    devices: list[DeviceSnapshot] = Field(default_factory=list)
    computed: ComputedSnapshot = Field(default_factory=ComputedSnapshot)
    subscriptions: SubscriptionsSnapshot = Field(default_factory=SubscriptionsSnapshot)
    found: bool = True


class TokenDeactivation(Contract):
    """A provider called this push token dead: the profiles service stops pushing to it (until it is registered again)."""

    workspace_id: str
    token: str
    reason: str | None = None


class TokenDeactivated(Contract):
    deactivated: bool
    device_id: str | None = None


class AudienceQuery(Contract):
    workspace_id: str
    segment_id: str
    profile_id: str


class AudienceAnswer(Contract):
    member: bool
    found: bool = True
    archived: bool = False  # the segment is archived: it matches nobody


# --- the user's rights: erasure and export (services/*/privacy) --------------------------------
#
# An erasure is a job the profiles service tracks: it publishes one ErasureRequested on PROFILES
# (durable: every service that holds personal data consumes it with its own durable consumer and
# acks only once its part is committed), and each service answers with an ErasureReport there.

ErasingService = Literal["profiles", "segmenter", "scheduler", "dispatcher"]
ERASING_SERVICES: tuple[ErasingService, ...] = get_args(ErasingService)
# Each service's durable consumer of erasure requests, and the profiles service's of the reports.
ERASURE_CONSUMERS: dict[str, tuple[str, str, str]] = {
    **{service: ("PROFILES", f"{service}_erasures", "profiles.erase.>") for service in ERASING_SERVICES},
    "profiles_reports": ("PROFILES", "profiles_erasure_reports", "profiles.erased.>"),
}
# A personal-data page (export) a service answers over request/reply, by service.
EXPORT_SUBJECTS: dict[str, str] = {
    "segmenter": "rpc.segmenter.export",
    "scheduler": "rpc.scheduler.export",
    "dispatcher": "rpc.dispatcher.export",
}
# What stands in for an erased person's profile id in the rows kept as anonymous counts.
ERASED_PROFILE_ID = "erased"


def erasure_subject(workspace_id: str) -> str:
    return f"profiles.erase.{workspace_id}"


def erasure_report_subject(workspace_id: str) -> str:
    return f"profiles.erased.{workspace_id}"


class ErasureRequested(Contract):
    """Erase everything held on these profiles (one person: their profile and the profiles merged into it)."""

    erasure_id: str
    workspace_id: str
    profile_ids: list[str]
    requested_at: datetime

    @property
    def subject(self) -> str:
        return erasure_subject(self.workspace_id)

    @property
    def dedupe_id(self) -> str:
        return f"{self.workspace_id}:erase:{self.erasure_id}"


class ErasureReport(Contract):
    """One service's part of an erasure is committed; `erased` counts what it removed or anonymized, by kind."""

    erasure_id: str
    workspace_id: str
    service: ErasingService
    erased: dict[str, int] = Field(default_factory=dict)
    at: datetime

    @property
    def subject(self) -> str:
        return erasure_report_subject(self.workspace_id)

    @property
    def dedupe_id(self) -> str:
        return f"{self.workspace_id}:erased:{self.erasure_id}:{self.service}"


class PersonalDataQuery(Contract):
    """A page of what a service holds on these profiles, after the position `after` (its own opaque text)."""

    workspace_id: str
    profile_ids: list[str]
    part: str = ""  # which of the service's parts (empty: its main one)
    after: str | None = None
    limit: int = Field(500, ge=1, le=1000)


class MembershipRecord(Contract):
    segment_id: str
    segment_name: str | None = None
    entered_at: datetime


class SendRecord(Contract):
    """A send decision the scheduler made for the person."""

    send_id: str
    campaign_id: str
    channel: str
    status: str
    reason: str | None = None
    trigger: dict[str, Any] = Field(default_factory=dict)
    triggered_at: datetime
    due_at: datetime
    created_at: datetime


class DeliveryRecord(Contract):
    """A delivery-log row the dispatcher keeps for the person: where, what, and the provider's answer."""

    send_id: str
    campaign_id: str
    channel: str
    status: str
    reason: str | None = None
    recipient: str | None = None
    subject: str | None = None
    attempts: int = 0
    provider_response: str | None = None
    created_at: datetime
    sent_at: datetime | None = None


class ConversionRecord(Contract):
    """A campaign goal the person reached after a send."""

    campaign_id: str
    send_id: str
    variant: str | None = None
    message_id: str
    converted_at: datetime


class InboxRecord(Contract):
    """An in-app message or content card rendered for the person."""

    send_id: str
    campaign_id: str
    channel: str
    content: dict[str, Any] = Field(default_factory=dict)
    sent_at: datetime
    expires_at: datetime
    viewed_at: datetime | None = None
    clicked_at: datetime | None = None
    dismissed_at: datetime | None = None


class ConversionPage(Contract):
    records: list[ConversionRecord]
    after: str | None = None


class InboxPage(Contract):
    records: list[InboxRecord]
    after: str | None = None


class MembershipPage(Contract):
    records: list[MembershipRecord]
    after: str | None = None  # the next page's position; None on the last page


class SendPage(Contract):
    records: list[SendRecord]
    after: str | None = None


class DeliveryPage(Contract):
    records: list[DeliveryRecord]
    after: str | None = None


# --- Braze-compatible user API (services/ingest/braze) ------------------------------------------

BRAZE_LOOKUP_SUBJECT = "rpc.profiles.braze_lookup"


class BrazeLookup(Contract):
    """Which of these people exist: by email (the most recently seen profile with it), user id, anonymous id."""

    workspace_id: str
    emails: list[str] = Field(default_factory=list)  # lower case
    user_ids: list[str] = Field(default_factory=list)
    anonymous_ids: list[str] = Field(default_factory=list)


class KnownPerson(Contract):
    """How to name an existing profile in an event: its user id, else one of its anonymous ids."""

    user_id: str | None = None
    anonymous_id: str | None = None


class BrazeKnown(Contract):
    emails: dict[str, KnownPerson] = Field(default_factory=dict)
    user_ids: list[str] = Field(default_factory=list)
    anonymous_ids: list[str] = Field(default_factory=list)
