"""Time passing changes segments with no event: the sweep re-evaluates the segments whose conditions read
the clock, and members exit (and enter) with `exited` / `entered` published as for any change.

The sweep takes `now`, so days pass in the test without waiting for them."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import make_engine, make_sessionmaker, unit_of_work
from kernel.outbox import Outbox
from services.profiles.models import StoredEvent
from services.segmenter import models, service
from services.segmenter.models import Membership, Segment
from tests.conftest import Infra
from tests.integration.helpers import person

DAY = timedelta(days=1)
EVERY = timedelta(minutes=5)


async def opened(sessions: async_sessionmaker[AsyncSession], workspace_id: str, profile_id: str, at: datetime) -> None:
    """An `App Opened` on the profile's timeline at `at`."""
    async with unit_of_work(sessions) as s:
        await s.execute(insert(StoredEvent).values(
            workspace_id=workspace_id, message_id=uuid.uuid4().hex, profile_id=profile_id, type="track",
            name="App Opened", properties={}, traits={}, context={}, timestamp=at, received_at=at,
        ))


async def members(sessions: async_sessionmaker[AsyncSession], segment: Segment) -> set[str]:
    async with unit_of_work(sessions) as s:
        return set(await s.scalars(select(Membership.profile_id).where(Membership.segment_id == segment.id)))


async def sweep(sessions: async_sessionmaker[AsyncSession], nc: NATS, now: datetime, chunk: int = 1000) -> None:
    """Run sweeps as of `now` until none is due."""
    while await service.sweep_next(sessions, nc.jetstream(), Outbox(models.outbox), EVERY, chunk, now=now):
        pass


class Announced:
    """Every membership change published for a workspace, duplicates included: a core subscription sees
    each publish, even one JetStream would de-duplicate."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub

    async def next(self, n: int = 1) -> list[tuple[str, str, str | None]]:
        """The next `n` changes as (profile, change, user id), waiting for each."""
        got = [orjson.loads((await self.sub.next_msg(timeout=5)).data) for _ in range(n)]
        return [(m["profile_id"], m["change"], m["user_id"]) for m in got]

    async def none_more(self) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await self.sub.next_msg(timeout=0.3)


@pytest.fixture
async def announced(nc: NATS, workspace_id: str) -> AsyncIterator[Announced]:
    sub = await nc.subscribe(f"segments.membership.{workspace_id}")
    yield Announced(sub)
    await sub.unsubscribe()


async def test_a_member_of_a_window_exits_when_time_moves_it_out(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str, announced: Announced
) -> None:
    now = datetime.now(UTC)
    ada, bo = await person(sessions, workspace_id, {}), await person(sessions, workspace_id, {})
    await opened(sessions, workspace_id, ada, now - 5 * DAY)
    await opened(sessions, workspace_id, bo, now - DAY)
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Opened this week", {"event": "App Opened", "within_days": 7})
    assert segment.sweep_due_at is not None and await members(sessions, segment) == {ada, bo}

    await sweep(sessions, nc, now + DAY)  # Ada's open is 6 days old: still in
    assert await members(sessions, segment) == {ada, bo}

    await sweep(sessions, nc, now + 3 * DAY)  # 8 days old: out; Bo's is 4 days old
    assert await announced.next() == [(ada, "exited", ada)]  # the first change announced at all
    assert await members(sessions, segment) == {bo}

    await sweep(sessions, nc, now + 3 * DAY + EVERY)  # the next sweep finds nothing new to say
    await announced.none_more()


async def test_a_profile_enters_when_a_date_it_holds_becomes_old_enough(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str, announced: Announced
) -> None:
    now = datetime.now(UTC)
    new = await person(sessions, workspace_id, {"signed_up_at": (now - 5 * DAY).isoformat()})
    tree = {"trait": "signed_up_at", "op": "more_than_days_ago", "value": 7}
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Signed up over a week ago", tree)
    assert await members(sessions, segment) == set()

    await sweep(sessions, nc, now + 3 * DAY)
    assert await announced.next() == [(new, "entered", new)]
    assert await members(sessions, segment) == {new}


async def test_replicas_share_a_sweep_and_announce_each_change_once(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str, announced: Announced, infra: Infra
) -> None:
    now = datetime.now(UTC)
    people = [await person(sessions, workspace_id, {}) for _ in range(6)]
    for p in people:
        await opened(sessions, workspace_id, p, now - 6 * DAY)
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Opened this week", {"event": "App Opened", "within_days": 7})
    assert await members(sessions, segment) == set(people)

    engines = [make_engine(infra.database_url, pool_size=2) for _ in range(2)]
    try:
        # Two replicas, one profile per transaction: each chunk is claimed by one of them.
        await asyncio.gather(*(sweep(make_sessionmaker(e), nc, now + 2 * DAY, chunk=1) for e in engines))
    finally:
        for e in engines:
            await e.dispose()
    assert sorted(await announced.next(len(people))) == sorted((p, "exited", p) for p in people)
    await announced.none_more()
    assert await members(sessions, segment) == set()


async def test_only_segments_that_read_the_clock_are_swept(sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> None:
    timeless = [{"trait": "plan", "op": "eq", "value": "pro"}, {"event": "App Opened", "count": {"gte": 3}},
                {"trait": "signed_up_at", "op": "after", "value": "2026-01-01"}]
    timely = [{"computed": "last_seen", "op": "more_than_days_ago", "value": 30},
              {"not": {"device": "ios", "within_days": 14}},
              {"event": "Order Completed", "where": [{"property": "delivered_at", "op": "within_last_days", "value": 2}]}]
    async with unit_of_work(sessions) as s:
        made = [await service.create_segment(s, workspace_id, "s", tree) for tree in timeless + timely]
    assert [m.sweep_due_at is not None for m in made] == [False] * len(timeless) + [True] * len(timely)


async def test_a_segment_whose_sweep_fails_waits_a_period_and_holds_back_no_other(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str, announced: Announced,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    ada = await person(sessions, workspace_id, {})
    await opened(sessions, workspace_id, ada, now - 6 * DAY)
    async with unit_of_work(sessions) as s:
        broken = await service.create_segment(s, workspace_id, "first made", {"event": "App Opened", "within_days": 7})
        fine = await service.create_segment(s, workspace_id, "made next", {"event": "App Opened", "within_days": 7})
    real_step = service.sweep_step

    async def step(session: AsyncSession, segment: Segment, *args: Any) -> Any:
        if segment.id == broken.id:
            raise RuntimeError("a bug in this one segment")
        return await real_step(session, segment, *args)

    monkeypatch.setattr(service, "sweep_step", step)
    later = now + 2 * DAY
    await sweep(sessions, nc, later)  # ends: the broken one is put off, not retried in a loop
    assert await announced.next() == [(ada, "exited", ada)]
    assert await members(sessions, fine) == set() and await members(sessions, broken) == {ada}
    async with unit_of_work(sessions) as s:
        postponed = await s.get(Segment, broken.id)
        assert postponed is not None and postponed.sweep_due_at == later + EVERY
