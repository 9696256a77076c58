"""API keys through the gateway on real PostgreSQL: made, listed and revoked through the API, scoped per
resource family, and a revoked key refused at once here and within the cache period on other replicas."""

from typing import Any

import httpx
import pytest

from gateway.config import get_settings
from tests.conftest import eventually
from tests.integration.conftest import Edge


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def make_key(edge: Edge, scopes: list[str], name: str = "tool", as_key: str | None = None) -> dict[str, Any]:
    r = await edge.gateway.post("/api/v1/api-keys", json={"name": name, "scopes": scopes},
                                headers=bearer(as_key or edge.api_key))
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


async def test_a_key_is_shown_once_and_listed_by_prefix_name_scopes_and_last_use(edge: Edge) -> None:
    made = await make_key(edge, ["users:read", "segments:write"], name="dashboard")
    assert made["key"].startswith("hk_") and made["prefix"] == made["key"][:8]
    assert made["scopes"] == ["segments:write", "users:read"] and made["last_used_at"] is None
    assert (await edge.gateway.get("/api/v1/ingest/rejections", headers=bearer(made["key"]))).status_code == 403
    r = await edge.gateway.get("/api/v1/api-keys", headers=bearer(edge.api_key))
    assert r.status_code == 200, r.text
    listed = {k["id"]: k for k in r.json()["api_keys"]}
    mine = listed[made["id"]]
    assert "key" not in mine and mine["name"] == "dashboard" and mine["prefix"] == made["prefix"]
    assert mine["last_used_at"] is not None  # the refused call above still used it
    default = next(k for k in listed.values() if k["name"] == "default")
    assert default["scopes"] == ["admin"] and default["last_used_at"] is not None


@pytest.mark.parametrize(
    "scopes, path, allowed",
    [
        (["ingest:read"], "/api/v1/ingest/rejections", True),
        (["users:read"], "/api/v1/ingest/rejections", False),
        (["users:read"], "/api/v1/api-keys", False),
        (["api_keys:read"], "/api/v1/api-keys", True),
    ],
)
async def test_a_key_reaches_only_the_families_its_scopes_name(
    edge: Edge, scopes: list[str], path: str, allowed: bool
) -> None:
    key = (await make_key(edge, scopes))["key"]
    r = await edge.gateway.get(path, headers=bearer(key))
    if allowed:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 403 and r.json()["error"] == "missing_scope", r.text
        assert ":read" in r.json()["detail"]


async def test_reading_is_not_writing(edge: Edge) -> None:
    reader = (await make_key(edge, ["users:read"]))["key"]
    r = await edge.gateway.post("/api/v1/devices/deactivate", json={"token": "t"}, headers=bearer(reader))
    assert r.status_code == 403 and "users:write" in r.json()["detail"], r.text


async def test_a_key_cannot_grant_more_than_it_holds(edge: Edge) -> None:
    manager = (await make_key(edge, ["api_keys:write", "users:read"]))["key"]
    r = await edge.gateway.post("/api/v1/api-keys", json={"name": "x", "scopes": ["users:write"]}, headers=bearer(manager))
    assert r.status_code == 403 and r.json()["error"] == "scope_not_held" and "users:write" in r.json()["detail"]
    r = await edge.gateway.post("/api/v1/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=bearer(manager))
    assert r.status_code == 403
    assert (await make_key(edge, ["users:read"], as_key=manager))["scopes"] == ["users:read"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x", "scopes": ["users:delete"]}, ["scopes", 0]),
        ({"name": "x", "scopes": []}, ["scopes"]),
        ({"name": " ", "scopes": ["admin"]}, ["name"]),
        ({"name": "x", "scopes": ["admin"], "expires": "never"}, ["expires"]),
        ({"scopes": ["admin"]}, ["name"]),
        ([], []),
    ],
)
async def test_a_malformed_key_request_is_a_422_naming_the_field(edge: Edge, body: Any, field: list[Any]) -> None:
    r = await edge.gateway.post("/api/v1/api-keys", json=body, headers=bearer(edge.api_key))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert any(problem["loc"][-len(field):] == field if field else True for problem in r.json()["detail"]), r.text


async def test_no_key_is_made_without_a_valid_key_whatever_the_body(edge: Edge) -> None:
    r = await edge.gateway.post("/api/v1/api-keys", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text


async def test_a_revoked_key_is_refused_at_once_on_this_replica(edge: Edge) -> None:
    made = await make_key(edge, ["ingest:read"])
    assert (await edge.gateway.get("/api/v1/ingest/rejections", headers=bearer(made["key"]))).status_code == 200
    r = await edge.gateway.delete(f"/api/v1/api-keys/{made['id']}", headers=bearer(edge.api_key))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None, r.text
    refused = await edge.gateway.get("/api/v1/ingest/rejections", headers=bearer(made["key"]))
    assert refused.status_code == 401, refused.text
    again = await edge.gateway.delete(f"/api/v1/api-keys/{made['id']}", headers=bearer(edge.api_key))
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]


async def test_a_key_revoked_on_another_replica_stops_within_the_cache_period(edge: Edge, other_replica: httpx.AsyncClient) -> None:
    made = await make_key(edge, ["ingest:read"])
    assert (await other_replica.get("/api/v1/ingest/rejections", headers=bearer(made["key"]))).status_code == 200
    revoked = await edge.gateway.delete(f"/api/v1/api-keys/{made['id']}", headers=bearer(edge.api_key))
    assert revoked.status_code == 200
    period = get_settings().api_key_cache_seconds

    async def refused() -> bool:
        r = await other_replica.get("/api/v1/ingest/rejections", headers=bearer(made["key"]))
        return r.status_code == 401

    await eventually(refused, timeout=period + 5)  # the revocation's bound, with room for a loaded machine


async def test_the_last_key_that_can_manage_keys_cannot_be_revoked(edge: Edge) -> None:
    listed = (await edge.gateway.get("/api/v1/api-keys", headers=bearer(edge.api_key))).json()["api_keys"]
    default = next(k for k in listed if k["name"] == "default")
    r = await edge.gateway.delete(f"/api/v1/api-keys/{default['id']}", headers=bearer(edge.api_key))
    assert r.status_code == 409 and r.json()["error"] == "last_key", r.text
    successor = await make_key(edge, ["api_keys:write"])
    r = await edge.gateway.delete(f"/api/v1/api-keys/{default['id']}", headers=bearer(successor["key"]))
    assert r.status_code == 200, r.text
    assert (await edge.gateway.get("/api/v1/api-keys", headers=bearer(edge.api_key))).status_code == 401


async def test_another_workspaces_key_is_a_404(edge: Edge, other_edge: Edge) -> None:
    theirs = await make_key(other_edge, ["users:read"])
    r = await edge.gateway.delete(f"/api/v1/api-keys/{theirs['id']}", headers=bearer(edge.api_key))
    assert r.status_code == 404, r.text
    mine = (await edge.gateway.get("/api/v1/api-keys", headers=bearer(edge.api_key))).json()["api_keys"]
    assert theirs["id"] not in {k["id"] for k in mine}
