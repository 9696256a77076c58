"""Exporting a person on the real NATS and PostgreSQL: one JSON document with the profile, identities, devices,
events, the other tables the profiles service keeps on them, segment memberships, sends and deliveries (asked of
the segmenter, scheduler and dispatcher over NATS); streamed through the gateway (never buffered there); a
100,000-event history written a chunk at a time in bounded memory; another workspace's key finds nobody; a part
whose service does not answer is named, the document still whole JSON."""

import asyncio
import contextlib
import json
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from nats.aio.client import Client as NATS
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import build as build_gateway
from gateway.config import get_settings as gateway_settings
from herald.infra import free_port
from herald.stack import create_workspace
from kernel import bus
from kernel.contracts import Event
from kernel.db import unit_of_work
from services.dispatcher.app import build as build_dispatcher
from services.dispatcher.config import get_settings as dispatcher_settings
from services.dispatcher.inbox.models import InboxMessage
from services.dispatcher.models import Delivery
from services.profiles.app import build as build_profiles
from services.profiles.config import get_settings as profiles_settings
from services.profiles.privacy import service as privacy
from services.profiles.repository import get_profile
from services.scheduler.app import build as build_scheduler
from services.scheduler.config import get_settings as scheduler_settings
from services.scheduler.models import ScheduledSend
from services.scheduler.results.models import Conversion
from services.segmenter.app import build as build_segmenter
from services.segmenter.config import get_settings as segmenter_settings
from services.segmenter.models import Membership, Segment
from tests.conftest import Infra, eventually
from tests.integration.helpers import running

T0 = datetime.now(UTC) - timedelta(days=2)


def event(workspace_id: str, **fields: Any) -> Event:
    return Event(workspace_id=workspace_id, message_id=uuid.uuid4().hex, timestamp=T0, received_at=T0, **fields)


@pytest.fixture
async def profiles(workspace_id: str, infra: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build_profiles, profiles_settings, workspace_id) as client:
        yield client


@contextlib.asynccontextmanager
async def the_others(workspace_id: str) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for build, settings in ((build_segmenter, segmenter_settings), (build_scheduler, scheduler_settings),
                                (build_dispatcher, dispatcher_settings)):
            await stack.enter_async_context(running(build, settings, workspace_id))
        yield


