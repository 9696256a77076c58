"""Pure ingest rules: input limits, clock-skew correction and turning a Segment call into a bus event."""

import ipaddress
import uuid
from datetime import UTC, datetime
from typing import Any

from kernel import limits
from kernel.contracts import Event
from services.ingest.schemas import SegmentCall

# The fields of a call that reach the event store; the limits apply to these. Others (`integrations`,
# `_metadata`, extras) are read or dropped by ingest and never stored.
STORED_FIELDS = (
    "userId", "anonymousId", "previousId", "groupId", "messageId", "event", "name", "properties", "traits", "context",
)


def storable_call(call: dict[str, Any], loc: limits.Loc = ()) -> dict[str, Any]:
    """The call with every stored field within Herald's limits (normalized where Segment keeps the call).

    Raises `limits.LimitExceeded` naming the first value that cannot be stored (`properties.a.b[3]`).
    """
    result = call
    for name in STORED_FIELDS:
        value = call.get(name)
        if value is None or (type(value) is str and value.isascii() and "\x00" not in value):
            continue  # absent, or a plain id: the common case, tested without a call
        if name == "messageId" and type(value) is not str:
            # Not an id: left for validation to refuse, as it refuses 42. Normalized, a number past 2^53 became
            # text and was kept; past 64 bits two such numbers became one id ("1e+30"), and the second call was
            # answered 200 and then dropped as a duplicate.
            continue
        checked = limits.storable(value, (*loc, name))
        if checked is not value:
            if result is call:
                result = dict(call)
            result[name] = checked
    return result


def as_utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC, as Segment does."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def corrected_timestamp(
    received_at: datetime, timestamp: datetime | None, sent_at: datetime | None
) -> datetime:
    """`timestamp = receivedAt − (sentAt − timestamp)`: undo the device clock's skew.

    Without `sentAt` the device's timestamp is taken as it is; without a timestamp the event
    happened when it was received. Raises OverflowError when the result is not a datetime at all.
    """
    if timestamp is None:
        return received_at
    timestamp = as_utc(timestamp)
    if sent_at is None:
        return timestamp
    return received_at - (as_utc(sent_at) - timestamp)


def _utc_of(value: datetime, loc: limits.Loc) -> datetime:
    """`value` in UTC, or LimitExceeded when that is before year 1 or after 9999 (a ±14:00 offset at the edges)."""
    try:
        return as_utc(value)
    except OverflowError:
        raise limits.LimitExceeded("is not a representable time once converted to UTC", loc) from None


def event_time(
    received_at: datetime, call: SegmentCall, loc: limits.Loc = ()
) -> tuple[datetime, datetime | None, datetime | None]:
    """The event's corrected timestamp, its original timestamp and sentAt, all UTC; LimitExceeded if out of range."""
    field = "timestamp" if call.timestamp else "originalTimestamp"
    original = call.timestamp or call.originalTimestamp
    original_utc = _utc_of(original, (*loc, field)) if original else None
    sent_at = _utc_of(call.sentAt, (*loc, "sentAt")) if call.sentAt else None
    if original_utc is None:
        return received_at, None, sent_at
    try:
        timestamp = corrected_timestamp(received_at, original_utc, sent_at)
    except OverflowError:
        raise limits.LimitExceeded("is out of range once corrected by sentAt", (*loc, field)) from None
    return limits.check_timestamp(timestamp, (*loc, field)), original_utc, sent_at


def client_ip(forwarded_for: str | None) -> str | None:
    """The first address in an X-Forwarded-For list that is an IP address (anything else is ignored)."""
    for entry in (forwarded_for or "").split(","):
        candidate = entry.strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def to_event(
    workspace_id: str, call: SegmentCall, received_at: datetime, client_ip: str | None, loc: limits.Loc = ()
) -> Event:
    """Enrich a validated call into the EVENTS contract; LimitExceeded if its time is out of range."""
    timestamp, original, sent_at = event_time(received_at, call, loc)
    context: dict[str, Any] = dict(call.context)
    if client_ip and "ip" not in context:
        context["ip"] = client_ip
    context_traits = context.get("traits")
    return Event(
        workspace_id=workspace_id,
        message_id=call.messageId or f"herald-{uuid.uuid4()}",
        type=call.type,
        user_id=call.userId,
        anonymous_id=call.anonymousId,
        previous_id=call.previousId,
        group_id=call.groupId,
        event=call.event,
        name=call.name,
        properties=call.properties,
        traits=call.traits or (dict(context_traits) if call.type == "identify" and isinstance(context_traits, dict) else {}),
        context=context,
        timestamp=timestamp,
        original_timestamp=original,
        sent_at=sent_at,
        received_at=received_at,
    )
