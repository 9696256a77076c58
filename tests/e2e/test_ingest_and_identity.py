"""What SDKs and API clients see at the gateway: accepted calls, identity, and precise refusals."""

import gzip
import uuid

import httpx
import orjson

from tests.conftest import eventually
from tests.e2e.conftest import Workspace


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_anonymous_events_land_on_the_user_once_identified(ws: Workspace) -> None:
    anon, user = unique("anon"), unique("user")
    await ws.sdk.post("/v1/page", json={"anonymousId": anon, "name": "Pricing"})
    await ws.track(None, anonymousId=anon, event="Product Viewed", properties={"sku": "A1"})
    await ws.identify(user, {"plan": "trial"}, anonymousId=anon)

    timeline = await ws.stored(user, count=3)
    names = [e["name"] for e in timeline["events"]]
    assert sorted(names) == ["Product Viewed", "identify", "page:Pricing"]
    profile = await ws.user(user)
    assert profile is not None and profile["anonymous_ids"] == [anon]
    assert profile["computed"]["event_counts"]["Product Viewed"] == 1
    # The anonymous id now resolves to the same person.
    by_anon = await ws.api.get(f"/api/v1/users/{anon}", params={"by": "anonymous_id"})
    assert by_anon.json()["user_id"] == user


async def test_a_retried_message_id_is_stored_once(ws: Workspace) -> None:
    user = unique("retry")
    call = {"userId": user, "event": "Signed Up", "messageId": unique("msg")}
    for _ in range(3):
        assert (await ws.sdk.post("/v1/track", json=call)).status_code == 200
    await ws.track(user, event="Marker")
    timeline = await ws.stored(user, count=2)
    assert [e["name"] for e in timeline["events"]].count("Signed Up") == 1


