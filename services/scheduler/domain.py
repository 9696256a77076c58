"""Pure scheduling rules: does an event trigger a campaign, cancel a send, fall in its window.

Trigger and exception conditions are the segments' grammar (kernel.contracts.PropertyCondition),
evaluated by the segmenter's one Python reading of it, so a condition means the same in both.
"""

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

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


# A campaign is made a `draft`, `launch`ed to `active`, `pause`d and launched again; `archived` ends it
# (it sends nothing more; unarchived, it is a draft again).
CampaignStatus = Literal["draft", "active", "paused", "archived"]
CAMPAIGN_STATUSES: tuple[CampaignStatus, ...] = ("draft", "active", "paused", "archived")
# What an active campaign may change while it sends: its name, what it says, and when it ends. Who it
# reaches and when it triggers wait for a pause, so no trigger is matched half under the old rules.
CHANGEABLE_WHILE_ACTIVE = frozenset({"name", "message", "ends_at"})


def edit_refusal(status: str, fields: Iterable[str]) -> str | None:
    """Why a campaign in `status` may not change these fields (a 409's detail), or None when it may.

    A draft may change anything. Once launched, its channel is fixed: the sends already decided were
    decided for it. An active campaign changes only its name, message and end; the rest after a pause.
    An archived one changes nothing (unarchive it, or duplicate it).
    """
    wanted = set(fields)
    if status == "archived":
        return "an archived campaign cannot change: unarchive it (it becomes a draft) or duplicate it"
    if status == "draft" or not wanted:
        return None
    if "channel" in wanted:
        return f"a launched campaign's channel cannot change (it is {status}): duplicate it to send on another channel"
    if status == "active" and (fixed := sorted(wanted - CHANGEABLE_WHILE_ACTIVE)):
        return (
            f"an active campaign changes only its name, message and ends_at; pause it to change {', '.join(fixed)}"
        )
    return None
