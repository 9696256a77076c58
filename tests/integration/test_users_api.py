"""Listing and searching users (the profiles service): newest first, a page at a time, by the start of a
user id, an alias, an anonymous id or an email in any case; never another workspace's users."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.profiles.app import build
from services.profiles.config import get_settings
from services.profiles.models import Identity, Profile
from tests.integration.helpers import running

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def api(workspace_id: str, infra: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build, get_settings, workspace_id) as client:
        yield client


async def user(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str, user_id: str | None, minutes: int,
    traits: dict[str, Any] | None = None, anonymous: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
) -> str:
    """A profile created `minutes` after T0, with its identities."""
    profile_id = f"p_{uuid.uuid4().hex}"
    at = T0 + timedelta(minutes=minutes)
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile).values(
            workspace_id=workspace_id, profile_id=profile_id, user_id=user_id, traits=traits or {}, trait_times={},
            first_seen=at, last_seen=at, created_at=at,
        ))
        ids = [("user", v) for v in ((user_id,) if user_id else ()) + aliases] + [("anonymous", v) for v in anonymous]
        for kind, value in ids:
            await s.execute(insert(Identity).values(workspace_id=workspace_id, kind=kind, value=value, profile_id=profile_id))
    return profile_id


async def listed(api: httpx.AsyncClient, **params: Any) -> list[str | None]:
    r = await api.get("/api/v1/users", params=params)
    assert r.status_code == 200, r.text
    return [u["user_id"] for u in r.json()["users"]]


async def test_users_are_listed_newest_first_a_page_at_a_time(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    for i in range(5):
        await user(sessions, workspace_id, f"u{i}", minutes=i)
    await user(sessions, workspace_id, None, minutes=10, anonymous=("anon-1",))
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await api.get("/api/v1/users", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += r.json()["users"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert [u["user_id"] for u in seen] == [None, "u4", "u3", "u2", "u1", "u0"]
    assert seen[0]["anonymous_ids"] == ["anon-1"]
    assert seen[1]["created_at"].startswith("2026-01-01T00:04:00")


async def test_users_are_found_by_the_start_of_any_of_their_ids_or_their_email(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    await user(sessions, workspace_id, "ada-lovelace", 1, {"email": "Ada@Example.com"}, anonymous=("dev-123",))
    await user(sessions, workspace_id, "grace", 2, {"email": "grace@navy.mil"}, aliases=("admiral_h",))
    await user(sessions, workspace_id, "100%_done", 3, {"email": 42})
    await user(sessions, workspace_id, "ünïcode", 4)
    assert await listed(api, query="ada") == ["ada-lovelace"]
    assert await listed(api, query="ADA@example") == ["ada-lovelace"]  # an email in any case
    assert await listed(api, query="ADA-") == []  # ids are exact
    assert await listed(api, query="dev-1") == ["ada-lovelace"]  # an anonymous id
    assert await listed(api, query="admiral") == ["grace"]  # an alias
    assert await listed(api, query="navy") == []  # a prefix, not any part
    assert await listed(api, query="100%") == ["100%_done"]
    assert await listed(api, query="%") == []  # no wildcard
    assert await listed(api, query="_") == []
    assert await listed(api, query="ün") == ["ünïcode"]
    found = (await api.get("/api/v1/users", params={"query": "grace"})).json()["users"]
    assert found[0]["email"] == "grace@navy.mil" and found[0]["anonymous_ids"] == []
    odd = (await api.get("/api/v1/users", params={"query": "100"})).json()["users"]
    assert odd[0]["email"] is None  # a trait that is no text is no email


async def test_another_workspace_s_users_are_never_listed(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    await user(sessions, f"ws_other_{uuid.uuid4().hex[:8]}", "ada", 1, {"email": "ada@example.com"})
    assert await listed(api) == []
    assert await listed(api, query="ada") == []


@pytest.mark.parametrize(
    "params, loc",
    [
        ({"query": ""}, ["query", "query"]),
        ({"query": "a\x00"}, ["query", "query"]),
        ({"query": "x" * 201}, ["query", "query"]),
        ({"cursor": "c1.!!"}, ["query", "cursor"]),
        ({"limit": "many"}, ["query", "limit"]),
    ],
)
async def test_a_bad_parameter_is_a_422_naming_it(api: httpx.AsyncClient, params: dict[str, Any], loc: list[str]) -> None:
    r = await api.get("/api/v1/users", params=params)
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [loc]
