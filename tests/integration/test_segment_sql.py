"""Segment filters compiled to SQL, counted by real PostgreSQL over the profiles views."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.profiles.models import Profile, StoredEvent
from services.segmenter import domain, repository

NOW = datetime.now(UTC)
PEOPLE = {
    "ana": {"city": "Berlin", "age": 34, "email": "ana@example.com", "tags": ["vip", "beta"], "signup": "2026-01-10"},
    "ben": {"city": "berlin", "age": "34", "tags": ["beta"]},
    "cat": {"city": "Paris", "age": 19, "email": None, "signup": "2026-06-01"},
    "dan": {},
}
# (person, event, days ago, properties)
EVENTS = [
    ("ana", "Order Completed", 1, {"total": 80}),
    ("ana", "Order Completed", 5, {"total": 120}),
    ("ana", "Order Completed", 40, {"total": 500}),
    ("ben", "Order Completed", 2, {"total": 20}),
    ("ben", "Order Completed", 3, {"total": 60}),
    ("cat", "Order Completed", 10, {"total": 70, "coupon": "SUMMER"}),
]


@pytest.fixture
async def population(sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> str:
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile), [
            {"workspace_id": workspace_id, "profile_id": p, "user_id": p, "traits": t, "trait_times": {},
             "first_seen": NOW, "last_seen": NOW}
            for p, t in PEOPLE.items()
        ])
        await s.execute(insert(StoredEvent), [
            {"workspace_id": workspace_id, "message_id": f"{p}-{i}", "profile_id": p, "type": "track", "name": e,
             "properties": props, "traits": {}, "context": {}, "timestamp": NOW - timedelta(days=d), "received_at": NOW}
            for i, (p, e, d, props) in enumerate(EVENTS)
        ])
    return workspace_id


CASES = [
    ({"trait": "city", "op": "eq", "value": "Berlin"}, {"ana"}),
    ({"trait": "city", "op": "neq", "value": "Berlin"}, {"ben", "cat", "dan"}),
    ({"trait": "age", "op": "gt", "value": 20}, {"ana"}),  # ben's "34" is a string, not a number
    ({"trait": "age", "op": "lte", "value": 19}, {"cat"}),
    ({"trait": "signup", "op": "lt", "value": "2026-03-01"}, {"ana"}),
    ({"trait": "email", "op": "exists"}, {"ana"}),  # cat's null email does not count
    ({"trait": "email", "op": "not_exists"}, {"ben", "cat", "dan"}),
    ({"trait": "city", "op": "contains", "value": "ERL"}, {"ana", "ben"}),
    ({"trait": "tags", "op": "contains", "value": "vip"}, {"ana"}),
    ({"trait": "city", "op": "in", "value": ["Paris", "berlin"]}, {"ben", "cat"}),
    ({"event": "Order Completed"}, {"ana", "ben", "cat"}),
    ({"event": "Order Completed", "count": {"gte": 2}, "within_days": 30}, {"ana", "ben"}),
    ({"event": "Order Completed", "count": {"gte": 3}}, {"ana"}),
    ({"event": "Order Completed", "count": {"lte": 1}, "within_days": 30}, {"cat", "dan"}),
    ({"event": "Order Completed", "count": {"eq": 0}}, {"dan"}),
    ({"event": "Order Completed", "within_days": 30, "where": [{"property": "total", "op": "gt", "value": 50}]},
     {"ana", "ben", "cat"}),
    ({"event": "Order Completed", "count": {"gte": 2}, "within_days": 30,
      "where": [{"property": "total", "op": "gt", "value": 50}]}, {"ana"}),
    ({"event": "Order Completed", "where": [{"property": "coupon", "op": "exists"}]}, {"cat"}),
    ({"all": [{"trait": "city", "op": "contains", "value": "berlin"},
              {"not": {"event": "Order Completed", "where": [{"property": "total", "op": "gte", "value": 100}]}}]}, {"ben"}),
    ({"any": [{"trait": "age", "op": "lt", "value": 20}, {"trait": "tags", "op": "contains", "value": "beta"}]},
     {"ana", "ben", "cat"}),
]


@pytest.mark.parametrize("tree, members", CASES, ids=[str(i) for i in range(len(CASES))])
async def test_filters_select_exactly_the_expected_people(
    population: str, sessions: async_sessionmaker[AsyncSession], tree: dict, members: set[str]
) -> None:
    condition = domain.compile_filter(domain.parse(tree))
    async with unit_of_work(sessions) as s:
        assert await repository.count_matching(s, population, condition) == len(members)
        verdicts = {
            p: (await repository.evaluate_for_profile(s, population, p, {"seg": condition}) or {}).get("seg")
            for p in PEOPLE
        }
    assert {p for p, member in verdicts.items() if member} == members
