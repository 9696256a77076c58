"""Pure ingest rules: clock-skew correction and turning a Segment call into a bus event."""

import uuid
from datetime import UTC, datetime
from typing import Any

from kernel.contracts import Event
from services.ingest.schemas import SegmentCall


def as_utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC, as Segment does."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def corrected_timestamp(
    received_at: datetime, timestamp: datetime | None, sent_at: datetime | None
) -> datetime:
    """`timestamp = receivedAt − (sentAt − timestamp)`: undo the device clock's skew.

    Without `sentAt` the device's timestamp is taken as it is; without a timestamp the event
    happened when it was received.
    """
    if timestamp is None:
        return received_at
    timestamp = as_utc(timestamp)
    if sent_at is None:
        return timestamp
    return received_at - (as_utc(sent_at) - timestamp)


def to_event(
    workspace_id: str, call: SegmentCall, received_at: datetime, client_ip: str | None
) -> Event:
    """Enrich a validated call into the EVENTS contract."""
    original = call.timestamp or call.originalTimestamp
    context: dict[str, Any] = dict(call.context)
    if client_ip and "ip" not in context:
        context["ip"] = client_ip
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
        traits=call.traits or (dict(context.get("traits") or {}) if call.type == "identify" else {}),
        context=context,
        timestamp=corrected_timestamp(received_at, original, call.sentAt),
        original_timestamp=as_utc(original) if original else None,
        sent_at=as_utc(call.sentAt) if call.sentAt else None,
        received_at=received_at,
    )
