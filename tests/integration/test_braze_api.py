"""Braze's /users/track and /users/identify through the gateway (API key) and ingest, onto profiles running
in-process on the real NATS and PostgreSQL: attributes (with Braze's operations), events and purchases land on
the profile; a bad object is listed by array and index with its field while the rest is stored; alias-only
profiles merge into an external id; an email names the profile that has it."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.profiles.app import build as build_profiles
from services.profiles.config import get_settings as profiles_settings
from tests.conftest import eventually
from tests.integration.conftest import Edge
from tests.integration.helpers import running

AT = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()


@pytest.fixture
async def profiles(edge: Edge) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build_profiles, profiles_settings, edge.workspace_id) as client:
        yield client


def braze(edge: Edge, path: str, body: Any, key: str | None = None) -> Any:
    return edge.gateway.post(path, json=body, headers={"authorization": f"Bearer {key or edge.api_key}"})


async def profile(profiles: httpx.AsyncClient, who: str, by: str = "user_id", until: Any = bool) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        r = await profiles.get(f"/api/v1/users/{who}", params={"by": by})
        return r.json() if r.status_code == 200 and until(r.json()) else None

    return await eventually(found, timeout=20, interval=0.2)


async def test_track_stores_attributes_events_and_purchases_on_the_profile(edge: Edge, profiles: httpx.AsyncClient) -> None:
    r = await braze(edge, "/users/track", {
        "attributes": [{"external_id": "ada", "first_name": "Ada", "email_subscribe": "opted_in", "visits": 1},
                       {"external_id": "ada", "visits": {"inc": 2}, "tags": {"add": ["vip"]}}],
        "events": [{"external_id": "ada", "name": "Played", "time": AT, "properties": {"level": 3}}],
        "purchases": [{"external_id": "ada", "product_id": "sku-1", "currency": "usd", "price": 12.5, "quantity": 2,
                       "time": AT}],
    })
    assert r.status_code == 201, r.text
    assert r.json() == {"message": "success", "attributes_processed": 2, "events_processed": 1, "purchases_processed": 1}
    ada = await profile(profiles, "ada", until=lambda p: p["computed"]["purchases"]["count"] == 1 and p["traits"].get("visits") == 3)
    assert ada["traits"]["first_name"] == "Ada" and ada["traits"]["tags"] == ["vip"]
    assert ada["computed"]["purchases"]["revenue"] == 25.0
    events = (await profiles.get("/api/v1/users/ada/events")).json()["events"]
    assert {e["name"] for e in events} >= {"Played", "Order Completed", "identify"}
    played = next(e for e in events if e["name"] == "Played")
    assert played["properties"] == {"level": 3} and played["timestamp"].startswith(AT[:19])


async def test_bad_objects_are_listed_with_their_field_and_the_rest_is_stored(edge: Edge, profiles: httpx.AsyncClient) -> None:
    r = await braze(edge, "/users/track", {
        "attributes": [{"first_name": "Nobody"}, {"external_id": "bob", "first_name": "Bob"}],
        "events": [{"external_id": "bob", "name": "Played"}, {"external_id": "bob", "braze_id": "x", "name": "A", "time": AT},
                   {"external_id": "bob", "name": "Won", "time": AT}],
        "purchases": [{"external_id": "bob", "product_id": "p", "currency": "EURO", "price": 1, "time": AT}],
    })
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["attributes_processed"], body["events_processed"], body["purchases_processed"]) == (1, 1, 0)
    errors = {(e["input_array"], e["index"]): e["type"] for e in body["errors"]}
    assert set(errors) == {("attributes", 0), ("events", 0), ("events", 1), ("purchases", 0)}
    assert "external_id" in errors[("attributes", 0)] and errors[("events", 0)].startswith("time")
    assert "braze_id" in errors[("events", 1)] and errors[("purchases", 0)].startswith("currency")
    bob = await profile(profiles, "bob", until=lambda p: "Won" in p["computed"]["event_counts"])
    assert bob["traits"] == {"first_name": "Bob"} and "Played" not in bob["computed"]["event_counts"]


async def test_a_request_braze_cannot_take_is_a_4xx_naming_the_field(edge: Edge, other_edge: Edge) -> None:
    r = await braze(edge, "/users/track", {"events": [{"external_id": "x", "name": "E", "time": AT}] * 76})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["events"], r.text
    r = await braze(edge, "/users/track", {"event": []})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["event"], r.text
    r = await braze(edge, "/users/track", {"events": [{"name": "E", "time": AT}]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_objects", r.text
    assert r.json()["errors"][0]["index"] == 0 and "external_id" in r.json()["errors"][0]["type"]
    r = await edge.gateway.post("/users/track", content=b"{", headers={"authorization": f"Bearer {edge.api_key}"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_json", r.text
    r = await edge.gateway.post("/users/track", json={"attributes": []})
    assert r.status_code == 401, r.text
    r = await braze(edge, "/users/track", {"attributes": []}, key=edge.write_key)
    assert r.status_code == 401, r.text
    r = await braze(edge, "/users/identify", {"aliases_to_identify": [{"external_id": "x"}]})
    assert r.status_code == 400 and "user_alias" in r.json()["errors"][0]["type"], r.text


async def test_identify_merges_an_alias_only_profile_into_the_external_id(edge: Edge, profiles: httpx.AsyncClient) -> None:
    alias = {"alias_name": "a-123", "alias_label": "amplitude_id"}
    r = await braze(edge, "/users/track", {
        "attributes": [{"user_alias": alias, "_update_existing_only": False, "plan": "trial"}],
        "events": [{"user_alias": alias, "name": "Visited", "time": AT}],
    })
    assert r.status_code == 201, r.text
    alias_only = await profile(profiles, "alias:amplitude_id:a-123", by="anonymous_id",
                               until=lambda p: "Visited" in p["computed"]["event_counts"])
    assert alias_only["user_id"] is None and alias_only["traits"] == {"plan": "trial"}
    # Update-only mode makes nobody new: an alias no profile has is left alone.
    r = await braze(edge, "/users/track", {"attributes": [{"user_alias": {**alias, "alias_name": "nobody"},
                                                            "_update_existing_only": True, "plan": "x"}]})
    assert r.status_code == 201 and r.json()["attributes_processed"] == 1, r.text

    r = await braze(edge, "/users/identify", {"aliases_to_identify": [{"external_id": "carol", "user_alias": alias}]})
    assert r.status_code == 201 and r.json() == {"message": "success", "aliases_processed": 1}, r.text
    carol = await profile(profiles, "carol")
    assert carol["profile_id"] == alias_only["profile_id"] and carol["traits"]["plan"] == "trial"
    r = await profiles.get("/api/v1/users/alias:amplitude_id:nobody", params={"by": "anonymous_id"})
    assert r.status_code == 404


async def test_an_email_names_the_profile_that_has_it_else_an_email_only_one(edge: Edge, profiles: httpx.AsyncClient) -> None:
    r = await braze(edge, "/users/track", {"attributes": [{"external_id": "dan", "email": "Dan@Example.com"}]})
    assert r.status_code == 201, r.text
    await profile(profiles, "dan")
    r = await braze(edge, "/users/track", {
        "attributes": [{"email": "dan@example.com", "city_of_birth": "Oslo"}, {"email": "eve@example.com", "plan": "free"}],
    })
    assert r.status_code == 201, r.text
    dan = await profile(profiles, "dan", until=lambda p: "city_of_birth" in p["traits"])
    assert dan["traits"]["email"] == "dan@example.com"  # found in any case; the object sets it as given
    eve = await profile(profiles, "email:eve@example.com", by="anonymous_id")
    assert eve["user_id"] is None and eve["traits"] == {"plan": "free", "email": "eve@example.com"}
    r = await braze(edge, "/users/identify", {"emails_to_identify": [{"external_id": "eve", "email": "eve@example.com"}]})
    assert r.status_code == 201 and r.json()["emails_processed"] == 1, r.text
    assert (await profile(profiles, "eve"))["profile_id"] == eve["profile_id"]
