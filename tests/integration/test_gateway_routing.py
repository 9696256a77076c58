"""The gateway routes only the management API the services serve, and an id in a path reaches its
service as that literal id: never another route, never a service's /metrics or /openapi.json, never
a 500. The gateway and the services run in-process under uvicorn, on the session's NATS and PostgreSQL."""

import asyncio
import importlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import uvicorn
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api import API_ROUTES
from herald.infra import free_port
from herald.stack import APPS, SERVICES, create_workspace, set_rate_limits
from kernel import signing
from kernel.db import unit_of_work
from services.profiles.models import Identity
from services.segmenter.models import Membership, Segment
from tests.conftest import SIGNING_KEY, Infra, eventually

# The gateway's setting that points at each service.
SERVICE_URL_SETTINGS = {s: f"HERALD_{s.upper()}_URL" for s in SERVICES if s != "gateway"}


@dataclass
class Herald:
    """The running gateway, reached the way an internal tool and an SDK reach it."""

    workspace_id: str
    api_key: str
    gateway_port: int
    api: httpx.AsyncClient
    sdk: httpx.AsyncClient
    services: dict[str, str]  # each service's own URL, which only the gateway should call


def _clear_settings() -> None:
    """Forget every service's cached settings, so the next read sees the environment as it is now."""
    for _, config in APPS.values():
        importlib.import_module(config).get_settings.cache_clear()


async def _serve(name: str, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Run one service's app under uvicorn on `port`, lifespan and all, and wait until it listens."""
    app = importlib.import_module(APPS[name][0]).build()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    )
    task = asyncio.create_task(server.serve(), name=f"test:{name}")

    async def listening() -> bool:
        """True once uvicorn accepts connections; fails fast if the server stopped instead."""
        if task.done():
            task.result()
            raise AssertionError(f"{name} stopped while starting")
        return server.started

    await eventually(listening, timeout=30)
    return server, task


