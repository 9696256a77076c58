"""Send-time optimization in SQL on real PostgreSQL: a campaign's new sends move to the hour timing.domain picks for
each user (their session hours and opens in their own time zone, the workspace's best hour for those with too little
history, the workspace default zone for an unknown one), in one statement; other sends stay where they were."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nats.aio.client import Client as NATS
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import Event, ResolvedEvent
from kernel.db import unit_of_work
from services.profiles.models import Profile, StoredEvent
from services.scheduler import service
from services.scheduler.app import build as build_scheduler
from services.scheduler.config import get_settings as scheduler_settings
from services.scheduler.models import Campaign, Occurrence, ScheduledSend
from services.scheduler.timing import domain
from services.scheduler.timing import service as timing
from tests.integration.helpers import running
from tests.unit.test_send_time import history

EARLIEST = datetime(2026, 12, 8, 8, 10, tzinfo=UTC)  # a Tuesday
OPENED = [datetime(2026, 11, 24, 20, 5, tzinfo=UTC), datetime(2026, 12, 1, 20, 40, tzinfo=UTC)]  # Tuesdays, 21:xx Berlin


def noon_on_tuesdays(sessions: int) -> list[int]:
    hours = [0] * domain.HOURS_OF_WEEK
    hours[1 * 24 + 12] = sessions
    return hours


# user: (time zone attribute, session hours, session count, opens)
USERS: dict[str, tuple[str, list[int], int, list[datetime]]] = {
    "berlin": ("Europe/Berlin", history(ZoneInfo("Europe/Berlin"), 19, 60), 60, []),
    "kolkata": ("Asia/Kolkata", history(ZoneInfo("Asia/Kolkata"), 7, 112), 112, []),
    "opener": ("Europe/Berlin", noon_on_tuesdays(3), 3, OPENED),
    "newcomer": ("America/New_York", history(ZoneInfo("America/New_York"), 6, 2), 2, []),
    "nowhere": ("Mars/Olympus_Mons", history(ZoneInfo("UTC"), 10, 30), 30, []),
}


async def users(sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> None:
    now = datetime.now(UTC)
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile), [{
            "workspace_id": workspace_id, "profile_id": name, "user_id": name, "traits": {}, "trait_times": {},
            "first_seen": now, "last_seen": now, "attributes": {"time_zone": zone}, "session_count": count,
            "session_hours": hours,
        } for name, (zone, hours, count, _) in USERS.items()])
        await s.execute(insert(StoredEvent), [{
            "workspace_id": workspace_id, "message_id": uuid.uuid4().hex, "profile_id": name, "type": "track",
            "name": "$message_opened", "user_id": name, "properties": {}, "timestamp": at, "received_at": at,
        } for name, (_, _, _, opens) in USERS.items() for at in opens])


async def campaign(sessions: async_sessionmaker[AsyncSession], workspace_id: str, **fields: Any) -> str:
    campaign_id = f"cmp_{uuid.uuid4().hex[:12]}"
    async with unit_of_work(sessions) as s:
        s.add(Campaign(**{
            "id": campaign_id, "workspace_id": workspace_id, "name": "c", "status": "active", "channel": "email",
            "trigger": {"event": "Bought", "where": []}, "audience": None, "delay_seconds": 0, "cancel_on": [],
            "message": {"subject": "Hi", "body": "Thanks"}, **fields,
        }))
    return campaign_id


def send_rows(workspace_id: str, campaign_id: str, due: datetime) -> list[dict[str, Any]]:
    return [{
        "send_id": f"{campaign_id}:{name}", "workspace_id": workspace_id, "campaign_id": campaign_id, "profile_id": name,
        "user_id": name, "channel": "email", "status": "scheduled",
        "trigger": {"message_id": "m", "name": "Bought", "properties": {}, "timestamp": due.isoformat()},
        "triggered_at": due, "due_at": due,
    } for name in USERS]


async def due_times(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> dict[str, datetime]:
    async with sessions() as s:
        rows = await s.execute(select(ScheduledSend.profile_id, ScheduledSend.due_at).where(ScheduledSend.campaign_id == campaign_id))
        return {p: d for p, d in rows}


def expected(earliest: datetime) -> dict[str, datetime]:
    """What the pure rule picks for each user."""
    crowd = domain.workspace_scores(hours for _, hours, _, _ in USERS.values())
    picked = {}
    for name, (zone_name, hours, count, opens) in USERS.items():
        zone = ZoneInfo(zone_name) if zone_name != "Mars/Olympus_Mons" else ZoneInfo("UTC")
        scores = domain.user_scores(hours, opens, zone)
        picked[name] = domain.best_send_time(earliest, zone, scores, crowd, domain.history_size(count, len(opens)))
    return picked


async def test_new_sends_move_to_the_hour_the_pure_rule_picks_and_only_they_move(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    await users(sessions, workspace_id)
    timed = await campaign(sessions, workspace_id, delivery={"intelligent_timing": True})
    plain = await campaign(sessions, workspace_id, delivery={"intelligent_timing": False})
    earlier = await campaign(sessions, workspace_id, delivery={"intelligent_timing": True})
    async with unit_of_work(sessions) as s:  # decided in an earlier transaction: stays where it is
        await s.execute(insert(ScheduledSend), send_rows(workspace_id, earlier, EARLIEST))
    async with unit_of_work(sessions) as s:
        await s.execute(insert(ScheduledSend), send_rows(workspace_id, timed, EARLIEST) + send_rows(workspace_id, plain, EARLIEST))
        moved = await timing.place_batch(s, [workspace_id])
    want = expected(EARLIEST)
    assert await due_times(sessions, timed) == want
    assert moved == sum(1 for at in want.values() if at != EARLIEST)
    assert set((await due_times(sessions, plain)).values()) == {EARLIEST}
    assert set((await due_times(sessions, earlier)).values()) == {EARLIEST}
    # What the users' histories say, in words: each at their own local hour.
    assert want["berlin"] == datetime(2026, 12, 8, 18, 0, tzinfo=UTC)  # 19:00 in Berlin
    assert want["kolkata"] == datetime(2026, 12, 9, 1, 30, tzinfo=UTC)  # 07:00 in Kolkata
    assert want["opener"].astimezone(ZoneInfo("Europe/Berlin")).hour == 21  # when they open
    assert want["nowhere"] == datetime(2026, 12, 8, 10, 0, tzinfo=UTC)  # 10:00 in UTC, the workspace default
    crowd_best = domain.workspace_scores(h for _, h, _, _ in USERS.values())
    newcomer_hour = want["newcomer"].astimezone(ZoneInfo("America/New_York"))
    assert crowd_best[newcomer_hour.weekday() * 24 + newcomer_hour.hour] == max(
        crowd_best[domain.hour_of_week(c, ZoneInfo("America/New_York"))] for c in domain.candidates(EARLIEST, ZoneInfo("America/New_York"))
    )


async def test_a_triggered_send_waits_its_delay_then_its_best_hour(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await users(sessions, workspace_id)
    campaign_id = await campaign(sessions, workspace_id, delay_seconds=3600, delivery={"intelligent_timing": True})
    now = datetime.now(UTC)
    resolved = ResolvedEvent(workspace_id=workspace_id, profile_id="berlin", user_id="berlin", event=Event(
        workspace_id=workspace_id, message_id=uuid.uuid4().hex, type="track", user_id="berlin", event="Bought",
        timestamp=now, received_at=now,
    ))
    async with unit_of_work(sessions) as s:
        await service.on_events(s, nc, [(resolved, None)])
        await timing.place_batch(s, [workspace_id])
    [due] = (await due_times(sessions, campaign_id)).values()
    zone = ZoneInfo("Europe/Berlin")
    _, hours, count, _ = USERS["berlin"]
    crowd = domain.workspace_scores(h for _, h, _, _ in USERS.values())
    after_delay = now + timedelta(hours=1)
    want = domain.best_send_time(after_delay, zone, domain.user_scores(hours, [], zone), crowd, count)
    if want == after_delay:  # the delay ends inside the best hour: it goes then (the scheduler's clock, a few ms on)
        assert timedelta(0) <= due - want < timedelta(seconds=5)
    else:
        assert due == want and due.astimezone(zone).minute == 0
    assert due.astimezone(zone).hour == 19  # the hour this user's sessions favour


async def test_a_scheduled_occurrence_sends_each_user_at_their_best_hour(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    await users(sessions, workspace_id)
    wall = EARLIEST.replace(tzinfo=None)
    campaign_id = await campaign(
        sessions, workspace_id, trigger=None, schedule={"at": wall.isoformat(), "local_time": False},
        delivery={"intelligent_timing": True},
    )
    async with unit_of_work(sessions) as s:
        s.add(Occurrence(id=f"{campaign_id}@{wall.isoformat()}", workspace_id=workspace_id, campaign_id=campaign_id,
                         wall_at=wall, due_at=EARLIEST, status="pending"))
    assert await service.decide_due_occurrences(sessions, EARLIEST, workspace_id) == len(USERS)
    assert await due_times(sessions, campaign_id) == expected(EARLIEST)


async def test_intelligent_timing_is_a_campaign_delivery_option(workspace_id: str, infra: Any) -> None:
    async with running(build_scheduler, scheduler_settings, workspace_id) as api:
        body = {"name": "Back in stock", "channel": "email", "trigger": {"event": "Product Viewed"}, "delay_seconds": 3600,
                "delivery": {"intelligent_timing": True}, "message": {"subject": "Back", "body": "In stock again"}}
        r = await api.post("/api/v1/campaigns", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["delivery"] == {"intelligent_timing": True}
        r = await api.post("/api/v1/campaigns", json=body | {"delivery": {"intelligent_timing": "sometimes"}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-2:] == ["delivery", "intelligent_timing"], r.text
