from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler.domain import in_window, matches_trigger, property_matches, send_id

TRIGGER = {"event": "Product Added", "where": [{"property": "price", "op": "gt", "value": 100}]}


def test_trigger_needs_the_event_and_every_condition() -> None:
    assert matches_trigger(TRIGGER, "Product Added", {"price": 150})
    assert not matches_trigger(TRIGGER, "Product Added", {"price": 50})
    assert not matches_trigger(TRIGGER, "Product Added", {})
    assert not matches_trigger(TRIGGER, "Product Viewed", {"price": 150})
    assert not matches_trigger(TRIGGER, "Product Added", {"price": "150"})  # a string is not a number


@pytest.mark.parametrize(
    "op, value, props, expected",
    [
        ("eq", "red", {"c": "red"}, True),
        ("eq", 1, {"c": True}, False),
        ("neq", "red", {}, True),
        ("in", ["a", "b"], {"c": "b"}, True),
        ("contains", "SHOE", {"c": "Red shoes"}, True),
        ("contains", "x", {"c": ["x", "y"]}, True),
        ("exists", None, {"c": None}, False),
        ("not_exists", None, {}, True),
        ("lte", "2026-01-31", {"c": "2026-01-15"}, True),
        ("gte", 10, {"c": 10.0}, True),
    ],
)
def test_property_operators(op: str, value: object, props: dict, expected: bool) -> None:
    assert property_matches(props, "c", op, value) is expected


def test_send_ids_are_deterministic_per_campaign_profile_and_trigger() -> None:
    assert send_id("c1", "m1", "p1") == send_id("c1", "m1", "p1")
    assert len({send_id("c1", "m1", "p1"), send_id("c2", "m1", "p1"), send_id("c1", "m2", "p1"), send_id("c1", "m1", "p2")}) == 4


def test_window_is_half_open() -> None:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    assert in_window(None, None, now)
    assert in_window(now, now + timedelta(days=1), now)
    assert not in_window(now - timedelta(days=1), now, now)
    assert not in_window(now + timedelta(seconds=1), None, now)
