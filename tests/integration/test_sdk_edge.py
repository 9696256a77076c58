"""What client SDKs need from the edge, through the real gateway and ingest on real NATS: the short
paths they post to, CORS for pages on any site, the settings they load, and batches that keep their
good calls while each malformed one is dropped and listed with why."""

import gzip
import uuid
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NATS

from herald.stack import create_workspace
from kernel.contracts import Event
from tests.conftest import Infra
from tests.integration.conftest import Edge, stream_of

SHORT_PATHS = [
    ("i", "identify", {"userId": "u1", "traits": {"plan": "pro"}}),
    ("t", "track", {"userId": "u1", "event": "Viewed"}),
    ("p", "page", {"anonymousId": "a1", "name": "Home"}),
    ("s", "screen", {"userId": "u1", "name": "Cart"}),
    ("g", "group", {"userId": "u1", "groupId": "g1"}),
    ("a", "alias", {"userId": "u1", "previousId": "a1"}),
]


def message_id() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


async def rejections(edge: Edge, **params: Any) -> list[dict[str, Any]]:
    r = await edge.gateway.get(
        "/api/v1/ingest/rejections", params=params, headers={"authorization": f"Bearer {edge.api_key}"}
    )
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()["rejections"]
    return listed


@pytest.mark.parametrize("path, call_type, body", SHORT_PATHS, ids=[p[0] for p in SHORT_PATHS])
async def test_the_browser_sdks_short_paths_store_their_call_type(
    edge: Edge, nc: NATS, path: str, call_type: str, body: dict[str, Any]
) -> None:
    # analytics-next posts `text/plain` with the write key in the body, so the page needs no preflight.
    sent = {**body, "messageId": message_id(), "writeKey": edge.write_key}
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.gateway.post(f"/v1/{path}", content=orjson.dumps(sent), headers={"content-type": "text/plain"})
        assert r.status_code == 200, r.text
        stored = Event.model_validate_json((await sub.next_msg(timeout=5)).data)
    assert stored.type == call_type and stored.message_id == sent["messageId"]


async def test_the_mobile_batch_path_takes_gzip_with_basic_auth(edge: Edge, nc: NATS) -> None:
    ids = [message_id(), message_id()]
    batch = {"batch": [
        {"type": "track", "userId": "u1", "event": "Application Opened", "messageId": ids[0]},
        {"type": "screen", "userId": "u1", "name": "Home", "messageId": ids[1]},
    ], "sentAt": "2026-12-03T10:00:00.000Z"}
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send("b", gzip.compress(orjson.dumps(batch)), headers={"content-encoding": "gzip"})
        assert r.status_code == 200 and r.json() == {"success": True}, r.text
        stored = [Event.model_validate_json((await sub.next_msg(timeout=5)).data) for _ in ids]
    assert sorted(e.message_id for e in stored) == sorted(ids)


async def test_a_preflight_from_any_site_is_answered_on_sdk_routes_only(edge: Edge) -> None:
    asked = {
        "origin": "https://shop.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization",
    }
    for path in ("/v1/t", "/v1/batch", "/v1/b", f"/v1/projects/{edge.write_key}/settings"):
        r = await edge.gateway.options(path, headers=asked)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["access-control-allow-origin"] == "*"
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
    # The internal API is for servers: a page on another site gets no CORS grant for it.
    r = await edge.gateway.options("/api/v1/users/u1", headers=asked)
    assert "access-control-allow-origin" not in r.headers


async def test_every_sdk_answer_can_be_read_by_a_page_on_another_site(edge: Edge) -> None:
    origin = {"origin": "https://shop.example"}
    ok = await edge.gateway.post(
        "/v1/t", content=orjson.dumps({"userId": "u1", "event": "e", "writeKey": edge.write_key}),
        headers={"content-type": "text/plain", **origin},
    )
    unknown_key = await edge.gateway.post(
        "/v1/t", content=orjson.dumps({"userId": "u1", "event": "e", "writeKey": "wk_nobody"}), headers=origin
    )
    bad_json = await edge.gateway.post("/v1/t", content=b"{", headers={**origin, "authorization": "Basic Og=="})
    assert (ok.status_code, unknown_key.status_code, bad_json.status_code) == (200, 401, 400)
    for r in (ok, unknown_key, bad_json):
        assert r.headers["access-control-allow-origin"] == "*"
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()


