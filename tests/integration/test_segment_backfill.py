"""A new segment over many profiles answers at once; its members are stored in the background, in
chunks, without a stale membership or an "entered" for someone who was in it from the start."""

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import ProfileChanged
from kernel.db import unit_of_work
from services.profiles.models import Profile
from services.segmenter import service
from services.segmenter.app import build
from services.segmenter.config import get_settings
from services.segmenter.models import Membership, Segment
from tests.conftest import eventually
from tests.integration.helpers import person, running

OSLO = {"trait": "city", "op": "eq", "value": "Oslo"}


async def population(sessions: async_sessionmaker[AsyncSession], workspace_id: str, cities: list[str]) -> list[str]:
    return [await person(sessions, workspace_id, {"city": city}) for city in cities]


async def members(sessions: async_sessionmaker[AsyncSession], segment_id: str) -> set[str]:
    async with unit_of_work(sessions) as s:
        return set(await s.scalars(select(Membership.profile_id).where(Membership.segment_id == segment_id)))


async def state(sessions: async_sessionmaker[AsyncSession], segment_id: str) -> Segment:
    async with unit_of_work(sessions) as s:
        found = await s.get(Segment, segment_id)
        assert found is not None
        return found


async def backfill_all(sessions: async_sessionmaker[AsyncSession], chunk: int) -> int:
    steps = 0
    while await service.backfill_next(sessions, chunk):
        steps += 1
    return steps


def changed(workspace_id: str, profile_id: str) -> ProfileChanged:
    return ProfileChanged(workspace_id=workspace_id, profile_id=profile_id, user_id=profile_id, cause_message_id=uuid.uuid4().hex)


async def test_a_segment_over_more_than_one_chunk_is_computing_then_ready_with_exactly_its_members(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    ids = await population(sessions, workspace_id, ["Oslo", "Rome", "Oslo", "Oslo", "Rome", "Oslo", "Bergen"])
    oslo = {p for p, city in zip(ids, ["Oslo", "Rome", "Oslo", "Oslo", "Rome", "Oslo", "Bergen"], strict=True) if city == "Oslo"}
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Oslo", OSLO, chunk=3)
        assert segment.status == "computing" and await service.size(s, segment) == 4  # the size is live at once
    assert await members(sessions, segment.id) < oslo  # only the first chunk so far

    assert await backfill_all(sessions, chunk=3) >= 2
    assert await members(sessions, segment.id) == oslo
    done = await state(sessions, segment.id)
    assert done.status == "ready" and done.ready_at is not None


async def test_a_small_workspace_s_segment_is_ready_at_once(sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> None:
    ids = await population(sessions, workspace_id, ["Oslo", "Rome"])
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Oslo", OSLO, chunk=10)
    assert segment.status == "ready" and await members(sessions, segment.id) == {ids[0]}


async def test_changes_while_computing_keep_members_right_and_announce_nothing_until_ready(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    ids = sorted(await population(sessions, workspace_id, ["Oslo"] * 4))
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Oslo", OSLO, chunk=1)
    assert segment.status == "computing"
    # The last profile (not yet backfilled) leaves Oslo, and its change is applied before its chunk.
    async with unit_of_work(sessions) as s:
        await s.execute(update(Profile).where(Profile.profile_id == ids[-1]).values(traits={"city": "Rome"}))
        assert await service.reevaluate_many(s, [changed(workspace_id, ids[-1]), changed(workspace_id, ids[1])]) == []
    assert await backfill_all(sessions, chunk=1) >= 3
    assert await members(sessions, segment.id) == set(ids[:-1])  # no stale membership from a stale read

    # Ready: changes are announced again.
    async with unit_of_work(sessions) as s:
        await s.execute(update(Profile).where(Profile.profile_id == ids[0]).values(traits={"city": "Rome"}))
        announced = await service.reevaluate_many(s, [changed(workspace_id, ids[0])])
    assert [(m.segment_id, m.profile_id, m.change) for m in announced] == [(segment.id, ids[0], "exited")]


async def test_the_api_answers_computing_and_the_service_finishes_in_the_background(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    ids = await population(sessions, workspace_id, ["Oslo", "Oslo", "Rome", "Oslo", "Oslo"])
    async with running(build, get_settings, workspace_id, HERALD_SEGMENT_BACKFILL_CHUNK="2", HERALD_SEGMENT_BACKFILL_POLL_SECONDS="60") as client:
        r = await client.post("/api/v1/segments", json={"name": "Oslo", "filter": OSLO})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "computing" and created["size"] == 4

        async def ready() -> bool:  # woken by the creation: the poll (60 s) is not what finishes it
            return (await client.get(f"/api/v1/segments/{created['id']}")).json()["status"] == "ready"

        await eventually(ready, timeout=20)
    assert await members(sessions, created["id"]) == {p for p, c in zip(ids, "OORO O".replace(" ", ""), strict=True) if c == "O"}
