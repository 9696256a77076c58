"""One grammar, one table: every case runs through the campaign trigger's Python evaluator, the segment
compiler's SQL over stored profiles, and the exception check's SQL over stored events, and all three
must give the table's answer. A condition that meant one thing in a segment and another in a trigger
would fail here."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.profiles.models import Profile, StoredEvent
from services.scheduler import domain as campaign_rules
from services.scheduler import repository as campaign_queries
from services.scheduler.models import ScheduledSend
from services.scheduler.schemas import ExceptionEvent, Trigger
from services.segmenter import domain as segment_rules
from services.segmenter import repository as segment_queries

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

# (document, condition: name, operator, value, expected)
Case = tuple[dict[str, Any], str, str, Any, bool]
CASES: list[Case] = [
    # equality is JSON equality: numbers by value, never a boolean for a number, whole arrays and objects
    ({"c": "red"}, "c", "eq", "red", True),
    ({"c": True}, "c", "eq", 1, False),
    ({"c": 1}, "c", "eq", 1.0, True),
    ({"c": "1"}, "c", "eq", 1, False),
    ({"c": [1, 2]}, "c", "eq", [1, 2], True),
    ({"c": [1, 2]}, "c", "eq", [1], False),
    ({"c": [1]}, "c", "eq", [True], False),
    ({"c": {"a": 1, "b": 2}}, "c", "eq", {"a": 1}, False),
    ({"c": {"a": 1, "b": [2]}}, "c", "eq", {"b": [2.0], "a": 1}, True),
    ({}, "c", "neq", "red", True),
    ({"c": None}, "c", "neq", "red", True),
    ({"c": "red"}, "c", "neq", "red", False),
    ({"c": "b"}, "c", "in", ["a", "b"], True),
    ({"c": None}, "c", "in", ["a", None], False),
    ({"c": 2}, "c", "in", [1.0, 2.0], True),
    # presence: a null is missing
    ({"c": None}, "c", "exists", None, False),
    ({"c": False}, "c", "exists", None, True),
    ({}, "c", "not_exists", None, True),
    ({"c": None}, "c", "not_exists", None, True),
    # contains: a case-insensitive substring, or an element
    ({"c": "Red shoes"}, "c", "contains", "SHOE", True),
    ({"c": "a%b_c"}, "c", "contains", "%b_", True),
    ({"c": "abc"}, "c", "contains", "%", False),
    ({"c": "Ärger"}, "c", "contains", "ärg", True),
    ({"c": ["x", "y"]}, "c", "contains", "x", True),
    ({"c": ["xy"]}, "c", "contains", "x", False),
    ({"c": [True]}, "c", "contains", 1, False),
    ({"c": [1.0]}, "c", "contains", 1, True),
    ({"c": 12}, "c", "contains", 1, False),
    # order: numbers with numbers, strings with strings by code point
    ({"c": 10.0}, "c", "gte", 10, True),
    ({"c": "150"}, "c", "gt", 100, False),
    ({"c": 150}, "c", "gt", "100", False),
    ({"c": "B"}, "c", "lt", "a", True),
    ({"c": "2026-01-15"}, "c", "lte", "2026-01-31", True),
    ({"c": "3.10"}, "c", "gt", "3.9", False),  # text order: why versions have their own operators
    # nested paths: into objects, and through arrays (any element; neq / not_exists: none)
    ({"address": {"city": "Berlin"}}, "address.city", "eq", "Berlin", True),
    ({"address": {"city": "Berlin"}}, "address.city", "neq", "Berlin", False),
    ({"address": "Berlin"}, "address.city", "exists", None, False),
    ({"address": "Berlin"}, "address.city", "not_exists", None, True),
    ({"a": {"b": {"c": {"d": 1}}}}, "a.b.c.d", "gte", 1, True),
    ({"address.city": "Rome", "address": {"city": "Berlin"}}, "address.city", "eq", "Rome", True),
    ({"address.city": None, "address": {"city": "Berlin"}}, "address.city", "exists", None, False),
    ({"a.": 1}, "a.", "eq", 1, True),
    ({"a": {"": 1}}, "a.", "eq", 1, False),
    ({"items": ["x"]}, "items.0", "eq", "x", False),  # no array indexes: `[]` means every element
    ({"0": 1}, "0", "eq", 1, True),  # a key that looks like a number is a key
    ({"products": [{"category": "shoes"}, {"category": "hats"}]}, "products[].category", "eq", "hats", True),
    ({"products": [{"category": "shoes"}, {"category": "hats"}]}, "products[].category", "neq", "hats", False),
    ({"products": [{"category": "shoes"}, {"category": "hats"}]}, "products[].category", "neq", "bags", True),
    ({"products": [{"category": "shoes"}, {"category": "hats"}]}, "products[].category", "in", ["bags", "hats"], True),
    ({"products": [{"category": "Shoes"}]}, "products[].category", "contains", "sho", True),
    ({"products": [{"category": "shoes"}, {"price": 5}]}, "products[].category", "not_exists", None, False),
    ({"products": [{"price": 5}]}, "products[].category", "not_exists", None, True),
    ({"products": [{"price": 5}, {"price": 150}]}, "products[].price", "gt", 100, True),
    ({"products": [{"price": 5}, {"price": "150"}]}, "products[].price", "gt", 100, False),
    ({"products": {"category": "shoes"}}, "products[].category", "eq", "shoes", False),
    ({"products": []}, "products[].category", "neq", "shoes", True),
    ({"tags": ["vip", "beta"]}, "tags[]", "eq", "vip", True),
    ({"tags": ["vip", "beta"]}, "tags[]", "neq", "vip", False),
    ({"orders": [{"items": [{"sku": "a"}]}, {"items": [{"sku": "b"}]}]}, "orders[].items[].sku", "eq", "b", True),
    ({"orders": [{"items": [{"sku": "a"}]}, {"items": "b"}]}, "orders[].items[].sku", "eq", "b", False),
    # dates: ISO 8601, no offset is UTC; "N days" is N x 24 hours back or forth from now
    ({"d": "2026-06-01"}, "d", "more_than_days_ago", 7, True),
    ({"d": "2026-06-10T12:00:00Z"}, "d", "more_than_days_ago", 7, False),
    ({"d": "2026-06-10T12:00:00Z"}, "d", "within_last_days", 7, True),
    ({"d": "2026-06-08T12:00:00Z"}, "d", "within_last_days", 7, True),
    ({"d": "2026-06-08T11:59:59Z"}, "d", "within_last_days", 7, False),
    ({"d": "2026-06-15T14:00:00+02:00"}, "d", "within_last_days", 1, True),
    ({"d": "2026-06-15T14:00:01+02:00"}, "d", "within_last_days", 1, False),
    ({"d": "2026-06-20"}, "d", "within_next_days", 7, True),
    ({"d": "2026-06-20"}, "d", "within_last_days", 7, False),
    ({"d": "2026-07-20"}, "d", "more_than_days_from_now", 7, True),
    ({"d": "2026-06-21"}, "d", "more_than_days_from_now", 7, False),
    ({"d": "2026-06-15 09:00"}, "d", "after", "2026-06-15T08:59:59Z", True),
    ({"d": "2026-06-15T09:00:00+0530"}, "d", "before", "2026-06-15T04:00:00Z", True),
    ({"d": "2026-06-15T09:00:00.5-03"}, "d", "after", "2026-06-15T12:00:00Z", True),
    ({"d": "2026-06-15"}, "d", "after", "2026-06-14T23:00:00-02:00", False),
    ({"d": "2026-02-30"}, "d", "before", "2030-01-01", False),
    ({"d": "2026-06-15T24:00:00"}, "d", "before", "2030-01-01", False),
    ({"d": "2026-06-15T23:59:60Z"}, "d", "before", "2030-01-01", False),
    ({"d": "2026-06-01T00:00:00.1234567Z"}, "d", "before", "2030-01-01", False),
    ({"d": "0999-01-01"}, "d", "before", "2030-01-01", False),
    ({"d": "2026-06-15Z"}, "d", "before", "2030-01-01", False),
    ({"d": "yesterday"}, "d", "more_than_days_ago", 1, False),
    ({"d": "now"}, "d", "within_last_days", 1, False),
    ({"d": "June 1, 2026"}, "d", "more_than_days_ago", 1, False),
    ({"d": 1780000000}, "d", "more_than_days_ago", 1, False),
    ({"d": ["2026-01-01", "2026-06-14"]}, "d[]", "within_last_days", 7, True),
    ({"events": [{"at": "2026-06-14"}]}, "events[].at", "more_than_days_ago", 7, False),
    # versions: numeric parts in order; trailing zeros do not count; not a version, no answer
    ({"v": "3.10.0"}, "v", "version_gt", "3.9", True),
    ({"v": "3.2"}, "v", "version_gte", "3.2.0", True),
    ({"v": "3.2"}, "v", "version_lt", "3.2.0", False),
    ({"v": "3.2.0-beta.1"}, "v", "version_lt", "3.2.1", True),
    ({"v": "10"}, "v", "version_gt", "9.99", True),
    ({"v": "0.0"}, "v", "version_lte", "0", True),
    ({"v": "1.0010"}, "v", "version_gt", "1.9", True),
    ({"v": "007.1"}, "v", "version_lte", "7.1", True),
    ({"v": "v3.2"}, "v", "version_lt", "9", False),
    ({"v": 3.2}, "v", "version_lt", "9", False),
    ({"v": ""}, "v", "version_lt", "9", False),
    ({"v": "123456789012345678901234"}, "v", "version_lte", "12345678901234567890", True),
    ({"apps": [{"v": "1.2"}, {"v": "2.0"}]}, "apps[].v", "version_lt", "1.3", True),
]
IDS = [f"{i}-{name}-{op}" for i, (_, name, op, _, _) in enumerate(CASES)]


def condition(name: str, op: str, value: Any) -> dict[str, Any]:
    return {"property": name, "op": op, **({} if op in ("exists", "not_exists") else {"value": value})}


@pytest.mark.parametrize("doc, name, op, value, expected", CASES, ids=IDS)
def test_campaign_triggers_evaluate_the_table_in_python(doc: dict[str, Any], name: str, op: str, value: Any, expected: bool) -> None:
    trigger = Trigger.model_validate({"event": "E", "where": [condition(name, op, value)]}).model_dump(mode="json")
    assert campaign_rules.matches_trigger(trigger, "E", doc, NOW) is expected
    exception = ExceptionEvent.model_validate({"event": "E", "where": [condition(name, op, value)]}).model_dump(mode="json")
    assert campaign_rules.matches_exception(exception, "E", doc, NOW) is expected


@pytest.fixture(scope="module")
async def stored(infra: Any) -> tuple[str, async_sessionmaker[AsyncSession]]:
    """Each case's document as one profile's traits and one event's properties, in a workspace of its own."""
    from kernel.db import make_engine, make_sessionmaker

    workspace_id = f"ws_{uuid.uuid4().hex[:16]}"
    engine = make_engine(infra.database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile), [
            {"workspace_id": workspace_id, "profile_id": f"case{i}", "user_id": f"case{i}", "traits": doc,
             "trait_times": {}, "first_seen": NOW, "last_seen": NOW}
            for i, (doc, *_) in enumerate(CASES)
        ])
        await s.execute(insert(StoredEvent), [
            {"workspace_id": workspace_id, "message_id": f"case{i}", "profile_id": f"case{i}", "type": "track",
             "name": "E", "properties": doc, "traits": {}, "context": {}, "timestamp": NOW - timedelta(minutes=1),
             "received_at": NOW}
            for i, (doc, *_) in enumerate(CASES)
        ])
    yield workspace_id, sessions
    await engine.dispose()


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
async def test_segments_compile_the_table_to_sql(stored: tuple[str, async_sessionmaker[AsyncSession]], case: int) -> None:
    workspace_id, sessions = stored
    _, name, op, value, expected = CASES[case]
    tree = {"trait": name, **{k: v for k, v in condition(name, op, value).items() if k != "property"}}
    compiled = segment_rules.compile_filter(segment_rules.parse(tree))
    async with unit_of_work(sessions) as s:
        verdict = await segment_queries.evaluate_for_profile(s, workspace_id, f"case{case}", {"seg": compiled}, now=NOW)
    assert verdict == {"seg": expected}


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
async def test_exception_events_compile_the_table_to_sql(stored: tuple[str, async_sessionmaker[AsyncSession]], case: int) -> None:
    workspace_id, sessions = stored
    _, name, op, value, expected = CASES[case]
    exception = ExceptionEvent.model_validate({"event": "E", "where": [condition(name, op, value)]}).model_dump(mode="json")
    send = ScheduledSend(workspace_id=workspace_id, profile_id=f"case{case}", triggered_at=NOW - timedelta(hours=1))
    async with unit_of_work(sessions) as s:
        found = await campaign_queries.exception_performed(s, send, [exception], NOW)
    assert (found == "E") is expected