async def test_the_settings_point_the_sdk_at_this_gateway(edge: Edge) -> None:
    r = await edge.gateway.get(f"/v1/projects/{edge.write_key}/settings")
    assert r.status_code == 200, r.text
    segment = r.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == edge.write_key
    assert (segment["apiHost"], segment["protocol"]) == ("gateway/v1", "http")
    assert r.json()["metrics"]["sampleRate"] == 0  # nothing goes to Segment's own metrics endpoint
    assert "max-age=" in r.headers["cache-control"] and "Host" in r.headers["vary"]
    behind_tls = await edge.gateway.get(
        f"/v1/projects/{edge.write_key}/settings",
        headers={"x-forwarded-proto": "https", "x-forwarded-host": "events.example.com"},
    )
    segment = behind_tls.json()["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == ("events.example.com/v1", "https")


@pytest.mark.parametrize("key", ["wk_nobody", "a b", "x" * 300])
async def test_settings_for_an_unknown_write_key_are_a_404(edge: Edge, key: str) -> None:
    r = await edge.gateway.get(f"/v1/projects/{key}/settings")
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text


async def test_a_batch_keeps_its_good_calls_and_lists_each_dropped_one_newest_first(edge: Edge, nc: NATS) -> None:
    good = message_id()
    batch = {"batch": [
        {"type": "track", "userId": "u1", "event": "Kept", "messageId": good},
        {"type": "track", "userId": "u1", "messageId": "no-event"},
        42,
        {"type": "shout", "userId": "u1", "messageId": "bad-type"},
        {"type": "identify", "messageId": "no-ids"},
    ]}
    async with stream_of(nc, edge.workspace_id) as sub:
        r = await edge.send("batch", batch)
        assert r.status_code == 200 and r.json() == {"success": True, "rejected": 4}, r.text
        stored = Event.model_validate_json((await sub.next_msg(timeout=5)).data)
    assert stored.message_id == good
    listed = await rejections(edge)
    assert [(x["index"], x["reason"]) for x in listed[:4]] == [
        (4, "invalid_call"), (3, "invalid_call"), (2, "not_an_object"), (1, "invalid_call"),
    ]
    assert [x["message_id"] for x in listed[:4]] == ["no-ids", "bad-type", None, "no-event"]
    assert all(x["route"] == "batch" and x["at"] for x in listed[:4])
    assert len(await rejections(edge, limit=2)) == 2


async def test_a_batch_of_only_bad_calls_is_still_a_200_and_an_empty_one_stores_nothing(edge: Edge) -> None:
    r = await edge.send("batch", {"batch": [{"type": "track"}, "x"]})
    assert r.status_code == 200 and r.json()["rejected"] == 2, r.text
    r = await edge.send("batch", {"batch": []})
    assert r.status_code == 200 and r.json() == {"success": True}, r.text


@pytest.mark.parametrize(
    "body, error",
    [
        (b"{", "invalid_json"),
        (b'{"batch": "calls"}', "invalid_batch"),
        (b'{"calls": []}', "invalid_batch"),
        (b"[]", "invalid_batch"),
    ],
)
async def test_what_is_not_a_batch_at_all_is_still_a_400(edge: Edge, body: bytes, error: str) -> None:
    r = await edge.send("batch", body)
    assert r.status_code == 400 and r.json()["error"] == error, r.text
    assert (await rejections(edge, limit=1))[0]["reason"] == error


async def test_a_workspace_sees_only_its_own_rejections(edge: Edge, infra: Infra) -> None:
    await edge.send("batch", {"batch": [{"type": "track", "userId": "u1", "messageId": "mine"}]})
    other = await create_workspace(infra.database_url, "other")
    r = await edge.gateway.get("/api/v1/ingest/rejections", headers={"authorization": f"Bearer {other['api_key']}"})
    assert r.status_code == 200 and r.json() == {"rejections": []}, r.text


@pytest.mark.parametrize("limit", ["0", "201", "many"])
async def test_a_rejections_limit_out_of_range_is_a_422(edge: Edge, limit: str) -> None:
    r = await edge.gateway.get(
        "/api/v1/ingest/rejections", params={"limit": limit}, headers={"authorization": f"Bearer {edge.api_key}"}
    )
    assert r.status_code == 422, r.text
