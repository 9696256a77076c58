"""Subscription and consent rules, pure: which state wins, what traits ask for, what a change announces.

A profile's state on a channel (`email`, `push`, `sms`) or in a subscription group is one entry
(state, at, source). Entries are order-independent like the rest of the profile: the entry with the
newest `at` wins, ties broken by the state (`unsubscribed` over `subscribed` over `opted_in`, so the
safer state wins a tie) and then by the source's name; a replay of the entry held changes nothing,
and a change older than the one held is not applied (and not announced).
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kernel.contracts import (
    SUBSCRIPTION_CHANNELS,
    SUBSCRIPTION_STATES,
    Event,
    SubscriptionChannel,
    SubscriptionEntry,
    SubscriptionState,
)

# Traits in Braze's shape that set subscriptions instead of being kept as custom traits.
SUBSCRIBE_TRAITS: dict[str, SubscriptionChannel] = {
    "email_subscribe": "email",
    "push_subscribe": "push",
    "sms_subscribe": "sms",
}
GROUPS_TRAIT = "subscription_groups"
SUBSCRIPTION_TRAITS = (*SUBSCRIBE_TRAITS, GROUPS_TRAIT)
# A group is a list one is in or not: `opted_in` (a double opt-in on a channel) has no meaning there.
GROUP_STATES: tuple[SubscriptionState, ...] = ("subscribed", "unsubscribed")
TRAIT_SOURCE = "sdk"  # the source of a change a profile's traits asked for
GROUP_PREFIX = "sg_"
MAX_GROUPS_PER_CALL = 100
_RANK: dict[str, int] = {"opted_in": 0, "subscribed": 1, "unsubscribed": 2}
# Why a subscription trait was left out (the rest of the call is applied), as the rejections list says it.
INVALID_STATE, INVALID_GROUP, UNKNOWN_GROUP = "invalid_subscription_state", "invalid_subscription_group", "unknown_subscription_group"
IGNORED_WHY = {
    INVALID_STATE: "email_subscribe, push_subscribe or sms_subscribe is not opted_in, subscribed or unsubscribed: left out",
    INVALID_GROUP: "a subscription_groups entry is not {subscription_group_id: sg_…, subscription_state: subscribed or "
    "unsubscribed}: left out",
    UNKNOWN_GROUP: "a subscription group this workspace does not have, or has archived: left out",
}
ConsentStatus = Literal["granted", "withdrawn"]


def new_group_id() -> str:
    """A fresh subscription group id."""
    return f"{GROUP_PREFIX}{uuid.uuid4().hex}"


def is_channel(key: str) -> bool:
    """Whether a subscription key names a channel (else it is a subscription group id)."""
    return key in SUBSCRIPTION_CHANNELS


def order_key(entry: SubscriptionEntry) -> tuple[datetime, int, str]:
    """What decides between two entries for the same channel or group: the newest wins (see the module)."""
    return entry.at, _RANK[entry.state], entry.source


def wins(candidate: SubscriptionEntry, held: SubscriptionEntry | None) -> bool:
    """Whether `candidate` replaces the entry held (False for a replay of it, or an older change)."""
    return held is None or order_key(candidate) > order_key(held)


@dataclass(frozen=True, slots=True)
class Requested:
    """A change some input asked for: on a channel, or in a group (`key` is the group id)."""

    key: str
    entry: SubscriptionEntry
    details: dict[str, str] = field(default_factory=dict)  # more to say on the event (an SMS keyword)


def trait_changes(traits: dict[str, Any], at: datetime) -> tuple[list[Requested], list[str]]:
    """The changes an identify's traits ask for (Braze's `email_subscribe`, `push_subscribe`, `subscription_groups`,
    and `sms_subscribe`), and the reasons for values left out (a state that is not one, a malformed group entry)."""
    changes: list[Requested] = []
    ignored: list[str] = []
    for trait, channel in SUBSCRIBE_TRAITS.items():
        if trait not in traits:
            continue
        value = traits[trait]
        if isinstance(value, str) and value in SUBSCRIPTION_STATES:
            changes.append(Requested(channel, SubscriptionEntry(state=value, at=at, source=TRAIT_SOURCE)))
        else:
            ignored.append(INVALID_STATE)
    groups = traits.get(GROUPS_TRAIT)
    if groups is None:
        return changes, ignored
    if not isinstance(groups, list):
        return changes, [*ignored, INVALID_GROUP]
    for item in groups[:MAX_GROUPS_PER_CALL]:
        group_id = item.get("subscription_group_id") if isinstance(item, dict) else None
        state = item.get("subscription_state") if isinstance(item, dict) else None
        if isinstance(group_id, str) and group_id.startswith(GROUP_PREFIX) and len(group_id) <= 64 and state in GROUP_STATES:
            changes.append(Requested(group_id, SubscriptionEntry(state=state, at=at, source=TRAIT_SOURCE)))
        else:
            ignored.append(INVALID_GROUP)
    ignored += [INVALID_GROUP] * max(0, len(groups) - MAX_GROUPS_PER_CALL)
    return changes, ignored


def without_subscription_traits(traits: dict[str, Any]) -> dict[str, Any]:
    """The traits kept as custom traits: those that set subscriptions are applied as subscriptions instead."""
    if not any(name in traits for name in SUBSCRIPTION_TRAITS):
        return traits
    return {name: value for name, value in traits.items() if name not in SUBSCRIPTION_TRAITS}


def consent_key(record: dict[str, Any]) -> tuple[datetime, int, int]:
    """What decides which consent record of a purpose is in force: the newest `at`, then a withdrawal over a grant,
    then the one recorded last (its sequence number)."""
    return record["at"], 1 if record["status"] == "withdrawn" else 0, record["seq"]


def consents_in_force(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The record in force for each purpose (records as dicts with purpose, status, at and seq)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        held = latest.get(record["purpose"])
        if held is None or consent_key(record) > consent_key(held):
            latest[record["purpose"]] = record
    return latest


@dataclass(frozen=True, slots=True)
class Speaker:
    """Who an announcement is about, as the event path resolves it: the profile's user id, else one of its
    anonymous ids."""

    user_id: str | None
    anonymous_id: str | None


def change_event(
    workspace_id: str,
    profile_id: str,
    who: Speaker,
    key: str,
    before: SubscriptionEntry | None,
    after: SubscriptionEntry,
    received_at: datetime,
    group_channel: str | None = None,
    details: dict[str, str] | None = None,
) -> Event:
    """The `$subscription_changed` event a change puts on the user's timeline (its id is the change's own, so an
    announcement published twice is stored once)."""
    properties: dict[str, Any] = {
        **(details or {}),
        "from": before.state if before else None,
        "to": after.state,
        "source": after.source,
        "subscribed": after.state != "unsubscribed",
    }
    if is_channel(key):
        properties["channel"] = key
    else:
        properties["group_id"] = key
        properties["channel"] = group_channel
    message_id = f"herald:subscription:{profile_id}:{key}:{after.state}:{after.source}:{after.at.isoformat()}"
    return _announcement(workspace_id, who, "$subscription_changed", message_id, properties, after.at, received_at)


def consent_event(
    workspace_id: str, who: Speaker, record: dict[str, Any], before: str | None, received_at: datetime
) -> Event:
    """The `$consent_changed` event a consent record in force puts on the user's timeline."""
    properties = {
        "purpose": record["purpose"], "from": before, "to": record["status"],
        "policy_version": record["policy_version"], "source": record["source"],
    }
    return _announcement(
        workspace_id, who, "$consent_changed", f"herald:consent:{record['consent_id']}", properties, record["at"], received_at
    )


def _announcement(
    workspace_id: str, who: Speaker, name: str, message_id: str, properties: dict[str, Any], at: datetime,
    received_at: datetime,
) -> Event:
    """One of Herald's own events about this user, as the profiles service announces a change."""
    return Event(
        workspace_id=workspace_id, message_id=message_id, type="track", user_id=who.user_id,
        anonymous_id=who.anonymous_id, event=name, properties=properties,
        context={"library": {"name": "herald-profiles"}}, timestamp=at, received_at=received_at,
    )