# Windowed computed values: sessions started and purchases per UTC day (the profiles service's
# `segment_activity_days`), counted over the last N calendar days, today included. Segments alone read
# them (a campaign trigger's conditions are on the event), so these cases run through the SQL.
# (per-day rows as (days before NOW, sessions, purchases, revenue), condition, expected)
WindowCase = tuple[list[tuple[int, int, int, float]], dict[str, Any], bool]
WINDOW_CASES: list[WindowCase] = [
    ([(0, 1, 0, 0), (3, 1, 0, 0), (6, 1, 0, 0)], {"computed": "sessions.count", "op": "gte", "value": 3, "within_days": 7}, True),
    ([(0, 1, 0, 0), (3, 1, 0, 0), (7, 1, 0, 0)], {"computed": "sessions.count", "op": "gte", "value": 3, "within_days": 7}, False),
    ([], {"computed": "sessions.count", "op": "eq", "value": 0, "within_days": 7}, True),
    ([], {"computed": "sessions.count", "op": "gte", "value": 0, "within_days": 1}, True),
    ([(10, 3, 0, 0), (1, -1, 0, 0)], {"computed": "sessions.count", "op": "eq", "value": 2, "within_days": 30}, True),
    ([(0, 1, 0, 0)], {"computed": "sessions.count", "op": "neq", "value": 1, "within_days": 7}, False),
    ([(29, 0, 1, 60.5), (2, 0, 1, 40)], {"computed": "purchases.revenue", "op": "gt", "value": 100, "within_days": 30}, True),
    ([(30, 0, 1, 60.5), (2, 0, 1, 40)], {"computed": "purchases.revenue", "op": "gt", "value": 100, "within_days": 30}, False),
    ([(29, 0, 1, 60.5), (2, 0, 1, 40)], {"computed": "purchases.count", "op": "in", "value": [2, 3], "within_days": 30}, True),
    ([(29, 0, 1, 60.5), (2, 0, 1, 40)], {"computed": "purchases.count", "op": "lt", "value": 2, "within_days": 7}, True),
    ([(0, 0, 1, 0)], {"computed": "purchases.revenue", "op": "lte", "value": 0, "within_days": 1}, True),
]