@pytest.fixture(scope="module")
async def herald(infra: Infra) -> AsyncIterator[Herald]:
    """The gateway and the five services, in this process, with one workspace."""
    ports = {name: free_port() for name in SERVICES}
    env = {setting: f"http://127.0.0.1:{ports[s]}" for s, setting in SERVICE_URL_SETTINGS.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _clear_settings()
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    try:
        for name in SERVICES:
            running.append(await _serve(name, ports[name]))
        created = await create_workspace(infra.database_url, "routing")
        # These tests are about routing, not rate limits: room for their bursts of calls.
        await set_rate_limits(infra.database_url, created["workspace_id"], {"sdk": 100_000, "api": 100_000})
        base = f"http://127.0.0.1:{ports['gateway']}"
        async with (
            httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {created['api_key']}"}, timeout=10) as api,
            httpx.AsyncClient(base_url=base, auth=(created["write_key"], ""), timeout=10) as sdk,
        ):
            services = {s: f"http://127.0.0.1:{ports[s]}" for s in SERVICE_URL_SETTINGS}
            yield Herald(created["workspace_id"], created["api_key"], ports["gateway"], api, sdk, services)
    finally:
        for server, _ in running:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _clear_settings()


def unique(prefix: str) -> str:
    """An id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def identified(
    herald: Herald,
    sessions: async_sessionmaker[AsyncSession],
    user_id: str,
    anonymous_id: str | None = None,
    traits: dict[str, Any] | None = None,
) -> None:
    """Identify a user through the SDK edge and wait until profiles has stored them."""
    call: dict[str, Any] = {"userId": user_id, "traits": traits or {"plan": "pro"}}
    if anonymous_id:
        call["anonymousId"] = anonymous_id
    r = await herald.sdk.post("/v1/identify", json=call)
    assert r.status_code == 200, r.text

    async def stored() -> bool:
        """Whether profiles knows the user id yet (read from its table, not through the gateway)."""
        async with sessions() as s:
            found = await s.scalar(
                select(Identity.profile_id).where(Identity.workspace_id == herald.workspace_id, Identity.value == user_id)
            )
        return found is not None

    await eventually(stored)


def segment(value: str) -> str:
    """`value` as one path segment, the way a careful client encodes an id."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def assert_not_found(r: httpx.Response) -> None:
    """A 404 in Herald's envelope, and nothing a service's internal routes would have answered."""
    assert r.status_code == 404, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == "not_found", body
    assert "herald_http_requests_total" not in r.text and "openapi" not in r.text


async def raw_get(port: int, target: bytes, api_key: str) -> tuple[int, bytes]:
    """Send a request line exactly as given (an HTTP client would resolve `..` before sending)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET " + target + b" HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer " + api_key.encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# 1. Dot segments, encoded or not, never walk out of /api/v1 to a service's own routes.


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/users/%2E%2E/%2E%2E/%2E%2E/metrics",
        "/api/v1/users/%2E%2E/%2E%2E/%2E%2E/openapi.json",
        "/api/v1/users/%2e%2e/%2e%2e/%2e%2e/docs",
        "/api/v1/segments/%2E%2E/%2E%2E/%2E%2E/metrics",
        "/api/v1/campaigns/%2E%2E/%2E%2E/%2E%2E/openapi.json",
        "/api/v1/users/x/%2E%2E/%2E%2E/%2E%2E/%2E%2E/readyz",
        "/api/v1/users/%2E%2E%2F%2E%2E%2F%2E%2E%2Fmetrics",
    ],
)
async def test_encoded_dot_segments_never_reach_a_service_s_internal_routes(herald: Herald, path: str) -> None:
    assert_not_found(await herald.api.get(path))


async def test_literal_dot_segments_never_reach_a_service_s_internal_routes(herald: Herald) -> None:
    for target in (b"/api/v1/users/../../../metrics", b"/api/v1/segments/../../../openapi.json"):
        status, body = await raw_get(herald.gateway_port, target, herald.api_key)
        assert status == 404, (target, status, body)
        assert b"herald_http_requests_total" not in body and b"openapi" not in body


# 2. An encoded character stays inside its id: no truncation, no injected query, no other route.


async def test_an_encoded_hash_does_not_truncate_the_id(herald: Herald, sessions: async_sessionmaker[AsyncSession]) -> None:
    ada = unique("ada")
    await identified(herald, sessions, ada)
    assert (await herald.api.get(f"/api/v1/users/{ada}")).status_code == 200
    assert_not_found(await herald.api.get(f"/api/v1/users/{ada}%23anything"))


async def test_an_encoded_question_mark_does_not_inject_a_query(herald: Herald, sessions: async_sessionmaker[AsyncSession]) -> None:
    ada, anon = unique("ada"), unique("anon")
    await identified(herald, sessions, ada, anonymous_id=anon)
    by_anon = await herald.api.get(f"/api/v1/users/{anon}", params={"by": "anonymous_id"})
    assert by_anon.status_code == 200 and by_anon.json()["user_id"] == ada  # a real query still works
    assert_not_found(await herald.api.get(f"/api/v1/users/{anon}%3Fby=anonymous_id"))


async def test_an_encoded_slash_never_reaches_another_route(herald: Herald, sessions: async_sessionmaker[AsyncSession]) -> None:
    ada = unique("ada")
    await identified(herald, sessions, ada)
    created = await herald.api.post("/api/v1/campaigns", json=campaign_body())
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert_not_found(await herald.api.get(f"/api/v1/users/{ada}%2Fevents"))
    assert_not_found(await herald.api.get(f"/api/v1/campaigns/{campaign_id}%2Fstats"))
    assert_not_found(await herald.api.post(f"/api/v1/campaigns/{campaign_id}%2Fpause/launch"))


@pytest.mark.parametrize("char", ["%00", "%09", "%7F", "%0A", "%FF"])
async def test_control_characters_in_an_id_are_a_404_never_a_500(herald: Herald, char: str) -> None:
    for path in (f"/api/v1/users/a{char}b", f"/api/v1/users/a{char}b/events", f"/api/v1/segments/seg{char}x",
                 f"/api/v1/campaigns/c{char}x", f"/api/v1/campaigns/c{char}x/stats"):
        assert_not_found(await herald.api.get(path))
    r = await herald.api.get(f"/api/v1/users/a{char}b/messages")
    assert r.status_code in (200, 404), (r.status_code, r.text)  # nobody's messages: an empty list
    if r.status_code == 200:
        assert r.json() == {"messages": []}


async def test_ids_with_reserved_and_control_characters_reach_the_service_as_that_literal_id(
    herald: Herald, sessions: async_sessionmaker[AsyncSession]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    odd = [".", "..", f"what?by=anonymous_id&{suffix}", f"hash#{suffix}", f"..{suffix}", f"dot..{suffix}",
           f"tab\t{suffix}", f"del\x7f{suffix}", f"per%cent{suffix}", f"space {suffix}", f"ünï✓{suffix}"]
    for user_id in odd:
        await identified(herald, sessions, user_id)
    for user_id in odd:
        profile = await herald.api.get(f"/api/v1/users/{segment(user_id)}")
        assert profile.status_code == 200, (user_id, profile.status_code, profile.text)
        assert profile.json()["user_id"] == user_id
        events = await herald.api.get(f"/api/v1/users/{segment(user_id)}/events")
        assert events.status_code == 200 and events.json()["user_id"] == user_id
        messages = await herald.api.get(f"/api/v1/users/{segment(user_id)}/messages")
        assert messages.status_code == 200 and messages.json() == {"messages": []}


# 3. Only the table's routes and methods: 404 for the rest, 405 with Allow for a wrong method.


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workspaces",
        "/api/v1/users/",
        "/api/v1/users//events",
        "/api/v1/users/a/b",
        "/api/v1/users/a/events/b",
        "/api/v1/segments/s/members",
        "/api/v1/campaigns/c/delete",
        "/api/v1/metrics",
        "/api/v1/openapi.json",
        "/api/v1/docs",
        "/api/v1/",
        "/api%2Fv1/users/a",
    ],
)
async def test_unknown_routes_are_a_404_in_the_envelope(herald: Herald, path: str) -> None:
    assert_not_found(await herald.api.get(path))


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("PUT", "/api/v1/users/ada", "GET, DELETE"),  # DELETE erases the user
        ("POST", "/api/v1/users/ada/events", "GET"),
        ("PUT", "/api/v1/segments", "GET, POST"),
        ("DELETE", "/api/v1/segments/seg_1", "GET, PATCH"),
        ("GET", "/api/v1/segments/preview", "POST"),
        ("GET", "/api/v1/segments/seg_1/archive", "POST"),
        ("DELETE", "/api/v1/campaigns", "GET, POST"),
        ("PUT", "/api/v1/campaigns/c", "GET, PATCH"),
        ("GET", "/api/v1/campaigns/c/duplicate", "POST"),
        ("POST", "/api/v1/users", "GET"),
        ("GET", "/api/v1/campaigns/c/launch", "POST"),
        ("HEAD", "/api/v1/campaigns/c/stats", "GET"),
    ],
)
async def test_a_known_route_with_a_wrong_method_is_a_405_with_allow(
    herald: Herald, method: str, path: str, allow: str
) -> None:
    r = await herald.api.request(method, path)
    assert r.status_code == 405, (r.status_code, r.text)
    assert r.headers["allow"] == allow
    if method != "HEAD":
        assert r.json()["error"] == "method_not_allowed"


def campaign_body() -> dict[str, Any]:
    """A valid action-based campaign."""
    return {
        "name": "Abandoned cart",
        "channel": "email",
        "trigger": {"event": "Product Added", "where": [{"property": "price", "op": "gt", "value": 100}]},
        "message": {"subject": "Still there?", "body": "Your cart is waiting."},
    }


async def test_every_route_in_the_table_answers_through_the_gateway(
    herald: Herald, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ada = unique("ada")
    await identified(herald, sessions, ada)
    assert (await herald.sdk.post("/v1/track", json={"userId": ada, "event": "Opened App"})).status_code == 200

    async def two_events() -> bool:
        """Both of ada's events are on her timeline."""
        r = await herald.api.get(f"/api/v1/users/{ada}/events")
        return r.status_code == 200 and len(r.json()["events"]) == 2

    await eventually(two_events)
    assert len((await herald.api.get(f"/api/v1/users/{ada}/events", params={"limit": 1})).json()["events"]) == 1
    assert (await herald.api.get(f"/api/v1/users/{ada}")).json()["traits"] == {"plan": "pro"}
    assert (await herald.api.get(f"/api/v1/users/{ada}/messages", params={"limit": 5})).json() == {"messages": []}
    token = unique("token")
    device = await herald.api.post(
        f"/api/v1/users/{ada}/devices", json={"device_id": unique("phone"), "platform": "ios", "push_token": token}
    )
    assert device.status_code == 200 and device.json()["push_token"] == token, device.text
    dead = await herald.api.post("/api/v1/devices/deactivate", json={"token": token})
    assert dead.status_code == 200 and dead.json()["deactivated"] is True, dead.text
    assert isinstance((await herald.api.get("/api/v1/ingest/rejections")).json()["rejections"], list)

    made = await herald.api.post("/api/v1/segments", json={"name": "Pro", "filter": {"trait": "plan", "op": "eq", "value": "pro"}})
    assert made.status_code == 201, made.text
    assert made.json()["size"] >= 1
    seg_id = made.json()["id"]
    assert (await herald.api.get(f"/api/v1/segments/{seg_id}")).json()["name"] == "Pro"
    assert seg_id in [s["id"] for s in (await herald.api.get("/api/v1/segments")).json()["segments"]]

    created = await herald.api.post("/api/v1/campaigns", json=campaign_body())
    assert created.status_code == 201 and created.json()["status"] == "draft", created.text
    campaign_id = created.json()["id"]
    assert (await herald.api.get(f"/api/v1/campaigns/{campaign_id}")).json()["id"] == campaign_id
    assert (await herald.api.post(f"/api/v1/campaigns/{campaign_id}/launch")).json()["status"] == "active"
    assert (await herald.api.post(f"/api/v1/campaigns/{campaign_id}/pause")).json()["status"] == "paused"
    stats = await herald.api.get(f"/api/v1/campaigns/{campaign_id}/stats")
    assert stats.status_code == 200 and stats.json()["campaign_id"] == campaign_id


async def test_a_request_without_an_api_key_is_refused_before_any_routing(herald: Herald) -> None:
    async with httpx.AsyncClient(base_url=str(herald.api.base_url)) as anonymous:
        for path in ("/api/v1/users/ada", "/api/v1/users/%2E%2E/%2E%2E/%2E%2E/metrics", "/api/v1/nothing"):
            assert (await anonymous.get(path)).status_code == 401


# 4. A segment the segmenter cannot hold is a 422 naming where, never a 500 or a 503.


def trait(op: str, value: Any, name: str = "city") -> dict[str, Any]:
    """A trait condition."""
    return {"trait": name, "op": op, "value": value}


@pytest.mark.parametrize(
    "body, where",
    [
        ({"name": "Ber\x00lin", "filter": trait("eq", "Berlin")}, ["body", "name"]),
        ({"name": "x" * 201, "filter": trait("eq", "Berlin")}, ["body", "name"]),
        ({"name": "Big", "filter": trait("in", [f"city-{i}" for i in range(40_000)])}, ["filter", "value"]),
        ({"name": "NUL", "filter": trait("eq", "Ber\x00lin")}, ["filter", "value"]),
        ({"name": "NUL", "filter": trait("exists", None, name="ci\x00ty")}, ["filter", "trait"]),
        ({"name": "NUL", "filter": {"event": "Sign\x00ed Up"}}, ["filter", "event"]),
        ({"name": "NUL", "filter": {"event": "x", "where": [{"property": "p\x00", "op": "exists"}]}},
         ["filter", "where[0]", "property"]),
        ({"name": "Long", "filter": trait("contains", "x" * 20_000)}, ["filter", "value"]),
        ({"name": "Huge", "filter": trait("gt", 2**63, name="age")}, ["filter", "value"]),
        ({"name": "Huge", "filter": trait("eq", 2**64, name="age")}, ["filter", "value"]),
        ({"name": "Huge", "filter": trait("lt", -(2**63) - 1, name="age")}, ["filter", "value"]),
        ({"name": "Huge", "filter": trait("in", [1, 2**70], name="age")}, ["filter", "value"]),
        ({"name": "Huge", "filter": {"event": "x", "count": {"gte": 2**63}}}, ["filter", "count", "gte"]),
        ({"name": "Ages", "filter": {"event": "x", "within_days": 10**9}}, ["filter", "within_days"]),
        ({"name": "Many", "filter": {"any": [trait("eq", str(i)) for i in range(101)]}}, ["filter", "any[99]"]),
        ({"name": "Many", "filter": {"event": "x", "where": [{"property": "p", "op": "exists"}] * 200}},
         ["filter", "where[99]"]),
        ({"name": "Costly", "filter": {"all": [trait("in", list(range(100))) for _ in range(6)]}}, ["filter", "all[5]"]),
        ({"name": "Junk", "filter": {"trait": "city", "op": "exists", "\x00": [0] * 40_000}}, ["filter"]),
        ({"name": "Deep", "filter": trait("eq", [[[[[["deep"]]]]]])}, ["filter", "value"]),
    ],
)
async def test_a_segment_the_segmenter_cannot_hold_is_a_422_naming_where(
    herald: Herald, body: dict[str, Any], where: list[str]
) -> None:
    r = await herald.api.post("/api/v1/segments", json=body)
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert r.json()["error"] in ("validation_error", "invalid_filter")
    assert [d["loc"] for d in r.json()["detail"]] == [where]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("op, value", [("gt", "{}"), ("eq", "{}"), ("in", "[1, {}]")])
async def test_nan_and_infinity_in_a_filter_are_a_422(herald: Herald, number: str, op: str, value: str) -> None:
    # Not JSON, but Python's json module (which FastAPI reads bodies with) accepts them.
    raw = '{"name": "Odd", "filter": {"trait": "age", "op": "OP", "value": VALUE}}'
    raw = raw.replace("OP", op).replace("VALUE", value.format(number))
    r = await herald.api.post("/api/v1/segments", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert [d["loc"] for d in r.json()["detail"]] == [["filter", "value"]]
    assert "finite" in r.json()["detail"][0]["msg"]


async def test_a_stored_segment_over_today_s_limits_is_served_but_stalls_no_re_evaluation(
    herald: Herald, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Stored before the limits existed, straight into the segmenter's table: 150 values in one list.
    legacy_id = f"seg_legacy{uuid.uuid4().hex[:8]}"
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Segment).values(
            id=legacy_id, workspace_id=herald.workspace_id, name="Legacy",
            filter=trait("in", [f"city-{i}" for i in range(149)] + ["Oslo"]),
        ))
    made = await herald.api.post("/api/v1/segments", json={"name": "Oslo", "filter": trait("eq", "Oslo")})
    assert made.status_code == 201, made.text
    oslo_id = made.json()["id"]

    user = unique("oslo")
    await identified(herald, sessions, user, traits={"city": "Oslo"})

    async def entered() -> set[str]:
        """The segments the user is stored as a member of."""
        async with sessions() as s:
            rows = await s.scalars(select(Membership.segment_id).where(
                Membership.workspace_id == herald.workspace_id, Membership.user_id == user
            ))
            return set(rows)

    assert oslo_id in await eventually(entered)  # the workspace's other segments are still evaluated live
    assert legacy_id not in await entered()
    legacy = await herald.api.get(f"/api/v1/segments/{legacy_id}")
    assert legacy.status_code == 200 and legacy.json()["size"] == 0  # its stored members


# 5. A service acts only on a request the gateway signed, for the workspace it signed, as it was signed.


async def test_a_service_acts_only_on_what_the_gateway_signed_for_that_very_request(
    herald: Herald, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = unique("signed")
    await identified(herald, sessions, user)
    profiles = herald.services["profiles"]
    path = f"/api/v1/users/{user}"
    signer = signing.Signer(SIGNING_KEY)

    async def answer(headers: dict[str, str], method: str = "GET", url: str = path, body: bytes | None = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=profiles, timeout=10) as client:
            return await client.request(method, url, headers=headers, content=body)

    def signed(**claims: Any) -> dict[str, str]:
        fields = {"workspace_id": herald.workspace_id, "method": "GET", "target": path, "body": b"", **claims}
        return {signing.HEADER: signer.sign(**fields)}

    assert (await answer(signed())).json()["user_id"] == user  # the gateway's signature, as the gateway makes it
    other_key = signing.Signer(signing.new_key_pair()[0])
    refused = {
        "no signature": {},
        "the shared token of earlier versions": {"X-Herald-Internal-Token": "anything", "X-Herald-Workspace": herald.workspace_id},
        "another key": {signing.HEADER: other_key.sign(herald.workspace_id, "GET", path)},
        "expired": signed(now=time.time() - signing.LIFETIME_SECONDS - signing.LEEWAY_SECONDS - 5),
        "issued in the future": signed(now=time.time() + 3600),
        "another path": signed(target=f"/api/v1/users/{user}x"),
        "another query": signed(target=f"{path}?by=user_id"),
        "another method": signed(method="POST"),
        "not a JWT": {signing.HEADER: "eyJhbGciOiJub25lIn0.e30."},
    }
    for why, headers in refused.items():
        r = await answer(headers)
        assert r.status_code == 401, (why, r.status_code, r.text)
        assert r.json()["error"] == "unauthorized" and "gateway" in r.json()["detail"], (why, r.text)

    # A body the gateway did not sign, on a route that takes one.
    segment = orjson.dumps({"name": "signed", "filter": {"trait": "plan", "op": "eq", "value": "pro"}})
    target = "/api/v1/segments"
    good = {signing.HEADER: signer.sign(herald.workspace_id, "POST", target, segment), "content-type": "application/json"}
    swapped = segment.replace(b"pro", b"free")
    async with httpx.AsyncClient(base_url=herald.services["segmenter"], timeout=10) as client:
        r = await client.post(target, content=swapped, headers=good)
        assert r.status_code == 401 and "body" in r.json()["detail"], r.text
        r = await client.post(target, content=segment, headers=good)
        assert r.status_code == 201, r.text


async def test_the_workspace_is_the_one_signed_never_one_a_caller_names(
    herald: Herald, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = unique("tenant")
    await identified(herald, sessions, user)
    path = f"/api/v1/users/{user}"
    elsewhere = {signing.HEADER: signing.Signer(SIGNING_KEY).sign("ws_elsewhere", "GET", path), "X-Herald-Workspace": herald.workspace_id}
    async with httpx.AsyncClient(base_url=herald.services["profiles"], timeout=10) as client:
        r = await client.get(path, headers=elsewhere)
    assert r.status_code == 404, r.text  # read in the signed workspace, where this user does not exist


# 6. Another workspace's key reaches nothing of this one, on every route of the table.

# Bodies that would be accepted if the id were the caller's own, so a refusal is the 404, never a 422.
WRITE_BODIES: dict[tuple[str, str], Any] = {
    ("users/{user_id}/devices", "POST"): {"device_id": "stolen-phone", "platform": "ios"},
    ("segments/{segment_id}", "PATCH"): {"name": "stolen"},
    ("campaigns/{campaign_id}", "PATCH"): {"name": "stolen"},
    ("campaigns/{campaign_id}/duplicate", "POST"): {"name": "stolen"},
    ("campaigns/{campaign_id}/trigger", "POST"): {"audience": True},
    ("users/{user_id}/subscriptions", "PUT"): {"email": {"state": "unsubscribed"}},
    ("users/{user_id}/consents", "POST"): {"purpose": "marketing", "status": "withdrawn", "policy_version": "1"},
    ("subscription-groups/{group_id}", "PATCH"): {"name": "stolen"},
}
# Routes without an id: what another workspace's key may do there acts on its own workspace only.
EMPTY_ANSWERS = {"users/{user_id}/messages"}  # nobody's messages: an empty list, as for any unknown user


async def test_another_workspace_s_key_reaches_nothing_of_this_one_on_any_route(
    herald: Herald, sessions: async_sessionmaker[AsyncSession], infra: Infra
) -> None:
    ada, token = unique("ada"), unique("token")
    await identified(herald, sessions, ada, traits={"plan": "vip", "email": f"{ada}@example.com"})
    device = await herald.api.post(f"/api/v1/users/{ada}/devices", json={"device_id": unique("phone"), "platform": "ios", "push_token": token})
    assert device.status_code == 200, device.text
    made = await herald.api.post("/api/v1/segments", json={"name": "VIP", "filter": {"trait": "plan", "op": "eq", "value": "vip"}})
    assert made.status_code == 201, made.text
    created = await herald.api.post("/api/v1/campaigns", json=campaign_body())
    assert created.status_code == 201, created.text
    listed = await herald.api.post("/api/v1/subscription-groups", json={"channel": "email", "name": "Digest"})
    assert listed.status_code == 201, listed.text
    gone = unique("gone")
    await identified(herald, sessions, gone)
    erased = await herald.api.delete(f"/api/v1/users/{gone}")  # an erasure of this workspace's, for erasures/{id}
    assert erased.status_code == 202, erased.text
    mine = {"user_id": ada, "segment_id": made.json()["id"], "campaign_id": created.json()["id"], "group_id": listed.json()["id"],
            "erasure_id": erased.json()["erasure_id"]}
    own_key_id = (await herald.api.get("/api/v1/api-keys")).json()["api_keys"][0]["id"]

    other = await create_workspace(infra.database_url, "intruder")
    await set_rate_limits(infra.database_url, other["workspace_id"], {"sdk": 100_000, "api": 100_000})
    own_writes: dict[tuple[str, str], tuple[Any, Any]] = {  # (body, what the answer must be)
        ("segments", "POST"): ({"name": "Mine", "filter": {"trait": "plan", "op": "eq", "value": "vip"}}, lambda r: r.status_code == 201 and r.json()["size"] == 0),
        ("campaigns", "POST"): (campaign_body(), lambda r: r.status_code == 201),
        ("segments/preview", "POST"): (
            {"filter": {"trait": "plan", "op": "eq", "value": "vip"}},
            lambda r: r.status_code == 200 and r.json()["user_ids"] == [] and r.json()["count"] == 0,
        ),
        ("devices/deactivate", "POST"): ({"token": token}, lambda r: r.status_code == 200 and r.json()["deactivated"] is False),
        ("subscription-groups", "POST"): ({"channel": "email", "name": "Mine"}, lambda r: r.status_code == 201),
        ("channels/test", "POST"): (  # a test send to this workspace's user: nobody of its own
            {"channel": "email", "user_id": ada, "message": {"subject": "s", "body": "b"}}, lambda r: r.status_code == 404,
        ),
    }
    calls = sorted(((route, method) for route in API_ROUTES for method in route.methods), key=lambda c: c[1] != "GET")
    async with httpx.AsyncClient(base_url=str(herald.api.base_url), headers={"authorization": f"Bearer {other['api_key']}"}, timeout=10) as intruder:
        for route, method in calls:
            path = "/api/v1/" + "/".join(mine[p[1:-1]] if p.startswith("{") else p for p in route.parts)
            key = (route.template, method)
            shown = f"{method} {path}"
            if key in own_writes:
                payload, holds = own_writes[key]
                r = await intruder.request(method, path, json=payload)
                assert holds(r), (shown, r.status_code, r.text)
            elif route.template in EMPTY_ANSWERS:
                r = await intruder.request(method, path)
                assert r.status_code == 200 and all(v == [] for v in r.json().values() if isinstance(v, list)), (shown, r.text)
            elif "{" in route.template:
                r = await intruder.request(method, path, json=WRITE_BODIES.get(key))
                assert_not_found(r)
            elif method == "GET":  # a list of its own: empty, or nothing configured
                r = await intruder.get(path)
                assert r.status_code in (200, 404), (shown, r.status_code, r.text)
                if r.status_code == 200:
                    lists = [v for v in r.json().values() if isinstance(v, list)]
                    assert lists and all(v == [] for v in lists), (shown, r.text)
            elif method == "PUT":  # configuration of its own: an empty one is refused before anything is read
                r = await intruder.put(path, json={})
                assert r.status_code == 422, (shown, r.status_code, r.text)
            else:
                r = await intruder.request(method, path)
                assert r.status_code == 404, (shown, r.status_code, r.text)
        assert_not_found(await intruder.delete(f"/api/v1/api-keys/{own_key_id}"))
        assert own_key_id not in [k["id"] for k in (await intruder.get("/api/v1/api-keys")).json()["api_keys"]]

    # Everything of this workspace is as it was.
    segment = (await herald.api.get(f"/api/v1/segments/{mine['segment_id']}")).json()
    assert (segment["name"], segment["size"], segment.get("archived_at")) == ("VIP", 1, None)
    campaign = (await herald.api.get(f"/api/v1/campaigns/{mine['campaign_id']}")).json()
    assert (campaign["name"], campaign["status"]) == ("Abandoned cart", "draft")
    profile = (await herald.api.get(f"/api/v1/users/{ada}")).json()
    assert [(d["push_token"], d["push_enabled"]) for d in profile["devices"]] == [(token, True)]
    assert profile["subscriptions"] == {"email": None, "push": None, "sms": None, "groups": {}}
    group = (await herald.api.get(f"/api/v1/subscription-groups/{mine['group_id']}")).json()
    assert (group["name"], group["archived_at"]) == ("Digest", None)
    assert (await herald.api.get("/api/v1/api-keys")).json()["api_keys"][0]["revoked_at"] is None
