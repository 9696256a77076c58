"""Segment conditions on what apps send, compiled to SQL and counted by real PostgreSQL over the profiles
views: standard attributes, nested traits, dates relative to now, first/last seen, sessions, purchases,
devices, distance and time of use."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.profiles.models import Device, Profile, StoredEvent
from services.segmenter import domain, repository

NOW = datetime(2026, 6, 13, 12, 0, tzinfo=UTC)  # a Saturday
DAY = timedelta(days=1)
BERLIN = {"lat": 52.52, "lon": 13.405}


def hours(**starts: int) -> list[int]:
    """A week's histogram of session starts: `sat_19=3` is three sessions begun on Saturdays at 19:00."""
    week = [0] * 168
    for cell, n in starts.items():
        day, hour = cell.split("_")
        week[["mon", "tue", "wed", "thu", "fri", "sat", "sun"].index(day) * 24 + int(hour)] = n
    return week


PEOPLE: dict[str, dict[str, Any]] = {
    "ana": {
        "traits": {"address": {"city": "Berlin"}, "trial_ends": (NOW + 3 * DAY).isoformat(), "signup": "2026-05-01",
                   "orders": [{"items": [{"sku": "A-1", "category": "shoes"}]}]},
        "attributes": {"country": "DE", "city": "Berlin", "language": "de", "time_zone": "Europe/Berlin",
                       "app_version": "3.10.1", "location": {**BERLIN, "at": NOW.isoformat()}},
        "first_seen": NOW - 100 * DAY, "last_seen": NOW - DAY,
        "session_count": 12, "first_session": NOW - 100 * DAY, "last_session": NOW - DAY,
        "session_hours": hours(sat_19=3, mon_9=1, tue_20=8),  # adds up to the session count, as the profiles service keeps it
        "purchase_count": 3, "revenue": Decimal("250.5"), "first_purchase": NOW - 90 * DAY, "last_purchase": NOW - 10 * DAY,
    },
    "ben": {
        "traits": {"address": {"city": "Paris"}, "signup": (NOW - 3 * DAY).date().isoformat()},
        "attributes": {"country": "FR", "city": "Paris", "app_version": "3.9",
                       "location": {"lat": 48.8566, "lon": 2.3522, "at": NOW.isoformat()}},
        "first_seen": NOW - 30 * DAY, "last_seen": NOW - 20 * DAY,
        "session_count": 2, "first_session": NOW - 30 * DAY, "last_session": NOW - 20 * DAY,
        "session_hours": hours(mon_9=2),
        "purchase_count": 1, "revenue": Decimal("20"), "first_purchase": NOW - 25 * DAY, "last_purchase": NOW - 25 * DAY,
    },
    "cat": {
        "traits": {},
        "attributes": {"country": "DE", "city": "Potsdam", "location": {"lat": 52.39, "lon": 13.06, "at": NOW.isoformat()}},
        "first_seen": NOW - 2 * DAY, "last_seen": NOW,
    },
    "dan": {"traits": {"address": "unknown"}, "attributes": {"location": {"lat": "52.5", "lon": None}},
            "first_seen": NOW - 400 * DAY, "last_seen": NOW - 400 * DAY},
}
# (person, device id, platform, app version, push enabled, last seen)
DEVICES = [
    ("ana", "ana-phone", "ios", "3.10.1", True, NOW - DAY),
    ("ana", "ana-browser", "web", None, False, NOW - 2 * DAY),
    ("ben", "ben-phone", "android", "3.9.0", False, NOW - 20 * DAY),
    ("ben", "ben-old-phone", "ios", "2.0", True, NOW - 60 * DAY),
]


# (person, days ago, properties) of their Order Completed events
ORDERS = [
    ("ana", 5, {"revenue": 120}),
    ("ana", 40, {"revenue": 80}),
    ("ben", 3, {"revenue": "20"}),  # text: not added
    ("ben", 10, {"revenue": 30, "order": {"total": 7}}),
]