async def a_person(profiles: httpx.AsyncClient, nc: NATS, sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> dict[str, Any]:
    """Ada: a phone, two events, a membership, a send and its delivery."""
    await bus.publish_contracts(nc.jetstream(), [
        event(workspace_id, type="identify", user_id="ada", anonymous_id="anon-1", traits={"email": "ada@example.com"},
              context={"device": {"id": "dev-1", "type": "android", "token": "tok-1"}}),
        event(workspace_id, type="track", user_id="ada", event="Played", properties={"level": 7}),
    ])

    async def found() -> dict[str, Any] | None:
        r = await profiles.get("/api/v1/users/ada")
        return r.json() if r.status_code == 200 and r.json()["computed"]["event_counts"].get("Played") else None

    ada = await eventually(found, timeout=20, interval=0.2)
    pid = ada["profile_id"]
    async with unit_of_work(sessions) as s:
        s.add(Segment(id=f"seg_{workspace_id}", workspace_id=workspace_id, name="Players", filter={}))
        await s.flush()
        s.add(Membership(workspace_id=workspace_id, segment_id=f"seg_{workspace_id}", profile_id=pid, user_id="ada"))
        s.add(ScheduledSend(send_id=f"snd_{workspace_id}", workspace_id=workspace_id, campaign_id="cmp_1", profile_id=pid,
                            user_id="ada", channel="email", status="requested", trigger={"name": "Played"},
                            triggered_at=T0, due_at=T0))
        await s.execute(insert(Delivery).values(
            send_id=f"snd_{workspace_id}", workspace_id=workspace_id, campaign_id="cmp_1", profile_id=pid, user_id="ada",
            channel="email", status="sent", attempts=1, recipient="ada@example.com", subject="Level 7!",
        ))
        s.add(Conversion(campaign_id="cmp_1", profile_id=pid, workspace_id=workspace_id, user_id="ada",
                         send_id=f"snd_{workspace_id}", message_id="order-1", opened_at=T0, converted_at=T0))
        s.add(InboxMessage(send_id=f"snd_card_{workspace_id}", workspace_id=workspace_id, profile_id=pid, user_id="ada",
                           campaign_id="cmp_2", channel="content_card", content={"title": "Hi Ada"}, sent_at=T0,
                           expires_at=T0 + timedelta(days=30)))
    return ada


async def test_the_export_holds_everything_herald_keeps_on_the_person(
    profiles: httpx.AsyncClient, nc: NATS, sessions: async_sessionmaker[AsyncSession], workspace_id: str,
) -> None:
    ada = await a_person(profiles, nc, sessions, workspace_id)
    async with the_others(workspace_id):
        r = await profiles.get("/api/v1/users/ada/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert doc["user_id"] == "ada" and doc["profile"]["profile_id"] == ada["profile_id"]
    assert doc["profile"]["traits"]["email"] == "ada@example.com"
    assert [d["device_id"] for d in doc["profile"]["devices"]] == ["dev-1"]
    assert {(i["kind"], i["value"]) for i in doc["identities"]} == {("user", "ada"), ("anonymous", "anon-1")}
    assert ("Played", {"level": 7}) in [(e["name"], e["properties"]) for e in doc["events"]]
    assert len(doc["events"]) == 2 and all("workspace_id" not in e for e in doc["events"])
    assert [(m["segment_id"], m["segment_name"]) for m in doc["memberships"]] == [(f"seg_{workspace_id}", "Players")]
    assert [(s["send_id"], s["status"]) for s in doc["sends"]] == [(f"snd_{workspace_id}", "requested")]
    assert [(d["recipient"], d["subject"]) for d in doc["deliveries"]] == [("ada@example.com", "Level 7!")]
    assert [(c["campaign_id"], c["message_id"]) for c in doc["conversions"]] == [("cmp_1", "order-1")]
    assert [m["content"] for m in doc["inbox_messages"]] == [{"title": "Hi Ada"}]
    assert doc["incomplete"] == []
    for table in ("devices", "events"):  # shown in their own sections, not again as tables
        assert not isinstance(doc.get(table), dict)

    # Without the other services, their parts are named as missing and the document is still whole.
    r = await profiles.get("/api/v1/users/ada/export")
    assert r.status_code == 200
    assert {p["part"] for p in r.json()["incomplete"]} == {"memberships", "sends", "conversions", "deliveries", "inbox_messages"}


async def test_export_of_someone_else_or_nobody_is_404_and_bad_input_4xx(profiles: httpx.AsyncClient) -> None:
    r = await profiles.get("/api/v1/users/nobody/export")
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
    r = await profiles.get("/api/v1/users/nobody/export", params={"by": "device"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "by", r.text


async def test_a_long_history_is_written_a_chunk_at_a_time_in_bounded_memory(
    profiles: httpx.AsyncClient, nc: NATS, sessions: async_sessionmaker[AsyncSession], workspace_id: str,
) -> None:
    await bus.publish_contracts(nc.jetstream(), [event(workspace_id, type="identify", user_id="zoe")])

    async def found() -> dict[str, Any] | None:
        r = await profiles.get("/api/v1/users/zoe")
        return r.json() if r.status_code == 200 else None

    pid = (await eventually(found, timeout=20, interval=0.2))["profile_id"]
    n = 100_000
    async with unit_of_work(sessions) as s:
        await s.execute(text(
            "INSERT INTO profiles.events (workspace_id, message_id, profile_id, type, name, user_id, properties, traits, "
            "context, timestamp, received_at) SELECT :ws, 'm' || i, :pid, 'track', 'Step', 'zoe', "
            "jsonb_build_object('i', i, 'note', repeat('x', 200)), '{}', '{}', CAST(:t0 AS timestamptz) + i * interval '1 second', CAST(:t0 AS timestamptz) "
            "FROM generate_series(1, :n) AS i"
        ), {"ws": workspace_id, "pid": pid, "t0": T0, "n": n})
    async with unit_of_work(sessions) as s:
        profile = await get_profile(s, workspace_id, pid)
    assert profile is not None
    chunks, total, largest = 0, 0, 0
    tracemalloc.start()
    try:
        parts = []
        async for chunk in privacy.export(sessions, nc, profile, "USD"):
            chunks += 1
            total += len(chunk)
            largest = max(largest, len(chunk))
            if chunks < 3:
                parts.append(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 25_000_000 and chunks > n // 500  # some 25 MB, written as hundreds of chunks
    assert largest < 1_000_000, largest  # no chunk holds more than one page of events
    assert peak < total / 4, (peak, total)  # never the whole history in memory at once


@pytest.fixture
async def profiles_over_http(workspace_id: str, infra: Infra) -> AsyncIterator[str]:
    """The profiles service on a real port (so the gateway's answer from it arrives as a stream)."""
    port = free_port()
    profiles_settings.cache_clear()
    server = uvicorn.Server(uvicorn.Config(build_profiles(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_the_gateway_streams_the_export_and_scopes_it_to_the_key_s_workspace(
    profiles_over_http: str, nc: NATS, sessions: async_sessionmaker[AsyncSession], infra: Infra,
) -> None:
    mine = await create_workspace(infra.database_url, "export")
    theirs = await create_workspace(infra.database_url, "other")
    await bus.publish_contracts(nc.jetstream(), [event(mine["workspace_id"], type="identify", user_id="ada",
                                                       traits={"first_name": "Ada"})])
    os.environ["HERALD_PROFILES_URL"] = profiles_over_http
    gateway_settings.cache_clear()
    try:
        gateway = build_gateway()
        async with gateway.router.lifespan_context(gateway):
            transport = httpx.ASGITransport(app=gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=20) as client:
                async def exported() -> httpx.Response | None:
                    r = await client.get("/api/v1/users/ada/export", headers={"authorization": f"Bearer {mine['api_key']}"})
                    return r if r.status_code == 200 else None

                r = await eventually(exported, timeout=20, interval=0.2)
                assert "content-length" not in r.headers  # relayed as it arrived, not buffered whole
                assert json.loads(r.content)["profile"]["traits"] == {"first_name": "Ada"}
                r = await client.get("/api/v1/users/ada/export", headers={"authorization": f"Bearer {theirs['api_key']}"})
                assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
                r = await client.delete("/api/v1/users/ada", headers={"authorization": f"Bearer {theirs['api_key']}"})
                assert r.status_code == 404, r.text
    finally:
        os.environ.pop("HERALD_PROFILES_URL", None)
        gateway_settings.cache_clear()