@pytest.fixture(scope="module")
async def windows(infra: Any) -> tuple[str, async_sessionmaker[AsyncSession]]:
    """Each window case's per-day rows on one profile, in a workspace of its own."""
    from kernel.db import make_engine, make_sessionmaker

    workspace_id = f"ws_{uuid.uuid4().hex[:16]}"
    engine = make_engine(infra.database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile), [
            {"workspace_id": workspace_id, "profile_id": f"window{i}", "user_id": f"window{i}", "traits": {},
             "trait_times": {}, "first_seen": NOW, "last_seen": NOW}
            for i in range(len(WINDOW_CASES))
        ])
        for i, (rows, _, _) in enumerate(WINDOW_CASES):
            for days_before, started, bought, revenue in rows:
                await s.execute(text(
                    "INSERT INTO profiles.activity_days (workspace_id, profile_id, day, sessions, purchases, revenue) "
                    "VALUES (:ws, :pid, :day, :sessions, :purchases, :revenue)"
                ), {"ws": workspace_id, "pid": f"window{i}", "day": (NOW - timedelta(days=days_before)).date(),
                    "sessions": started, "purchases": bought, "revenue": revenue})
    yield workspace_id, sessions
    await engine.dispose()


@pytest.mark.parametrize("case", range(len(WINDOW_CASES)), ids=[str(c[1]) for c in WINDOW_CASES])
async def test_segments_count_sessions_and_revenue_in_a_window(windows: tuple[str, async_sessionmaker[AsyncSession]], case: int) -> None:
    workspace_id, sessions = windows
    _, tree, expected = WINDOW_CASES[case]
    compiled = segment_rules.compile_filter(segment_rules.parse(tree))
    async with unit_of_work(sessions) as s:
        verdict = await segment_queries.evaluate_for_profile(s, workspace_id, f"window{case}", {"seg": compiled}, now=NOW)
    assert verdict == {"seg": expected}
    assert segment_rules.reads(segment_rules.parse(tree)).time  # a window slides: the sweep re-evaluates it


def test_a_window_counts_only_sessions_purchases_and_revenue() -> None:
    with pytest.raises(segment_rules.FilterError, match="within_days"):
        segment_rules.parse({"computed": "last_seen", "op": "exists", "within_days": 7})
