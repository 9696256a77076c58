"""Sessions on real PostgreSQL: phones by lifecycle events, browsers by inactivity, once per event, in any order."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NATS
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.profiles import service
from services.profiles.activity import Rules
from tests.integration.test_profile_updates import apply, event, profile

MON = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # a Monday
M = timedelta(minutes=1)
BROWSER = {"library": {"name": "analytics.js", "version": "next-1.70.0"}, "timezone": "Europe/Berlin",
           "userAgent": "Mozilla/5.0"}
PHONE = {"device": {"id": "d1", "type": "ios"}, "os": {"name": "iOS", "version": "18.1"}, "timezone": "America/New_York"}


async def activity_days(sessions: async_sessionmaker[AsyncSession], workspace_id: str, user_id: str) -> dict[date, tuple[Any, ...]]:
    """The profile's rows of `segment_activity_days`, by day: (sessions, purchases, revenue), the empty ones left out."""
    async with unit_of_work(sessions) as s:
        found = await service.find_profile(s, workspace_id, user_id, "user_id")
        rows = await s.execute(
            text("SELECT day, sessions, purchases, revenue FROM profiles.segment_activity_days "
                 "WHERE workspace_id = :ws AND profile_id = :pid"), {"ws": workspace_id, "pid": found.profile_id})
    return {day: tuple(rest) for day, *rest in rows if any(rest)}


def history(ws: str) -> list[Any]:
    return [
        event(ws, user_id="ada", type="page", name="Home", context=BROWSER, timestamp=MON),
        event(ws, user_id="ada", event="Product Viewed", context=BROWSER, timestamp=MON + 20 * M),
        event(ws, user_id="ada", event="Product Viewed", context=BROWSER, timestamp=MON + 75 * M),  # a new session
        event(ws, user_id="ada", event="Application Installed", context=PHONE, timestamp=MON + 3 * 60 * M),
        event(ws, user_id="ada", event="Application Opened", context=PHONE, timestamp=MON + 3 * 60 * M),
        event(ws, user_id="ada", event="Application Backgrounded", context=PHONE, timestamp=MON + 3 * 60 * M + 5 * M),
        event(ws, user_id="ada", event="Application Opened", context=PHONE, timestamp=MON + 26 * 60 * M),
        event(ws, user_id="ada", event="Order Completed", context={}, timestamp=MON + 27 * 60 * M),  # a server's call
        event(ws, user_id="ada", event="$message_sent", context={"library": {"name": "analytics.js"}}, timestamp=MON + 28 * 60 * M),
        event(ws, user_id="ada", event="Product Viewed", context=BROWSER, timestamp=MON + 50 * M),  # late: joins the first two
    ]


async def test_sessions_count_phones_and_browsers_once_whatever_the_order(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    one_by_one, batched = workspace_id, f"{workspace_id}b"
    events = history(one_by_one)
    for e in events:
        await apply(sessions, js, e)
    for e in events[:4]:
        await apply(sessions, js, e)  # redeliveries count nothing
    await apply(sessions, js, *reversed(history(batched)))
    expected = (await profile(sessions, one_by_one, "ada"))["computed"]["sessions"]
    assert (await profile(sessions, batched, "ada"))["computed"]["sessions"] == expected
    assert (expected["count"], expected["first"], expected["last"]) == (3, MON, MON + 26 * 60 * M)
    hours = expected["hour_of_week"]
    assert len(hours) == 7 and all(len(day) == 24 for day in hours)
    assert hours[0][9] == 1  # the browser session, Monday 09:00 in Berlin
    assert hours[0][6] == 1 and hours[1][5] == 1  # the app, Monday 06:00 and Tuesday 05:00 in New York
    assert sum(map(sum, hours)) == 3
    # the days the sessions started, for windowed counts: the browser's and the app's first on Monday (UTC)
    days = {day: n for day, (n, _, _) in (await activity_days(sessions, one_by_one, "ada")).items()}
    assert days == {MON.date(): 2, (MON + timedelta(days=1)).date(): 1}
    assert {day: n for day, (n, _, _) in (await activity_days(sessions, batched, "ada")).items()} == days


async def _apply_with(sessions: async_sessionmaker[AsyncSession], rules: Rules, *events: Any) -> None:
    async with unit_of_work(sessions) as s:
        await service.apply_events(s, list(events), rules)


async def test_the_inactivity_timeout_is_a_setting(sessions, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    views = [event(workspace_id, user_id="bo", event="Viewed", context=BROWSER, timestamp=MON + i * 20 * M) for i in range(4)]
    await _apply_with(sessions, Rules(session_gap=timedelta(minutes=10)), *views)
    assert (await profile(sessions, workspace_id, "bo"))["computed"]["sessions"]["count"] == 4


async def test_a_merge_adds_the_anonymous_sessions(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, user_id="cy", event="Viewed", context=BROWSER, timestamp=MON))
    await apply(sessions, js, event(workspace_id, anonymous_id="anon-cy", event="Viewed", context=BROWSER, timestamp=MON + 20 * M))
    await apply(sessions, js, event(workspace_id, anonymous_id="anon-cy", event="Viewed", context=BROWSER, timestamp=MON + 3 * 60 * M))
    await apply(sessions, js, event(workspace_id, type="identify", user_id="cy", anonymous_id="anon-cy", context=BROWSER,
                                    timestamp=MON + 3 * 60 * M + M))
    merged = (await profile(sessions, workspace_id, "cy"))["computed"]["sessions"]
    assert (merged["count"], merged["first"], merged["last"]) == (2, MON, MON + 3 * 60 * M)
    assert {day: n for day, (n, _, _) in (await activity_days(sessions, workspace_id, "cy")).items()} == {MON.date(): 2}