async def test_gzip_batches_and_body_write_keys_are_accepted(ws: Workspace, stack) -> None:  # type: ignore[no-untyped-def]
    user = unique("gz")
    batch = {"writeKey": ws.write_key, "batch": [
        {"type": "identify", "userId": user, "traits": {"city": "Lisbon"}},
        {"type": "track", "userId": user, "event": "Opened App"},
    ]}
    async with httpx.AsyncClient(base_url=stack.config.url("gateway")) as client:
        r = await client.post(
            "/v1/batch", content=gzip.compress(orjson.dumps(batch)),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
    assert r.status_code == 200, r.text
    await ws.stored(user, count=2)
    assert (await ws.user(user))["traits"] == {"city": "Lisbon"}  # type: ignore[index]


async def test_bad_requests_get_precise_errors_and_store_nothing(ws: Workspace, stack) -> None:  # type: ignore[no-untyped-def]
    oversize_user, bad_batch_user, nobody = unique("big"), unique("batch"), unique("nobody")

    r = await ws.track(oversize_user, properties={"blob": "x" * 33_000})
    assert r.status_code == 400 and r.json()["error"] == "payload_too_large"

    r = await ws.sdk.post("/v1/track", content=b'{"userId": "u", "event": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"

    r = await ws.sdk.post("/v1/track", json={"event": "No Ids"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_call"
    assert "userId or an anonymousId" in str(r.json()["detail"])

    # A malformed call in a batch is dropped with its reason, the rest kept (mobile SDKs discard a batch answered 4xx).
    r = await ws.sdk.post("/v1/batch", json={"batch": [
        {"type": "track", "userId": bad_batch_user, "event": "Fine"},
        {"type": "track", "userId": bad_batch_user, "messageId": f"{bad_batch_user}-2"},
    ]})
    assert r.status_code == 200 and r.json() == {"success": True, "rejected": 1}, r.text

    async with httpx.AsyncClient(base_url=stack.config.url("gateway")) as anonymous_client:
        r = await anonymous_client.post("/v1/track", json={"userId": nobody, "event": "x"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = await anonymous_client.post("/v1/track", json={"userId": nobody, "event": "x"}, auth=("wk_wrong", ""))
        assert r.status_code == 401
        r = await anonymous_client.get(f"/api/v1/users/{nobody}", headers={"authorization": "Bearer hk_wrong"})
        assert r.status_code == 401
        r = await anonymous_client.get(f"/api/v1/users/{nobody}")
        assert r.status_code == 401

    r = await ws.api.post("/api/v1/segments", json={"name": "Bad", "filter": {"trait": "city", "op": "equals", "value": 1}})
    assert r.status_code == 422 and r.json()["error"] == "invalid_filter"
    r = await ws.api.post("/api/v1/campaigns", json={"name": "Bad", "channel": "sms", "trigger": {"event": "x"}, "message": {}})
    assert r.status_code == 422
    r = await ws.api.post("/api/v1/campaigns", json={
        "name": "Bad template", "channel": "email", "trigger": {"event": "x"},
        "message": {"subject": "{% if %}", "body": "b"},
    })
    assert r.status_code == 422 and "Liquid" in r.text
    r = await ws.api.post("/api/v1/campaigns/cmp_missing/launch")
    assert r.status_code == 404

    # After a later valid call is stored, none of the refused calls left anything behind; the batch's
    # good call is stored alone, and the dropped one is listed with why.
    await ws.track(nobody, event="Marker")
    await ws.stored(nobody)
    assert await ws.user(oversize_user) is None
    timeline = await ws.stored(bad_batch_user)
    assert [e["name"] for e in timeline["events"]] == ["Fine"]
    listed = (await ws.api.get("/api/v1/ingest/rejections")).json()["rejections"]
    dropped = next(r for r in listed if r["message_id"] == f"{bad_batch_user}-2")
    assert dropped["index"] == 1 and dropped["reason"] == "invalid_call"
    assert "track needs a non-empty event name" in str(dropped["errors"])
    # A refused single call is listed too (the gateway refuses oversize bodies before ingest sees them).
    refused = [r for r in listed if r["route"] == "track" and "userId or an anonymousId" in str(r["errors"])]
    assert refused, listed


async def test_a_workspace_never_sees_another_workspaces_data(ws: Workspace, stack, infra) -> None:  # type: ignore[no-untyped-def]
    from tests.e2e.conftest import create_workspace

    user = unique("private")
    await ws.identify(user, {"secret": "only-in-A"})
    await ws.stored(user)

    other = create_workspace(infra.database_url, "other")
    async with httpx.AsyncClient(base_url=stack.config.url("gateway"), headers={"authorization": f"Bearer {other['api_key']}"}) as b_api:
        assert (await b_api.get(f"/api/v1/users/{user}")).status_code == 404
        # A client cannot name a workspace itself: the gateway rebuilds every internal header.
        forged = await b_api.get(
            f"/api/v1/users/{user}", headers={"x-herald-workspace": ws.workspace_id, "x-herald-internal-token": "guess"}
        )
        assert forged.status_code == 404
        segments = (await b_api.get("/api/v1/segments")).json()["segments"]
        assert segments == []
    async with httpx.AsyncClient(base_url=stack.config.url("gateway"), auth=(other["write_key"], "")) as b_sdk:
        await b_sdk.post("/v1/identify", json={"userId": user, "traits": {"secret": "in-B"}})

    async def b_profile():  # type: ignore[no-untyped-def]
        async with httpx.AsyncClient(base_url=stack.config.url("gateway"), headers={"authorization": f"Bearer {other['api_key']}"}) as c:
            r = await c.get(f"/api/v1/users/{user}")
            return r.json() if r.status_code == 200 else None

    assert (await eventually(b_profile))["traits"] == {"secret": "in-B"}
    assert (await ws.user(user))["traits"] == {"secret": "only-in-A"}  # type: ignore[index]


async def test_services_are_not_reachable_without_the_gateway(ws: Workspace, stack) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=stack.config.url("profiles")) as direct:
        r = await direct.get("/api/v1/users/anyone", headers={"x-herald-workspace": ws.workspace_id})
    assert r.status_code == 401


async def test_every_service_reports_health_readiness_and_metrics(stack) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as client:
        for name in ("gateway", "ingest", "profiles", "segmenter", "scheduler", "dispatcher"):
            base = stack.config.url(name)
            assert (await client.get(base + "/healthz")).json() == {"status": "ok"}
            assert (await client.get(base + "/readyz")).json() == {"status": "ready"}
            metrics = await client.get(base + "/metrics")
            assert "herald_http_requests_total" in metrics.text
        gateway_metrics = (await client.get(stack.config.url("gateway") + "/metrics")).text
        assert 'route="/v1/track"' in gateway_metrics
        openapi = (await client.get(stack.config.url("gateway") + "/openapi.json")).json()
        assert "/v1/batch" in openapi["paths"]
