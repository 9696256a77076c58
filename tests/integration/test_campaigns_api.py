"""The campaigns management API as a tool uses it: pages of campaigns with filters, edits checked as
creation checks them and allowed per status (409 saying why), archiving that stops sending, and a
draft copy. The scheduler and the segmenter (for audience checks) run in-process on the session's
PostgreSQL and NATS."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.scheduler import domain
from services.scheduler.app import build as build_scheduler
from services.scheduler.config import get_settings as scheduler_settings
from services.scheduler.models import ScheduledSend
from services.segmenter.app import build as build_segmenter
from services.segmenter.config import get_settings as segmenter_settings
from tests.integration.helpers import running


@pytest.fixture
async def apis(workspace_id: str, infra: Any) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The scheduler's API and the segmenter's, for this workspace."""
    async with (
        running(build_segmenter, segmenter_settings, workspace_id) as segmenter,
        running(build_scheduler, scheduler_settings, workspace_id) as scheduler,
    ):
        yield scheduler, segmenter


@pytest.fixture
def api(apis: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> httpx.AsyncClient:
    return apis[0]


def body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "Abandoned cart",
        "channel": "email",
        "trigger": {"event": "Product Added"},
        "message": {"subject": "Still there, {{ user.traits.first_name | default: 'friend' }}?", "body": "Your cart waits."},
        **fields,
    }


