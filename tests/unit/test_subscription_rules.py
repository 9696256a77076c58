"""Subscription and consent rules without I/O: the newest entry wins in any order, what traits ask for, what a
change announces, which consent is in force, and the dispatcher's send rule."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from kernel.contracts import SubscriptionEntry, SubscriptionsSnapshot
from services.dispatcher.domain import subscription_refusal
from services.profiles.subscriptions import domain

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def entry(state: str, hours: int = 0, source: str = "api") -> SubscriptionEntry:
    return SubscriptionEntry(state=state, at=T0 + timedelta(hours=hours), source=source)  # type: ignore[arg-type]


def converge(entries: list[SubscriptionEntry]) -> SubscriptionEntry | None:
    held = None
    for candidate in entries:
        if domain.wins(candidate, held):
            held = candidate
    return held


def test_the_newest_entry_wins_whatever_order_they_arrive_in() -> None:
    entries = [entry("subscribed", 1), entry("unsubscribed", 3), entry("opted_in", 2), entry("subscribed", 3, "sdk")]
    results = {converge(list(order)) for order in itertools.permutations(entries)}
    assert results == {entry("unsubscribed", 3)}  # a tie at the newest time: the safer state wins


def test_a_replay_or_an_older_change_does_not_win() -> None:
    held = entry("unsubscribed", 2)
    assert not domain.wins(entry("unsubscribed", 2), held)
    assert not domain.wins(entry("subscribed", 1), held)
    assert domain.wins(entry("subscribed", 3), held)
    assert domain.wins(entry("opted_in"), None)


def test_traits_in_braze_s_shape_ask_for_changes_and_bad_values_are_named() -> None:
    changes, ignored = domain.trait_changes({
        "email_subscribe": "opted_in", "push_subscribe": "maybe", "sms_subscribe": "unsubscribed", "plan": "pro",
        "subscription_groups": [
            {"subscription_group_id": "sg_1", "subscription_state": "subscribed"},
            {"subscription_group_id": "sg_2", "subscription_state": "opted_in"},  # not a group state
            {"subscription_group_id": "weekly", "subscription_state": "subscribed"},  # not a group id
            "sg_3",
        ],
    }, T0)
    assert [(c.key, c.entry.state, c.entry.source) for c in changes] == [
        ("email", "opted_in", "sdk"), ("sms", "unsubscribed", "sdk"), ("sg_1", "subscribed", "sdk"),
    ]
    assert sorted(ignored) == ["invalid_subscription_group"] * 3 + ["invalid_subscription_state"]
    assert domain.trait_changes({"subscription_groups": "sg_1"}, T0) == ([], ["invalid_subscription_group"])


def test_subscription_traits_are_not_kept_as_custom_traits() -> None:
    traits = {"plan": "pro", "email_subscribe": "subscribed", "subscription_groups": []}
    assert domain.without_subscription_traits(traits) == {"plan": "pro"}
    plain = {"plan": "pro"}
    assert domain.without_subscription_traits(plain) is plain  # nothing copied on the hot path


def test_a_change_event_says_what_moved_and_has_the_change_s_own_id() -> None:
    who = domain.Speaker("ada", None)
    event = domain.change_event("ws", "p_1", who, "sg_1", entry("subscribed"), entry("unsubscribed", 1, "link"), T0,
                                "email", {"keyword": "STOP"})
    assert event.event == "$subscription_changed" and event.user_id == "ada" and event.timestamp == T0 + timedelta(hours=1)
    assert event.properties == {"keyword": "STOP", "from": "subscribed", "to": "unsubscribed", "source": "link",
                                "subscribed": False, "group_id": "sg_1", "channel": "email"}
    again = domain.change_event("ws", "p_1", who, "sg_1", None, entry("unsubscribed", 1, "link"), T0 + timedelta(days=1))
    assert again.message_id == event.message_id  # the same change announced twice is one event


def test_the_newest_consent_record_is_in_force_and_a_withdrawal_wins_a_tie() -> None:
    records = [
        {"purpose": "ads", "status": "granted", "at": T0, "seq": 1},
        {"purpose": "ads", "status": "withdrawn", "at": T0 + timedelta(days=1), "seq": 2},
        {"purpose": "ads", "status": "granted", "at": T0, "seq": 3},  # late, older
        {"purpose": "analytics", "status": "granted", "at": T0, "seq": 4},
        {"purpose": "analytics", "status": "withdrawn", "at": T0, "seq": 5},
    ]
    for order in itertools.permutations(records):
        in_force = domain.consents_in_force(list(order))
        assert {p: r["seq"] for p, r in in_force.items()} == {"ads": 2, "analytics": 5}


def subs(**entries: SubscriptionEntry) -> SubscriptionsSnapshot:
    groups = {k: v for k, v in entries.items() if k.startswith("sg_")}
    return SubscriptionsSnapshot(**{k: v for k, v in entries.items() if not k.startswith("sg_")}, groups=groups)


@pytest.mark.parametrize(
    "channel, states, transactional, group, expected",
    [
        ("email", subs(), False, None, None),  # never set: sendable, as Braze's default
        ("email", subs(email=entry("opted_in")), False, None, None),
        ("email", subs(email=entry("subscribed")), False, None, None),
        ("email", subs(email=entry("unsubscribed")), False, None, "unsubscribed"),
        ("email", subs(email=entry("unsubscribed")), True, None, None),  # transactional: the channel state does not stop it
        ("push", subs(push=entry("unsubscribed")), False, None, "unsubscribed"),
        ("sms", subs(email=entry("unsubscribed")), False, None, None),  # another channel's state
        ("webhook", subs(email=entry("unsubscribed")), False, None, None),  # no subscription on webhooks
        ("email", subs(), False, "sg_1", "not_in_group"),
        ("email", subs(), True, "sg_1", None),
        ("email", subs(sg_1=entry("subscribed")), False, "sg_1", None),
        ("email", subs(sg_1=entry("unsubscribed")), False, "sg_1", "left_group"),
        ("email", subs(sg_1=entry("unsubscribed")), True, "sg_1", "left_group"),  # never an explicit unsubscribe
        ("email", subs(email=entry("unsubscribed"), sg_1=entry("subscribed")), False, "sg_1", "unsubscribed"),
        ("email", subs(email=entry("unsubscribed"), sg_1=entry("subscribed")), True, "sg_1", None),
    ],
)
def test_the_dispatcher_s_rule(
    channel: str, states: SubscriptionsSnapshot, transactional: bool, group: str | None, expected: str | None
) -> None:
    refusal = subscription_refusal(channel, states, transactional, group)
    assert (refusal[0] if refusal else None) == expected
    if refusal:
        assert refusal[1]  # a reason a person can read
