"""Hostile input at the edge, through the real gateway and ingest (in-process) on real NATS and PostgreSQL:
never a 500, never a 200 for what a later stage cannot store or read, never a header echoed unchecked."""

import base64
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import Event
from kernel.db import unit_of_work
from kernel.logging import BUS_CORRELATION_HEADER, CORRELATION_HEADER
from kernel.settings import DatabaseSettings, HeraldSettings
from kernel.web import create_app, open_resources
from services.profiles import handlers
from services.profiles.api import router as profiles_router
from services.profiles.models import Identity, Profile, StoredEvent
from tests.conftest import as_gateway
from tests.integration.conftest import Edge, stream_of


class ProfilesApiSettings(HeraldSettings, DatabaseSettings):
    """What the profiles API needs to serve reads (no consumer: the test applies events itself)."""


def profiles_api() -> FastAPI:
    """The profiles service's HTTP API, on the session's PostgreSQL, without its bus consumer."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Open the database pool."""
        async with open_resources("profiles-api", ProfilesApiSettings()) as res:
            app.state.resources = res
            yield

    return create_app("profiles API", lifespan, [profiles_router])


@asynccontextmanager
async def reading(workspace_id: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the profiles API, speaking as the gateway for this workspace."""
    app = profiles_api()
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://profiles", auth=as_gateway(workspace_id)
        ) as client:
            yield client


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep: {"a": {"a": ... {"a": 1}}}."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_json(depth: int) -> bytes:
    """The same, written by hand (orjson refuses to write more than 254 levels)."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def user() -> str:
    """A user id nobody else uses."""
    return f"u-{uuid.uuid4().hex[:10]}"


# 1 and 2. One nested call must not stall ingest; a call nested too deep for a later stage is a 400.


async def test_a_call_nested_1023_deep_is_a_400_naming_the_path_and_ingest_keeps_answering(edge: Edge) -> None:
    deep = b'{"userId":"u1","event":"Deep","properties":' + nested_json(1022) + b"}"
    assert len(deep) < 32 * 1024
    r = await edge.send("track", deep)
    assert r.status_code == 400, r.text
    [problem] = r.json()["detail"]
    assert problem["path"].startswith("properties.a.a.a")
    assert "nested more than 32 levels" in problem["msg"]
    after = await edge.send("track", {"userId": "u1", "event": "After"})
    assert after.status_code == 200, after.text


@pytest.mark.parametrize("depth", [33, 199, 254])
async def test_a_call_nested_deeper_than_profiles_can_read_is_refused_not_lost(edge: Edge, depth: int) -> None:
    r = await edge.send("identify", b'{"userId":"u1","traits":{"doc":' + nested_json(depth) + b"}}")
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["path"].startswith("traits.doc.a.a")


async def test_a_bad_call_in_a_batch_is_dropped_naming_it_and_the_rest_is_kept(edge: Edge, nc: NATS) -> None:
    batch = {"batch": [
        {"type": "track", "userId": "u1", "event": "Fine"},
        {"type": "track", "userId": "u1", "event": "Deep", "messageId": "deep-1", "properties": {"list": [0, 1, 2, nested(40)]}},
    ]}
    async with stream_of(nc, edge.workspace_id) as sub:
        rejection = await edge.dropped("batch", batch)
        stored = Event.model_validate_json((await sub.next_msg(timeout=5)).data)
    assert stored.event == "Fine"
    assert rejection["index"] == 1 and rejection["message_id"] == "deep-1" and rejection["event"] == "Deep"
    assert rejection["reason"] == "invalid_call"
    assert rejection["errors"][0]["path"].startswith("batch[1].properties.list[3].a.a")


@pytest.mark.parametrize(
    "value", [b'"\\ud800"', b'"a\\udfffb"', b"1e400", b"-1e400", b"NaN", b"Infinity"],
    ids=["lone-high-surrogate", "lone-low-surrogate", "overflow", "negative-overflow", "nan", "infinity"],
)
async def test_values_that_are_not_json_are_a_400_whichever_way_the_key_is_sent(edge: Edge, value: bytes) -> None:
    body = b'{"userId":"u1","event":"e","properties":{"v":' + value + b"}}"
    in_header = await edge.send("track", body)
    in_body = await edge.send(
        "track", body[:-1] + b',"writeKey":"' + edge.write_key.encode() + b'"}', headers={"authorization": ""}
    )
    for r in (in_header, in_body):
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_json"


# 2 and 3. What is accepted is stored, and every stored profile can be read back.


async def accepted_then_stored(
    edge: Edge, nc: NATS, sessions: async_sessionmaker[AsyncSession], call: str, body: dict[str, Any]
) -> Event:
    """Send a call, take what JetStream stored, apply it as the profiles consumer would; the stored event."""
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send(call, body)
        assert r.status_code == 200, r.text
        msg: Msg = await sub.next_msg(timeout=5)
    event = Event.model_validate_json(msg.data)
    await handlers.on_events([bus.Received(event)], sessions, nc.jetstream())
    return event


async def test_nul_characters_are_replaced_so_the_call_is_stored(
    edge: Edge, nc: NATS, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uid = user()
    body = {"userId": uid, "traits": {"name": "Ada\u0000Lovelace", "tag\u0000": "x", "list": ["\u0000"]},
            "context": {"page": {"title": "a\u0000b"}}}
    event = await accepted_then_stored(edge, nc, sessions, "identify", body)
    assert event.traits == {"name": "Ada\ufffdLovelace", "tag\ufffd": "x", "list": ["\ufffd"]}
    async with reading(edge.workspace_id) as profiles:
        profile = await profiles.get(f"/api/v1/users/{uid}")
        timeline = await profiles.get(f"/api/v1/users/{uid}/events")
    assert profile.status_code == 200, profile.text
    assert profile.json()["traits"]["name"] == "Ada\ufffdLovelace"
    assert [e["type"] for e in timeline.json()["events"]] == ["identify"]


@pytest.mark.parametrize(
    "raw, stored",
    [
        (b"100000000000000000000", "1e+20"),  # beyond uint64: orjson reads it as a float
        (b"1e20", "1e+20"),
        (b"-18446744073709551616", "-1.8446744073709552e+19"),
        (b"18446744073709551615", "18446744073709551615"),  # 2^64 - 1: kept to the last digit
        (b"9007199254740993", "9007199254740993"),  # 2^53 + 1: JavaScript would read ...992
        (b"9007199254740991", 9007199254740991),  # 2^53 - 1: a number every reader reads alike
        (b"27.5", 27.5),
    ],
)
async def test_a_trait_beyond_what_every_reader_can_read_is_kept_as_text(
    edge: Edge, nc: NATS, sessions: async_sessionmaker[AsyncSession], raw: bytes, stored: Any
) -> None:
    uid = user()
    body = b'{"userId":"' + uid.encode() + b'","traits":{"n":' + raw + b"}}"
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send("identify", body)
        assert r.status_code == 200, r.text
        event = Event.model_validate_json((await sub.next_msg(timeout=5)).data)
    await handlers.on_events([bus.Received(event)], sessions, nc.jetstream())
    async with reading(edge.workspace_id) as profiles:
        profile = await profiles.get(f"/api/v1/users/{uid}")
    assert profile.status_code == 200, profile.text
    assert profile.json()["traits"]["n"] == stored


async def stored_before_the_limits(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str, traits: dict[str, Any], properties: dict[str, Any]
) -> str:
    """A user with these traits and one event with these properties, written as older code could have; its id."""
    uid, profile_id, now = user(), f"p_{uuid.uuid4().hex}", datetime.now(UTC)
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile).values(
            workspace_id=workspace_id, profile_id=profile_id, user_id=uid, traits=traits, trait_times={},
            first_seen=now, last_seen=now,
        ))
        await s.execute(insert(Identity).values(workspace_id=workspace_id, kind="user", value=uid, profile_id=profile_id))
        await s.execute(insert(StoredEvent).values(
            workspace_id=workspace_id, message_id=uuid.uuid4().hex, profile_id=profile_id, type="track", name="Big",
            user_id=uid, properties=properties, traits={}, context={}, timestamp=now, received_at=now,
        ))
    return uid