async def made(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/campaigns", json=body(**fields))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def act(api: httpx.AsyncClient, campaign_id: str, action: str) -> dict[str, Any]:
    r = await api.post(f"/api/v1/campaigns/{campaign_id}/{action}")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_campaigns_are_listed_newest_first_a_page_at_a_time_and_filtered(api: httpx.AsyncClient) -> None:
    ids = [(await made(api, name=f"Campaign {i}"))["id"] for i in range(4)]
    hook = await made(api, name="Hook_100%", channel="webhook", message={"url": "https://hooks.example.com/x"})
    seen: list[str] = []
    cursor = None
    while True:
        r = await api.get("/api/v1/campaigns", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [c["id"] for c in r.json()["campaigns"]]
        if (cursor := r.json()["next_cursor"]) is None:
            break
    assert seen == [hook["id"], *reversed(ids)]
    await act(api, ids[0], "launch")
    await act(api, ids[1], "archive")

    async def listed(**params: Any) -> list[str]:
        r = await api.get("/api/v1/campaigns", params=params)
        assert r.status_code == 200, r.text
        return [c["name"] for c in r.json()["campaigns"]]

    assert await listed(status="active") == ["Campaign 0"]
    assert "Campaign 1" not in await listed()  # archived: left out unless asked for
    assert await listed(status="archived") == ["Campaign 1"]
    assert await listed(status=["draft", "archived"]) == ["Hook_100%", "Campaign 3", "Campaign 2", "Campaign 1"]
    assert await listed(channel="webhook") == ["Hook_100%"]
    assert await listed(query="100%") == ["Hook_100%"]
    assert await listed(query="k_1") == ["Hook_100%"]
    assert await listed(query="CAMPAIGN 3") == ["Campaign 3"]
    assert await listed(created_after=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    assert len(await listed(created_before=(datetime.now(UTC) + timedelta(hours=1)).isoformat())) == 4


@pytest.mark.parametrize(
    "params, loc",
    [
        ({"cursor": "c1.e30"}, ["query", "cursor"]),
        ({"status": "done"}, ["query", "status", 0]),
        ({"channel": "fax"}, ["query", "channel", 0]),
        ({"limit": 1000}, ["query", "limit"]),
        ({"query": "\x00"}, ["query", "query"]),
    ],
)
async def test_a_bad_list_parameter_is_a_422_naming_it(api: httpx.AsyncClient, params: dict[str, Any], loc: list[Any]) -> None:
    r = await api.get("/api/v1/campaigns", params=params)
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [loc]


async def test_a_draft_changes_anything_and_an_edit_is_checked_as_creation_is(api: httpx.AsyncClient) -> None:
    campaign = await made(api)
    r = await api.patch(f"/api/v1/campaigns/{campaign['id']}", json={
        "name": "Webhook cart", "channel": "webhook", "message": {"url": "https://hooks.example.com/cart"},
        "delay_seconds": 60, "cancel_on": ["Order Completed"], "ends_at": "2099-01-01T00:00:00Z",
    })
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["name"], changed["channel"], changed["delay_seconds"]) == ("Webhook cart", "webhook", 60)
    assert changed["message"]["url"] == "https://hooks.example.com/cart" and changed["cancel_on"] == ["Order Completed"]
    assert changed["trigger"] == campaign["trigger"] and changed["updated_at"] > campaign["updated_at"]
    cleared = await api.patch(f"/api/v1/campaigns/{campaign['id']}", json={"ends_at": None})
    assert cleared.status_code == 200 and cleared.json()["ends_at"] is None, cleared.text
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json() == cleared.json()


@pytest.mark.parametrize(
    "patch, loc, words",
    [
        ({"delay": 60}, ["body", "delay"], "Extra inputs"),
        ({"trigger": {"event": "x", "wehre": []}}, ["body", "trigger", "wehre"], "Extra inputs"),
        ({"audience": {"segment": "s"}}, ["body", "audience", "segment"], "Extra inputs"),
        ({"cancel_on": [{"event": "x", "if": []}]}, ["body", "cancel_on", 0, "if"], "Extra inputs"),
        ({"message": {"subject": "Hi {{ usr.traits.name }}", "body": "x"}}, ["body", "message", "subject"], "unknown variable `usr`"),
        ({"message": {"subject": "Hi", "body": "{{ 'x' | shout }}"}}, ["body", "message", "body"], "unknown filter `shout`"),
        ({"message": {"subject": "Hi", "body": "x", "bcc": "a@b.c"}}, ["body", "message", "bcc"], "Extra inputs"),
        ({"name": None}, ["body", "name"], ""),
        ({"name": "a\x00"}, ["body", "name"], "NUL"),
        ({"delay_seconds": -1}, ["body", "delay_seconds"], ""),
        ({"starts_at": "2099-01-02T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}, ["body"], "after starts_at"),
        ({"audience": {"segment_id": "seg_nowhere"}}, ["body", "audience", "segment_id"], "no segment"),
    ],
)
async def test_a_bad_edit_is_a_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, patch: dict[str, Any], loc: list[Any], words: str
) -> None:
    campaign = await made(api)
    r = await api.patch(f"/api/v1/campaigns/{campaign['id']}", json=patch)
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]][:1] == [loc], r.text
    assert words in r.json()["detail"][0]["msg"]
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json() == campaign


@pytest.mark.parametrize(
    "create, loc",
    [
        ({"delay": 1800}, ["body", "delay"]),
        ({"trigger": {"event": "Product Added", "filter": []}}, ["body", "trigger", "filter"]),
        ({"audience": {"segments": ["s"]}}, ["body", "audience", "segments"]),
    ],
)
async def test_unknown_fields_in_a_new_campaign_are_refused_naming_them(
    api: httpx.AsyncClient, create: dict[str, Any], loc: list[str]
) -> None:
    r = await api.post("/api/v1/campaigns", json=body(**create))
    assert r.status_code == 422, r.text
    assert loc in [d["loc"] for d in r.json()["detail"]]


async def test_what_a_campaign_may_change_depends_on_its_status(api: httpx.AsyncClient) -> None:
    campaign = await made(api)
    await act(api, campaign["id"], "launch")
    path = f"/api/v1/campaigns/{campaign['id']}"
    ok = await api.patch(path, json={"name": "Renamed", "message": {"subject": "New", "body": "Words"}, "ends_at": "2099-01-01T00:00:00Z"})
    assert ok.status_code == 200 and ok.json()["status"] == "active", ok.text
    assert (await api.patch(path, json={"trigger": campaign["trigger"]})).status_code == 200  # the same value: no change
    refused = await api.patch(path, json={"delay_seconds": 60, "trigger": {"event": "Other"}})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "not_editable" and "pause it to change delay_seconds, trigger" in refused.json()["detail"]

    await act(api, campaign["id"], "pause")
    assert (await api.patch(path, json={"delay_seconds": 60})).json()["delay_seconds"] == 60
    channel = await api.patch(path, json={"channel": "webhook", "message": {"url": "https://hooks.example.com/x"}})
    assert channel.status_code == 409 and "channel" in channel.json()["detail"], channel.text

    await act(api, campaign["id"], "archive")
    frozen = await api.patch(path, json={"name": "Again"})
    assert frozen.status_code == 409 and "archived" in frozen.json()["detail"], frozen.text
    relaunch = await api.post(f"{path}/launch")
    assert relaunch.status_code == 409 and "archived" in relaunch.json()["detail"], relaunch.text
    assert (await act(api, campaign["id"], "unarchive"))["status"] == "draft"
    assert (await act(api, campaign["id"], "launch"))["status"] == "active"


async def test_archiving_stops_the_campaign_and_cancels_what_it_was_about_to_send(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    campaign = await made(api, delay_seconds=3600)
    await act(api, campaign["id"], "launch")
    profile_id = f"p_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    async with unit_of_work(sessions) as s:
        s.add(ScheduledSend(
            send_id=domain.send_id(campaign["id"], "m1", profile_id), workspace_id=workspace_id, campaign_id=campaign["id"],
            profile_id=profile_id, user_id="ada", channel="email", status="scheduled",
            trigger={"message_id": "m1", "name": "Product Added", "properties": {}, "timestamp": now.isoformat()},
            triggered_at=now, due_at=now + timedelta(hours=1),
        ))
    archived = await act(api, campaign["id"], "archive")
    assert archived["status"] == "archived"
    assert (await act(api, campaign["id"], "archive"))["updated_at"] == archived["updated_at"]  # idempotent
    async with sessions() as s:
        send = await s.scalar(select(ScheduledSend).where(ScheduledSend.campaign_id == campaign["id"]))
        assert send is not None and (send.status, send.reason) == ("cancelled", "campaign archived")
    stats = (await api.get(f"/api/v1/campaigns/{campaign['id']}/stats")).json()
    assert stats["by_status"] == {"cancelled": 1}


async def test_a_duplicate_is_a_draft_copy_of_any_campaign(api: httpx.AsyncClient) -> None:
    campaign = await made(api, cancel_on=[{"event": "Order Completed", "where": [{"property": "total", "op": "gt", "value": 5}]}])
    await act(api, campaign["id"], "launch")
    copy = await api.post(f"/api/v1/campaigns/{campaign['id']}/duplicate")
    assert copy.status_code == 201, copy.text
    assert copy.json()["id"] != campaign["id"] and copy.json()["status"] == "draft"
    assert copy.json()["name"] == "Abandoned cart (copy)"
    same = ("channel", "trigger", "audience", "delay_seconds", "cancel_on", "starts_at", "ends_at", "message")
    assert {k: copy.json()[k] for k in same} == {k: campaign[k] for k in same}
    named = await api.post(f"/api/v1/campaigns/{campaign['id']}/duplicate", json={"name": "Cart v2"})
    assert named.status_code == 201 and named.json()["name"] == "Cart v2", named.text
    long = await made(api, name="x" * 200)
    assert (await api.post(f"/api/v1/campaigns/{long['id']}/duplicate")).json()["name"] == "x" * 193 + " (copy)"
    for bad, loc in (({"nam": "x"}, ["body", "nam"]), ({"name": ""}, ["body", "name"])):
        r = await api.post(f"/api/v1/campaigns/{campaign['id']}/duplicate", json=bad)
        assert r.status_code == 422 and [d["loc"] for d in r.json()["detail"]] == [loc], r.text


async def test_a_campaign_cannot_aim_at_an_archived_segment(apis: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    api, segments = apis
    made_segment = await segments.post("/api/v1/segments", json={"name": "Oslo", "filter": {"trait": "city", "op": "eq", "value": "Oslo"}})
    segment_id = made_segment.json()["id"]
    campaign = await made(api, audience={"segment_id": segment_id})
    assert (await segments.post(f"/api/v1/segments/{segment_id}/archive")).status_code == 200

    created = await api.post("/api/v1/campaigns", json=body(audience={"segment_id": segment_id}))
    assert created.status_code == 422 and "archived" in created.json()["detail"][0]["msg"], created.text
    path = f"/api/v1/campaigns/{campaign['id']}"
    assert (await api.patch(path, json={"name": "Renamed"})).status_code == 200  # its audience unchanged: not checked
    assert (await api.patch(path, json={"audience": None})).json()["audience"] is None
    again = await api.patch(path, json={"audience": {"segment_id": segment_id}})
    assert again.status_code == 422 and "archived" in again.json()["detail"][0]["msg"], again.text
    assert [d["loc"] for d in again.json()["detail"]] == [["body", "audience", "segment_id"]]


async def test_unknown_campaigns_are_404_for_every_route(api: httpx.AsyncClient) -> None:
    for method, path, payload in [
        ("GET", "/api/v1/campaigns/cmp_nope", None),
        ("PATCH", "/api/v1/campaigns/cmp_nope", {"name": "x"}),
        ("POST", "/api/v1/campaigns/cmp_nope/archive", None),
        ("POST", "/api/v1/campaigns/cmp_nope/unarchive", None),
        ("POST", "/api/v1/campaigns/cmp_nope/duplicate", None),
    ]:
        r = await api.request(method, path, json=payload)
        assert r.status_code == 404, (method, path, r.text)
