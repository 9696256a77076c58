"""Pure scheduling rules: does an event trigger a campaign, cancel a send, fall in its window.

Trigger and exception conditions are the segments' grammar (kernel.contracts.PropertyCondition),
evaluated by the segmenter's one Python reading of it, so a condition means the same in both.
"""

import uuid
from datetime import UTC, datetime
from typing import Any

from services.segmenter import conditions as condition_rules

SEND_NAMESPACE = uuid.UUID("6f1c3c1e-2b9a-4f0e-9d61-3f4c1b7a9e55")


def send_id(campaign_id: str, trigger_message_id: str, profile_id: str) -> str:
    """Deterministic: the same trigger for the same campaign and profile is one send, however often it arrives."""
    return str(uuid.uuid5(SEND_NAMESPACE, f"{campaign_id}\x1f{profile_id}\x1f{trigger_message_id}"))


def property_matches(properties: dict[str, Any], key: str, op: str, value: Any, now: datetime | None = None) -> bool:
    """One property condition, with the same meaning as in segment filters (services/segmenter/conditions.py)."""
    return condition_rules.matches(properties, key, op, value, now if now is not None else datetime.now(UTC))


def _all_hold(where: list[dict[str, Any]], properties: dict[str, Any], now: datetime | None) -> bool:
    return all(property_matches(properties, w["property"], w["op"], w.get("value"), now) for w in where)


def matches_trigger(trigger: dict[str, Any], event_name: str, properties: dict[str, Any], now: datetime | None = None) -> bool:
    """The event is the trigger's event and satisfies every `where` condition."""
    return trigger.get("event") == event_name and _all_hold(trigger.get("where", []), properties, now)


def exception_name(exception: str | dict[str, Any]) -> str:
    """The event an exception (`cancel_on` item) names: a name, or `{"event": name, "where": [...]}`."""
    return exception if isinstance(exception, str) else str(exception["event"])


def matches_exception(exception: str | dict[str, Any], event_name: str, properties: dict[str, Any], now: datetime | None = None) -> bool:
    """The event is the exception's event and, for `{"event", "where"}`, satisfies every condition."""
    if isinstance(exception, str):
        return exception == event_name
    return exception.get("event") == event_name and _all_hold(exception.get("where", []), properties, now)


def in_window(starts_at: datetime | None, ends_at: datetime | None, at: datetime) -> bool:
    """Whether `at` falls inside the campaign's [starts_at, ends_at) window."""
    return (starts_at is None or at >= starts_at) and (ends_at is None or at < ends_at)