@pytest.fixture
async def population(sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> str:
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile), [
            {"workspace_id": workspace_id, "profile_id": p, "user_id": p, "trait_times": {}, **fields}
            for p, fields in PEOPLE.items()
        ])
        await s.execute(insert(Device), [
            {"workspace_id": workspace_id, "profile_id": p, "device_id": f"{workspace_id}-{d}", "platform": platform,
             "app_version": version, "push_enabled": push, "last_seen": seen, "times": {}}
            for p, d, platform, version, push, seen in DEVICES
        ])
        await s.execute(insert(StoredEvent), [
            {"workspace_id": workspace_id, "message_id": f"order-{i}", "profile_id": p, "type": "track",
             "name": "Order Completed", "properties": props, "traits": {}, "context": {},
             "timestamp": NOW - days * DAY, "received_at": NOW}
            for i, (p, days, props) in enumerate(ORDERS)
        ])
    return workspace_id


CASES: list[tuple[dict[str, Any], set[str]]] = [
    # standard attributes
    ({"attribute": "country", "op": "eq", "value": "DE"}, {"ana", "cat"}),
    ({"attribute": "city", "op": "in", "value": ["Berlin", "Paris"]}, {"ana", "ben"}),
    ({"attribute": "country", "op": "neq", "value": "DE"}, {"ben", "dan"}),
    ({"attribute": "location.lat", "op": "gt", "value": 50}, {"ana", "cat"}),
    ({"attribute": "app_version", "op": "version_lt", "value": "3.10"}, {"ben"}),
    ({"attribute": "app_version", "op": "lt", "value": "3.10"}, set()),  # as text, "3.9" sorts after "3.10"
    # nested traits and dates in traits
    ({"trait": "address.city", "op": "eq", "value": "Paris"}, {"ben"}),
    ({"trait": "address.city", "op": "not_exists"}, {"cat", "dan"}),
    ({"trait": "orders[].items[].category", "op": "eq", "value": "shoes"}, {"ana"}),
    ({"trait": "signup", "op": "more_than_days_ago", "value": 30}, {"ana"}),
    ({"trait": "signup", "op": "within_last_days", "value": 7}, {"ben"}),
    ({"trait": "trial_ends", "op": "within_next_days", "value": 7}, {"ana"}),
    # first and last seen
    ({"computed": "last_seen", "op": "more_than_days_ago", "value": 14}, {"ben", "dan"}),
    ({"computed": "last_seen", "op": "within_last_days", "value": 7}, {"ana", "cat"}),
    ({"computed": "first_seen", "op": "after", "value": "2026-06-01"}, {"cat"}),
    # sessions
    ({"computed": "sessions.count", "op": "gte", "value": 10}, {"ana"}),
    ({"computed": "sessions.last", "op": "more_than_days_ago", "value": 14}, {"ben"}),
    ({"computed": "sessions.last", "op": "not_exists"}, {"cat", "dan"}),
    ({"computed": "sessions.count", "op": "eq", "value": 0}, {"cat", "dan"}),
    # purchases: spend tiers
    ({"computed": "purchases.revenue", "op": "gte", "value": 100}, {"ana"}),
    ({"all": [{"computed": "purchases.revenue", "op": "gte", "value": 10},
              {"computed": "purchases.revenue", "op": "lt", "value": 100}]}, {"ben"}),
    ({"computed": "purchases.revenue", "op": "gt", "value": 250.4}, {"ana"}),
    ({"computed": "purchases.count", "op": "in", "value": [0, 1]}, {"ben", "cat", "dan"}),
    ({"computed": "purchases.last", "op": "within_last_days", "value": 14}, {"ana"}),
    # a property added up over events: spend in a window
    ({"event": "Order Completed", "within_days": 30, "sum": {"property": "revenue", "gte": 100}}, {"ana"}),
    ({"event": "Order Completed", "within_days": 30, "sum": {"property": "revenue", "lt": 50}}, {"ben", "cat", "dan"}),
    ({"event": "Order Completed", "within_days": 30, "count": {"gte": 1}, "sum": {"property": "revenue", "lt": 50}}, {"ben"}),
    ({"event": "Order Completed", "sum": {"property": "revenue", "gte": 200, "lte": 200}}, {"ana"}),
    ({"event": "Order Completed", "sum": {"property": "order.total", "gt": 5}}, {"ben"}),
    ({"event": "Order Completed", "where": [{"property": "revenue", "op": "gt", "value": 100}],
      "sum": {"property": "revenue", "gt": 0}}, {"ana"}),
    # devices
    ({"device": "ios", "where": [{"property": "push_enabled", "op": "eq", "value": True}]}, {"ana", "ben"}),
    ({"device": "ios", "within_days": 30, "where": [{"property": "push_enabled", "op": "eq", "value": True}]}, {"ana"}),
    ({"device": "any", "where": [{"property": "app_version", "op": "version_lt", "value": "3.0"}]}, {"ben"}),
    ({"device": "any", "where": [{"property": "last_seen", "op": "more_than_days_ago", "value": 30}]}, {"ben"}),
    ({"device": "any", "count": {"eq": 0}}, {"cat", "dan"}),
    ({"device": "any", "count": {"gte": 2}}, {"ana", "ben"}),
    ({"device": "android"}, {"ben"}),
    ({"not": {"device": "web"}}, {"ben", "cat", "dan"}),
    # distance from the last known location
    ({"near": {**BERLIN, "km": 50}}, {"ana", "cat"}),
    ({"near": {**BERLIN, "km": 10}}, {"ana"}),
    ({"near": {"lat": 48.86, "lon": 2.35, "km": 5}}, {"ben"}),
    ({"near": {"lat": 0, "lon": 0, "km": 20038}}, {"ana", "ben", "cat"}),  # the whole globe: dan has no location
    # time of use, in each user's own time zone
    ({"active": {"days": ["sat"], "hours": {"from": 18, "to": 22}}}, {"ana"}),
    ({"active": {"days": ["mon"], "hours": {"from": 8, "to": 10}, "sessions": {"gte": 2}}}, {"ben"}),
    ({"active": {"days": ["mon"], "hours": {"from": 8, "to": 10}, "share": {"gte": 0.5}}}, {"ben"}),
    ({"active": {"days": ["mon"], "hours": {"from": 8, "to": 10}, "share": {"lte": 0.5}}}, {"ana"}),
    ({"active": {"hours": {"from": 22, "to": 10}}}, {"ana", "ben"}),
    ({"not": {"active": {"days": ["sat", "sun"]}}}, {"ben", "cat", "dan"}),
    ({"active": {"days": ["sat"], "sessions": {"eq": 0}}}, {"ben", "cat", "dan"}),
    ({"active": {"days": ["mon", "tue", "wed", "thu", "fri"], "sessions": {"gte": 9}}}, {"ana"}),  # 120 hours: 12 - 3
    ({"active": {"days": ["mon", "tue", "wed", "thu", "fri"], "share": {"gte": 0.75}}}, {"ana", "ben"}),
    ({"active": {"share": {"gte": 1}}}, {"ana", "ben"}),
    ({"active": {"days": ["tue"], "hours": {"from": 20, "to": 21}, "sessions": {"gte": 2, "lte": 8}}}, {"ana"}),
]


@pytest.mark.parametrize("tree, members", CASES, ids=[str(i) for i in range(len(CASES))])
async def test_conditions_select_exactly_the_expected_people(
    population: str, sessions: async_sessionmaker[AsyncSession], tree: dict[str, Any], members: set[str]
) -> None:
    condition = domain.compile_filter(domain.parse(tree))
    async with unit_of_work(sessions) as s:
        assert await repository.count_matching(s, population, condition, now=NOW) == len(members)
        verdicts = await repository.evaluate_for_profiles(s, population, list(PEOPLE), {"seg": condition}, now=NOW)
    assert {p for p, v in verdicts.items() if v["seg"]} == members