async def test_a_profile_stored_before_the_limits_is_still_readable(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    big = {"big": 10**20, "negative": -(2**64), "nested": [{"deep": 10**30}], "plain": 7, "ratio": 0.5}
    uid = await stored_before_the_limits(sessions, workspace_id, big, big)
    async with reading(workspace_id) as profiles:
        profile = await profiles.get(f"/api/v1/users/{uid}")
        timeline = await profiles.get(f"/api/v1/users/{uid}/events")
    readable = {
        "big": "100000000000000000000",
        "negative": "-18446744073709551616",
        "nested": [{"deep": "1000000000000000000000000000000"}],
        "plain": 7,
        "ratio": 0.5,
    }
    assert profile.status_code == 200, profile.text
    assert profile.json()["traits"] == readable
    assert timeline.status_code == 200, timeline.text
    assert timeline.json()["events"][0]["properties"] == readable


# 4. Headers, shapes and times that used to answer 500.

FRESH_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "given",
    [b"\xff\xfe\xfd", "caf\u00e9".encode("latin-1"), b"a" * 129, b"two words", b"x\x7fy", b""],
    ids=["not-utf8", "latin1", "too-long", "space", "control", "empty"],
)
async def test_a_bad_correlation_id_is_replaced_by_a_fresh_one_everywhere(
    edge: Edge, nc: NATS, given: bytes
) -> None:
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send("track", {"userId": "u1", "event": "Tagged"}, headers={CORRELATION_HEADER: given})
        assert r.status_code == 200, r.text
        msg: Msg = await sub.next_msg(timeout=5)
    echoed = r.headers[CORRELATION_HEADER]
    assert FRESH_ID.fullmatch(echoed), echoed
    assert msg.headers is not None and msg.headers[BUS_CORRELATION_HEADER] == echoed


