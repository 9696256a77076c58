"""Pure scheduling rules: does an event trigger a campaign, cancel a send, fall in its window."""

import uuid
from datetime import datetime
from typing import Any

SEND_NAMESPACE = uuid.UUID("6f1c3c1e-2b9a-4f0e-9d61-3f4c1b7a9e55")


def send_id(campaign_id: str, trigger_message_id: str, profile_id: str) -> str:
    """Deterministic: the same trigger for the same campaign and profile is one send, however often it arrives."""
    return str(uuid.uuid5(SEND_NAMESPACE, f"{campaign_id}\x1f{profile_id}\x1f{trigger_message_id}"))


def property_matches(properties: dict[str, Any], key: str, op: str, value: Any) -> bool:
    """One property condition, with the same meaning as in segment filters."""
    present = key in properties and properties[key] is not None
    actual = properties.get(key)
    if op == "exists":
        return present
    if op == "not_exists":
        return not present
    if op == "eq":
        same_kind = type(actual) is type(value) or _both_numbers(actual, value)
        return present and same_kind and actual == value
    if op == "neq":
        return not property_matches(properties, key, "eq", value)
    if op == "in":
        return any(property_matches(properties, key, "eq", v) for v in value)
    if op == "contains":
        if isinstance(actual, str):
            return str(value).lower() in actual.lower()
        if isinstance(actual, list):
            return value in actual
        return False
    if not present:
        return False
    if _both_numbers(actual, value) or (isinstance(actual, str) and isinstance(value, str)):
        return {
            "gt": actual > value,
            "gte": actual >= value,
            "lt": actual < value,
            "lte": actual <= value,
        }[op]
    return False


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))


def matches_trigger(trigger: dict[str, Any], event_name: str, properties: dict[str, Any]) -> bool:
    """The event is the trigger's event and satisfies every `where` condition."""
    if trigger.get("event") != event_name:
        return False
    return all(
        property_matches(properties, w["property"], w["op"], w.get("value"))
        for w in trigger.get("where", [])
    )


def in_window(starts_at: datetime | None, ends_at: datetime | None, at: datetime) -> bool:
    """Whether `at` falls inside the campaign's [starts_at, ends_at) window."""
    return (starts_at is None or at >= starts_at) and (ends_at is None or at < ends_at)
