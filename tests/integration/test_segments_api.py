"""The segments management API as a tool uses it: pages of segments with filters, edits that store the
members again, archiving, a filter's preview and reach before it is saved, and a user's segments. The
segmenter runs in-process on the session's PostgreSQL and NATS; profiles are written into its tables."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import AudienceQuery
from kernel.db import unit_of_work
from services.profiles.models import Device, Profile
from services.segmenter import service
from services.segmenter.app import build
from services.segmenter.config import get_settings
from services.segmenter.models import Membership, Segment
from tests.conftest import eventually
from tests.integration.helpers import person, running


def city(name: str) -> dict[str, Any]:
    return {"trait": "city", "op": "eq", "value": name}


@pytest.fixture
async def api(workspace_id: str, infra: Any) -> AsyncIterator[httpx.AsyncClient]:
    # The background backfill looks for computing segments only when woken (a test marks one computing).
    async with running(build, get_settings, workspace_id, HERALD_SEGMENT_BACKFILL_POLL_SECONDS="3600") as client:
        yield client


async def members(sessions: async_sessionmaker[AsyncSession], segment_id: str) -> set[str]:
    async with unit_of_work(sessions) as s:
        return set(await s.scalars(select(Membership.profile_id).where(Membership.segment_id == segment_id)))


async def device(sessions: async_sessionmaker[AsyncSession], workspace_id: str, profile_id: str, push: bool) -> None:
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Device).values(
            workspace_id=workspace_id, device_id=uuid.uuid4().hex, profile_id=profile_id, platform="ios",
            push_token=uuid.uuid4().hex if push else None, push_enabled=push, last_seen=datetime.now(UTC), times={},
        ))


async def made(api: httpx.AsyncClient, name: str, filter_: dict[str, Any]) -> dict[str, Any]:
    r = await api.post("/api/v1/segments", json={"name": name, "filter": filter_})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_segments_are_listed_newest_first_a_page_at_a_time_without_repeats(api: httpx.AsyncClient) -> None:
    ids = [(await made(api, f"Segment {i}", city(f"c{i}")))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        r = await api.get("/api/v1/segments", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["segments"]) <= 2
        seen += [s["id"] for s in page["segments"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    # A segment made after the first page was read is on no later page, and nothing repeats.
    first = (await api.get("/api/v1/segments", params={"limit": 2})).json()
    await made(api, "Later", city("later"))
    rest = (await api.get("/api/v1/segments", params={"limit": 10, "cursor": first["next_cursor"]})).json()
    assert [s["id"] for s in rest["segments"]] == list(reversed(ids))[2:]


async def test_lists_filter_by_name_status_and_creation_time(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    oslo = await made(api, "Oslo 100% fans", city("Oslo"))
    rome = await made(api, "Rome_lovers", city("Rome"))

    async def backfilled() -> bool:  # the segmenter's background backfill marks both ready
        async with sessions() as s:
            return all(r is not None for r in await s.scalars(select(Segment.ready_at).where(Segment.id.in_([oslo["id"], rome["id"]]))))

    await eventually(backfilled)
    async with unit_of_work(sessions) as s:
        await s.execute(update(Segment).where(Segment.id == oslo["id"]).values(created_at=datetime(2025, 1, 1, tzinfo=UTC)))

    async def listed(**params: Any) -> list[str]:
        r = await api.get("/api/v1/segments", params=params)
        assert r.status_code == 200, r.text
        return [s["name"] for s in r.json()["segments"]]

    # One computing segment, as a big workspace's new one would be. The running segmenter's backfill would finish
    # it again; it skips a locked segment, so the row stays locked (in `held`) while the lists are read.
    async with sessions() as held:  # its transaction begins with the lock and ends when the test does
        for _ in range(5):
            async with unit_of_work(sessions) as s:
                await s.execute(update(Segment).where(Segment.id == rome["id"]).values(ready_at=None))
            if await held.scalar(select(Segment.ready_at).where(Segment.id == rome["id"]).with_for_update()) is None:
                break
            await held.rollback()  # the backfill got there between the two statements: again
        assert await listed(query="OSLO") == ["Oslo 100% fans"]
        assert await listed(query="100%") == ["Oslo 100% fans"]  # % and _ are literal
        assert await listed(query="0%") == ["Oslo 100% fans"]
        assert await listed(query="e_l") == ["Rome_lovers"]
        assert await listed(query="%") == ["Oslo 100% fans"]
        assert await listed(status="computing") == ["Rome_lovers"]
        assert await listed(status=["computing", "ready"]) == ["Rome_lovers", "Oslo 100% fans"]
        assert await listed(status="ready") == ["Oslo 100% fans"]
        assert await listed(created_before="2025-06-01T00:00:00Z") == ["Oslo 100% fans"]
        assert await listed(created_after="2025-06-01T00:00:00") == ["Rome_lovers"]  # no zone: UTC


@pytest.mark.parametrize(
    "params, loc",
    [
        ({"cursor": "nonsense"}, ["query", "cursor"]),
        ({"cursor": "c1.bm90IGpzb24"}, ["query", "cursor"]),
        ({"cursor": "c1.WyJ4IiwgInkiXQ"}, ["query", "cursor"]),  # ["x", "y"]: no time
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 501}, ["query", "limit"]),
        ({"status": "gone"}, ["query", "status", 0]),
        ({"archived": "maybe"}, ["query", "archived"]),
        ({"query": "a\x00b"}, ["query", "query"]),
        ({"created_after": "yesterday"}, ["query", "created_after"]),
        ({"created_before": "0001-01-01T00:00:00+05:00"}, ["query", "created_before"]),
    ],
)
async def test_a_bad_list_parameter_is_a_422_naming_it(api: httpx.AsyncClient, params: dict[str, Any], loc: list[Any]) -> None:
    r = await api.get("/api/v1/segments", params=params)
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [loc]


async def test_a_new_filter_stores_the_members_again_as_creation_does(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    in_oslo = await person(sessions, workspace_id, {"city": "Oslo"})
    in_rome = await person(sessions, workspace_id, {"city": "Rome"})
    segment = await made(api, "Oslo", city("Oslo"))
    assert await members(sessions, segment["id"]) == {in_oslo}

    renamed = await api.patch(f"/api/v1/segments/{segment['id']}", json={"name": "Oslo people"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Oslo people" and renamed.json()["filter"] == city("Oslo")
    assert await members(sessions, segment["id"]) == {in_oslo}

    moved = await api.patch(f"/api/v1/segments/{segment['id']}", json={"filter": city("Rome")})
    assert moved.status_code == 200, moved.text
    assert moved.json()["filter"] == city("Rome") and moved.json()["size"] == 1 and moved.json()["status"] == "ready"
    assert moved.json()["updated_at"] > moved.json()["created_at"]
    assert await members(sessions, segment["id"]) == {in_rome}


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"nmae": "typo"}, ["body", "nmae"]),
        ({"name": "x", "filter": {"trait": "city", "op": "eq", "value": "Oslo", "extra": 1}}, ["filter"]),
        ({"filter": {"trait": "city", "op": "equals", "value": "Oslo"}}, ["filter", "op"]),
        ({"name": ""}, ["body", "name"]),
        ({"name": "a\x00b"}, ["body", "name"]),
    ],
)
async def test_a_bad_edit_is_a_422_naming_the_field(api: httpx.AsyncClient, body: dict[str, Any], loc: list[str]) -> None:
    segment = await made(api, "Oslo", city("Oslo"))
    r = await api.patch(f"/api/v1/segments/{segment['id']}", json=body)
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [loc]
    assert (await api.get(f"/api/v1/segments/{segment['id']}")).json()["name"] == "Oslo"


async def test_unknown_fields_in_a_new_segment_are_refused(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/segments", json={"name": "x", "filter": city("Oslo"), "fliter": {}})
    assert r.status_code == 422 and [d["loc"] for d in r.json()["detail"]] == [["body", "fliter"]], r.text


async def test_an_archived_segment_leaves_lists_matches_nobody_and_can_come_back(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    ada = await person(sessions, workspace_id, {"city": "Oslo"})
    segment = await made(api, "Oslo", city("Oslo"))
    archived = await api.post(f"/api/v1/segments/{segment['id']}/archive")
    assert archived.status_code == 200, archived.text
    assert archived.json()["archived_at"] is not None and archived.json()["size"] == 0
    assert await members(sessions, segment["id"]) == set()
    assert (await api.post(f"/api/v1/segments/{segment['id']}/archive")).json()["archived_at"] == archived.json()["archived_at"]

    def names(r: httpx.Response) -> list[str]:
        return [s["id"] for s in r.json()["segments"]]

    assert segment["id"] not in names(await api.get("/api/v1/segments"))
    assert segment["id"] in names(await api.get("/api/v1/segments", params={"archived": "include"}))
    assert names(await api.get("/api/v1/segments", params={"archived": "only"})) == [segment["id"]]
    assert (await api.get(f"/api/v1/segments/{segment['id']}")).json()["archived_at"] is not None
    async with unit_of_work(sessions) as s:
        answer = await service.check_member(s, AudienceQuery(workspace_id=workspace_id, segment_id=segment["id"], profile_id=ada))
        assert (answer.member, answer.archived) == (False, True)
        assert segment["id"] not in [m.segment.id for m in await service.segments_of_user(s, workspace_id, ada)]
    edit = await api.patch(f"/api/v1/segments/{segment['id']}", json={"name": "x"})
    assert edit.status_code == 409 and "archived" in edit.json()["detail"], edit.text

    back = await api.post(f"/api/v1/segments/{segment['id']}/unarchive")
    assert back.status_code == 200 and back.json()["archived_at"] is None and back.json()["size"] == 1, back.text
    assert await members(sessions, segment["id"]) == {ada}


async def test_a_filter_is_previewed_with_its_reach_before_it_is_saved(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    people = {
        "ada": {"city": "Oslo", "email": "ada@example.com"},
        "bo": {"city": "Oslo", "email": "not an address"},
        "cy": {"city": "Oslo"},
        "di": {"city": "Rome", "email": "di@example.com"},
    }
    ids = {}
    for user_id, traits in people.items():
        ids[user_id] = await person(sessions, workspace_id, traits)
        async with unit_of_work(sessions) as s:
            await s.execute(update(Profile).where(Profile.profile_id == ids[user_id]).values(user_id=user_id))
    await device(sessions, workspace_id, ids["cy"], push=True)
    await device(sessions, workspace_id, ids["bo"], push=False)
    await person(sessions, workspace_id, {"city": "Oslo"})  # an anonymous member: counted, not listed
    async with unit_of_work(sessions) as s:
        await s.execute(update(Profile).where(Profile.workspace_id == workspace_id, Profile.user_id.not_in(list(people)))
                        .values(user_id=None))

    r = await api.post("/api/v1/segments/preview", json={"filter": city("Oslo"), "limit": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"user_ids": ["ada", "bo"], "count": 4, "reach": {"size": 4, "email": 1, "push": 1}}
    assert (await api.get("/api/v1/segments")).json()["segments"] == []  # nothing was saved

    segment = await made(api, "Oslo", city("Oslo"))
    reach = await api.get(f"/api/v1/segments/{segment['id']}/reach")
    assert reach.json() == {"segment_id": segment["id"], "size": 4, "email": 1, "push": 1}


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"filter": city("Oslo"), "limt": 3}, ["body", "limt"]),
        ({"filter": city("Oslo"), "limit": 101}, ["body", "limit"]),
        ({"filter": {"trait": "city", "op": "eq"}}, ["filter", "value"]),
        ({"filter": {"all": []}}, ["filter", "all"]),
        ({}, ["body", "filter"]),
    ],
)
async def test_a_bad_preview_is_a_422_naming_the_field(api: httpx.AsyncClient, body: dict[str, Any], loc: list[str]) -> None:
    r = await api.post("/api/v1/segments/preview", json=body)
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]][:1] == [loc]


async def test_a_user_s_segments_are_the_live_ones_they_match(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    ada = await person(sessions, workspace_id, {"city": "Oslo", "plan": "pro"})
    oslo = await made(api, "Oslo", city("Oslo"))
    pro = await made(api, "Pro", {"trait": "plan", "op": "eq", "value": "pro"})
    await made(api, "Rome", city("Rome"))
    gone = await made(api, "Also Oslo", city("Oslo"))
    await api.post(f"/api/v1/segments/{gone['id']}/archive")

    r = await api.get(f"/api/v1/users/{ada}/segments")  # `person` makes the user id the profile id
    assert r.status_code == 200, r.text
    assert [(s["segment_id"], s["name"]) for s in r.json()["segments"]] == [(pro["id"], "Pro"), (oslo["id"], "Oslo")]
    assert all(s["entered_at"] is not None for s in r.json()["segments"])
    assert (await api.get("/api/v1/users/nobody/segments")).status_code == 404
    assert (await api.get("/api/v1/users/a%00b/segments")).status_code == 404


async def test_unknown_segments_are_404_for_every_route(api: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("GET", "/api/v1/segments/seg_nope", None),
        ("PATCH", "/api/v1/segments/seg_nope", {"name": "x"}),
        ("POST", "/api/v1/segments/seg_nope/archive", None),
        ("POST", "/api/v1/segments/seg_nope/unarchive", None),
        ("GET", "/api/v1/segments/seg_nope/reach", None),
    ]:
        r = await api.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