async def test_a_good_correlation_id_is_echoed_and_carried_on_the_bus(edge: Edge, nc: NATS) -> None:
    given = "req-42:retry.1_A"
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send("track", {"userId": "u1", "event": "Tagged"}, headers={CORRELATION_HEADER: given})
        msg: Msg = await sub.next_msg(timeout=5)
    assert r.status_code == 200 and r.headers[CORRELATION_HEADER] == given
    assert msg.headers is not None and msg.headers[BUS_CORRELATION_HEADER] == given


@pytest.mark.parametrize(
    "headers",
    [
        {"user-agent": b"Mozilla/5.0 \xff\xfe (\xe9)"},
        {"user-agent": "Mozilla/5.0 (caf\u00e9)".encode("latin-1")},
        {"x-forwarded-for": b"\xff\xfe, 203.0.113.7"},
        {"x-forwarded-for": "203.0.113.7, caf\u00e9".encode("latin-1")},
    ],
    ids=["ua-not-utf8", "ua-latin1", "xff-not-utf8", "xff-latin1"],
)
async def test_non_ascii_client_headers_are_accepted(edge: Edge, nc: NATS, headers: dict[str, bytes]) -> None:
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send("track", {"userId": "u1", "event": "Headers"}, headers=headers)
        assert r.status_code == 200, r.text
        event = Event.model_validate_json((await sub.next_msg(timeout=5)).data)
    if "x-forwarded-for" in headers:
        assert event.context["ip"] == "203.0.113.7"


def basic(user_part: bytes) -> bytes:
    """A Basic authorization header whose user is these bytes (and the password empty)."""
    return b"Basic " + base64.b64encode(user_part + b":")


@pytest.mark.parametrize(
    "authorization",
    [b"Basic \xff\xfe\xfd\xfc", "Basic caf\u00e9".encode("latin-1"), basic(b"\xff\xfe"),
     basic(b"wk_\x00nul"), basic("wk_caf\u00e9".encode()), basic(b"wk_" + b"x" * 300)],
    ids=["raw-not-ascii", "raw-latin1", "user-not-utf8", "user-nul", "user-non-ascii", "user-too-long"],
)
async def test_a_malformed_basic_authorization_is_a_401_before_any_lookup(edge: Edge, authorization: bytes) -> None:
    r = await edge.send("track", {"userId": "u1", "event": "x"}, headers={"authorization": authorization})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"


@pytest.mark.parametrize("write_key", ["wk_\u0000nul", "wk_caf\u00e9", "wk_" + "x" * 300])
async def test_a_malformed_write_key_in_the_body_is_a_401(edge: Edge, write_key: str) -> None:
    body = {"writeKey": write_key, "userId": "u1", "event": "x"}
    r = await edge.send("track", body, headers={"authorization": ""})
    assert r.status_code == 401, r.text


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xff\xfe", "Bearer hk_caf\u00e9".encode("latin-1"), b"Bearer hk_" + b"x" * 300],
    ids=["not-utf8", "latin1", "too-long"],
)
async def test_a_malformed_bearer_token_is_a_401(edge: Edge, authorization: bytes) -> None:
    r = await edge.gateway.get("/api/v1/users/u1", headers={"authorization": authorization})
    assert r.status_code == 401, r.text


@pytest.mark.parametrize(
    "item, path",
    [
        ({"type": "track", "userId": "u1", "event": "e", "context": "mobile"}, ["batch[0]", "context"]),
        ({"type": "track", "userId": "u1", "event": "e", "context": [1, 2]}, ["batch[0]", "context"]),
        ({"type": "track", "userId": "u1", "event": "e", "integrations": 5}, ["batch[0]", "integrations"]),
        ({"type": "track", "userId": "u1", "event": "e", "integrations": "All"}, ["batch[0]", "integrations"]),
    ],
)
async def test_a_batched_call_whose_context_or_integrations_is_not_an_object_is_dropped(
    edge: Edge, item: dict[str, Any], path: list[str]
) -> None:
    rejection = await edge.dropped(
        "batch", {"context": {"app": {"name": "Shop"}}, "integrations": {"All": True}, "batch": [item]}
    )
    assert rejection["errors"][0]["loc"] == path


@pytest.mark.parametrize("traits", ["ab", 5, [["a", 1]]])
async def test_identify_whose_context_traits_is_not_an_object_is_accepted_without_them(
    edge: Edge, nc: NATS, traits: Any
) -> None:
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send("batch", {"batch": [{"type": "identify", "userId": "u1", "context": {"traits": traits}}]})
        assert r.status_code == 200, r.text
        event = Event.model_validate_json((await sub.next_msg(timeout=5)).data)
    assert event.traits == {} and event.context["traits"] == traits


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
        ({"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp"),
        ({"originalTimestamp": "0001-01-01T05:00:00+14:00"}, "originalTimestamp"),
        ({"timestamp": "2026-11-22T12:00:00Z", "sentAt": "0001-01-01T00:00:00+14:00"}, "sentAt"),
        ({"timestamp": "2026-11-22T12:00:00Z", "sentAt": "9999-12-31T23:59:59-14:00"}, "sentAt"),
        ({"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T23:59:59Z"}, "timestamp"),
        ({"timestamp": "9999-12-31T23:59:59Z", "sentAt": "0001-01-01T00:00:00Z"}, "timestamp"),
    ],
)
async def test_a_timestamp_at_the_ends_of_the_calendar_is_a_400_naming_it(
    edge: Edge, fields: dict[str, str], field: str
) -> None:
    r = await edge.send("track", {"userId": "u1", "event": "Time", **fields})
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["path"] == field
    rejection = await edge.dropped("batch", {"batch": [{"type": "track", "userId": "u1", "event": "Time", **fields}]})
    assert rejection["errors"][0]["path"] == f"batch[0].{field}"


async def test_a_batch_sent_at_at_the_end_of_the_calendar_drops_its_calls(edge: Edge) -> None:
    body = {"sentAt": "0001-01-01T00:00:00+14:00",
            "batch": [{"type": "track", "userId": "u1", "event": "e", "timestamp": "2026-11-22T12:00:00Z"}]}
    rejection = await edge.dropped("batch", body)
    assert rejection["errors"][0]["path"] == "batch[0].sentAt"


async def test_a_batch_context_counts_toward_each_calls_size(edge: Edge) -> None:
    # 2,500 calls sharing a 20 KB batch context would otherwise become 50 MB of events from a 500 KB body.
    body = {"context": {"blob": "x" * 20_000}, "batch": [{"type": "track", "userId": "u1", "event": "e", "properties": {"p": "y" * 15_000}}]}
    rejection = await edge.dropped("batch", body)
    assert rejection["reason"] == "call_too_large" and "batch[0]" in rejection["errors"][0]["msg"]
