"""In-app messages and content cards end to end on real NATS and PostgreSQL: sends go through the dispatcher's
SENDS consumer into the user's feed; an app fetches it through the gateway with its write key (CORS), reports
impressions, clicks and dismissals, and those land on the user's timeline; expiry, dismissal and other users'
and workspaces' messages are honoured; hostile input is a 4xx."""

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import build as build_gateway
from gateway.config import get_settings as gateway_settings
from herald.stack import create_workspace
from kernel import bus
from kernel.contracts import SendRequested
from kernel.db import unit_of_work
from services.dispatcher.app import build as build_dispatcher
from services.dispatcher.config import get_settings as dispatcher_settings
from services.dispatcher.inbox import repository as inbox_repository
from services.dispatcher.models import Delivery
from services.ingest.app import build as build_ingest
from services.ingest.config import get_settings as ingest_settings
from services.profiles.app import build as build_profiles
from services.profiles.config import get_settings as profiles_settings
from tests.conftest import Infra, eventually

ORIGIN = "https://shop.example"


@dataclass
class App:
    """An app of one workspace, talking to the gateway with its write key, and the workspace's API key."""

    workspace_id: str
    write_key: str
    api_key: str
    gateway: httpx.AsyncClient

    async def identify(self, user_id: str, anonymous_id: str, traits: dict[str, Any]) -> str:
        """Identify a user through the SDK edge; returns their profile id once the profiles service has it."""
        body = {"userId": user_id, "anonymousId": anonymous_id, "traits": traits}
        assert (await self.gateway.post("/v1/identify", json=body, auth=(self.write_key, ""))).status_code == 200

        async def profile() -> str | None:
            r = await self.gateway.get(f"/api/v1/users/{user_id}", headers={"authorization": f"Bearer {self.api_key}"})
            return r.json()["profile_id"] if r.status_code == 200 else None

        return str(await eventually(profile))

    async def feed(self, **params: Any) -> httpx.Response:
        return await self.gateway.get("/v1/messages", params=params, auth=(self.write_key, ""), headers={"origin": ORIGIN})

    async def report(self, message_id: str, body: Any, **kw: Any) -> httpx.Response:
        sent = {"auth": (self.write_key, ""), "headers": {"origin": ORIGIN}, **kw}
        return await self.gateway.post(f"/v1/messages/{message_id}/events", content=orjson.dumps(body), **sent)

    async def timeline(self, user_id: str) -> list[dict[str, Any]]:
        r = await self.gateway.get(f"/api/v1/users/{user_id}/events", headers={"authorization": f"Bearer {self.api_key}"})
        return list(r.json()["events"]) if r.status_code == 200 else []


@asynccontextmanager
async def services() -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The gateway, ingest, profiles and the dispatcher in-process, each with its lifespan (consumers and
    responders on the real bus); the gateway's calls reach each service's app at its configured URL."""
    for settings in (gateway_settings, ingest_settings, profiles_settings, dispatcher_settings):
        settings.cache_clear()
    gateway, ingest, profiles, dispatcher = build_gateway(), build_ingest(), build_profiles(), build_dispatcher()
    async with AsyncExitStack() as stack:
        for app in (ingest, profiles, dispatcher, gateway):
            await stack.enter_async_context(app.router.lifespan_context(app))
        res = gateway.state.resources
        assert res.http is not None
        await res.http.aclose()
        urls = gateway_settings()
        res.http = httpx.AsyncClient(timeout=10, mounts={
            urls.ingest_url: httpx.ASGITransport(app=ingest),
            urls.profiles_url: httpx.ASGITransport(app=profiles),
            urls.dispatcher_url: httpx.ASGITransport(app=dispatcher),
        })
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway", timeout=10) as client:
            yield dispatcher, client
        await res.http.aclose()


@pytest.fixture
async def stack(infra: Infra) -> AsyncIterator[tuple[FastAPI, App, App]]:
    """The services, an app of a workspace, and an app of another workspace."""
    mine, theirs = [await create_workspace(infra.database_url, name) for name in ("inbox", "other")]
    async with services() as (dispatcher, client):
        yield dispatcher, *(App(w["workspace_id"], w["write_key"], w["api_key"], client) for w in (mine, theirs))


def a_send(app: App, profile_id: str, user_id: str, channel: str, message: dict[str, Any]) -> SendRequested:
    return SendRequested.model_validate({
        "send_id": str(uuid.uuid4()), "workspace_id": app.workspace_id, "campaign_id": f"cmp_{channel}",
        "channel": channel, "profile_id": profile_id, "user_id": user_id, "message": message,
        "requested_at": datetime.now(UTC),
    })


async def delivered(sessions: async_sessionmaker[AsyncSession], *sends: SendRequested) -> dict[str, Delivery]:
    """The delivery-log rows of these sends, once each has its final status."""

    async def final() -> dict[str, Delivery] | None:
        async with sessions() as s:
            rows = {d.send_id: d for d in await s.scalars(select(Delivery).where(Delivery.send_id.in_([x.send_id for x in sends])))}
        return rows if len(rows) == len(sends) and all(d.status in ("sent", "skipped", "failed") for d in rows.values()) else None

    return dict(await eventually(final))


async def test_a_feed_is_rendered_fetched_with_cors_reported_on_and_on_the_timeline(
    stack: tuple[FastAPI, App, App], sessions: async_sessionmaker[AsyncSession], nc: Any
) -> None:
    _, app, other = stack
    ada = await app.identify("ada", "anon-ada", {"first_name": "Ada", "sku": "rs-42"})
    bob = await app.identify("bob", "anon-bob", {"first_name": "Bob"})

    modal = a_send(app, ada, "ada", "in_app", {
        "header": "Hi {{ user.traits.first_name }}", "body": "Your {{ user.traits.sku }} is waiting",
        "buttons": [{"text": "Open", "deep_link": "shop://cart/{{ user.traits.sku }}"}, {"text": "Later"}],
    })
    pinned = a_send(app, ada, "ada", "content_card", {"title": "Pinned for {{ user.traits.first_name }}", "pinned": True,
                                                      "link": "https://shop.example/vip"})
    card = a_send(app, ada, "ada", "content_card", {"title": "20% off", "image_url": "https://cdn.example.com/a.png"})
    card = card.model_copy(update={"variant": "B"})  # an experiment's arm: on the feed and on every report
    short = a_send(app, ada, "ada", "content_card", {"title": "Flash sale", "ttl_hours": 2 / 3600})  # two seconds
    late = a_send(app, ada, "ada", "content_card", {"title": "Too late", "expires_at": "2020-01-01T00:00:00Z"})
    evil = a_send(app, ada, "ada", "in_app", {"header": "x", "deep_link": "javascript:alert(1)"})
    for_bob = a_send(app, bob, "bob", "content_card", {"title": "Bob's card"})
    everything = [modal, pinned, card, short, late, evil, for_bob]
    await bus.publish_contracts(nc.jetstream(), everything)
    await bus.publish_contracts(nc.jetstream(), [modal])  # a redelivery: still one message
    rows = await delivered(sessions, *everything)
    assert [(rows[s.send_id].status, rows[s.send_id].reason_code) for s in (modal, late, evil)] == [
        ("sent", "ok"), ("skipped", "expired"), ("skipped", "invalid_link")]

    # CORS: a browser's preflight for a GET with Basic auth, then the fetch itself.
    preflight = await app.gateway.options("/v1/messages", headers={
        "origin": ORIGIN, "access-control-request-method": "GET", "access-control-request-headers": "authorization"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    r = await app.feed(userId="ada")
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "*" and r.headers["cache-control"] == "no-store"
    feed = r.json()["messages"]
    ids = [m["id"] for m in feed]
    assert ids[0] == pinned.send_id and set(ids) == {pinned.send_id, modal.send_id, card.send_id, short.send_id}
    assert ids.index(short.send_id) < ids.index(card.send_id) < ids.index(modal.send_id)  # newest first after the pin
    shown = next(m for m in feed if m["id"] == modal.send_id)
    assert shown["type"] == "in_app" and shown["content"] == {
        "layout": "modal", "header": "Hi Ada", "body": "Your rs-42 is waiting", "image_url": None, "deep_link": None,
        "buttons": [{"text": "Open", "deep_link": "shop://cart/rs-42", "url": None, "action": "open"},
                    {"text": "Later", "deep_link": None, "url": None, "action": "close"}]}
    assert feed[0]["content"]["title"] == "Pinned for Ada" and feed[0]["pinned"] is True
    by_anonymous = await app.gateway.get("/v1/messages", params={"anonymousId": "anon-ada", "writeKey": app.write_key,
                                                                 "channel": "content_card"})
    assert [m["id"] for m in by_anonymous.json()["messages"]] == [i for i in ids if i != modal.send_id]
    not_yet = await app.feed(userId="ada-before-identify", anonymousId="anon-ada", channel="content_card")
    assert not_yet.json() == by_anonymous.json()  # a user id nobody has yet: the anonymous id's messages

    # Expiry: the two-second card leaves by itself.
    async def expired() -> bool:
        return short.send_id not in [m["id"] for m in (await app.feed(userId="ada")).json()["messages"]]
    await eventually(expired, timeout=10)

    # Reports: an impression once, a button's click, a dismissal.
    first = await app.report(modal.send_id, {"type": "impression", "userId": "ada"})
    assert first.status_code == 200 and first.json() == {"success": True, "recorded": True}
    assert first.headers["access-control-allow-origin"] == "*"
    assert (await app.report(modal.send_id, {"type": "impression", "userId": "ada"})).json()["recorded"] is False
    clicked = await app.report(modal.send_id, {"type": "click", "button": 0, "anonymousId": "anon-ada"})
    assert clicked.status_code == 200, clicked.text
    assert (await app.report(card.send_id, {"type": "click", "userId": "ada", "writeKey": app.write_key},
                             auth=None)).status_code == 200
    assert (await app.report(pinned.send_id, {"type": "dismissal", "userId": "ada"})).status_code == 200
    after = (await app.feed(userId="ada")).json()["messages"]
    assert [(m["id"], m["viewed"], m["clicked"], m["variant"]) for m in after] == [(card.send_id, True, True, "B")]

    async def on_timeline() -> list[tuple[str, str, str | None]] | None:
        events = [e for e in await app.timeline("ada") if e["name"].startswith("$message_") and
                  e["name"] not in ("$message_sent", "$message_delivered", "$message_skipped")]
        found = sorted((e["name"], e["properties"]["send_id"], e["properties"].get("button_text")) for e in events)
        return found if len(found) == 4 else None

    assert await eventually(on_timeline, timeout=15) == sorted([
        ("$message_viewed", modal.send_id, None), ("$message_clicked", modal.send_id, "Open"),
        ("$message_clicked", card.send_id, None), ("$message_dismissed", pinned.send_id, None)])
    viewed = next(e for e in await app.timeline("ada") if e["name"] == "$message_viewed")
    assert viewed["properties"] == {"campaign_id": "cmp_in_app", "send_id": modal.send_id, "channel": "in_app"}
    card_click = next(e for e in await app.timeline("ada") if e["properties"].get("send_id") == card.send_id
                      and e["name"] == "$message_clicked")
    assert card_click["properties"] == {"campaign_id": "cmp_content_card", "send_id": card.send_id,
                                        "channel": "content_card", "variant": "B"}

    # Someone else's message is not there: another user, another workspace, an unknown id.
    assert (await app.report(for_bob.send_id, {"type": "click", "userId": "ada"})).status_code == 404
    assert (await app.report(card.send_id, {"type": "click", "userId": "bob"})).status_code == 404
    assert (await other.report(card.send_id, {"type": "click", "userId": "ada"})).status_code == 404
    assert (await other.feed(userId="ada")).json() == {"messages": []}
    assert (await app.report(str(uuid.uuid4()), {"type": "click", "userId": "ada"})).status_code == 404
    assert (await app.feed(userId="nobody")).json() == {"messages": []}
    assert [m["id"] for m in (await app.feed(userId="bob")).json()["messages"]] == [for_bob.send_id]


async def test_hostile_input_is_a_precise_4xx(stack: tuple[FastAPI, App, App]) -> None:
    _, app, _ = stack
    for params, field in (
        ({}, "userId"), ({"userId": "ada", "limit": 0}, "limit"), ({"userId": "ada", "limit": 101}, "limit"),
        ({"userId": "ada", "limit": "x"}, "limit"), ({"userId": "a" * 513}, "userId"),
        ({"userId": "ada", "channel": "push"}, "channel"), ({"userId": "a\x00b"}, "userId"),
    ):
        r = await app.feed(**params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"] == "validation_error" and field in str(r.json()["detail"]), (params, r.text)
        assert r.headers["access-control-allow-origin"] == "*"
    assert (await app.gateway.get("/v1/messages", params={"userId": "ada"})).status_code == 401
    assert (await app.gateway.get("/v1/messages", params={"userId": "ada", "writeKey": "wk_nope"})).status_code == 401

    message = str(uuid.uuid4())
    for body, status, field in (
        ({"type": "look", "userId": "ada"}, 422, "type"), ({"type": "click"}, 422, "userId"),
        ({"type": "click", "userId": "ada", "button": 7}, 422, "button"),
        ({"type": "click", "userId": "ada", "extra": 1}, 422, "extra"), ([1, 2], 422, "body"),
    ):
        r = await app.report(message, body)
        assert r.status_code == status and field in r.text, (body, r.text)
    bad_json = await app.gateway.post(f"/v1/messages/{message}/events", content=b"{", auth=(app.write_key, ""))
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_json"
    huge = await app.report(message, {"type": "click", "userId": "a" * 5000})
    assert huge.status_code == 400 and huge.json()["error"] == "payload_too_large"  # Segment's answer to oversize
    for odd in ("..", "a%2Fb", "x" * 65, "%00"):
        r = await app.gateway.post(f"/v1/messages/{odd}/events", json={"type": "click", "userId": "ada"},
                                   auth=(app.write_key, ""))
        assert r.status_code == 404, (odd, r.text)
    unauthenticated = await app.gateway.post(f"/v1/messages/{message}/events", json={"type": "click", "userId": "ada"})
    assert unauthenticated.status_code == 401


async def test_a_report_for_a_button_the_message_lacks_names_the_field(
    stack: tuple[FastAPI, App, App], sessions: async_sessionmaker[AsyncSession], nc: Any
) -> None:
    _, app, _ = stack
    cara = await app.identify("cara", "anon-cara", {})
    modal = a_send(app, cara, "cara", "in_app", {"header": "One button", "buttons": [{"text": "OK"}],
                                                 "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()})
    await bus.publish_contracts(nc.jetstream(), [modal])
    await delivered(sessions, modal)
    r = await app.report(modal.send_id, {"type": "click", "userId": "cara", "button": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "button"], r.text
    assert (await app.report(modal.send_id, {"type": "dismissal", "userId": "cara"})).json()["recorded"] is True
    assert (await app.feed(userId="cara")).json() == {"messages": []}


async def test_an_erased_users_messages_are_deleted(
    stack: tuple[FastAPI, App, App], sessions: async_sessionmaker[AsyncSession], nc: Any
) -> None:
    _, app, _ = stack
    dan = await app.identify("dan", "anon-dan", {"first_name": "Dan"})
    eve = await app.identify("eve", "anon-eve", {"first_name": "Eve"})
    cards = [a_send(app, dan, "dan", "content_card", {"title": "Hi {{ user.traits.first_name }}"}),
             a_send(app, eve, "eve", "content_card", {"title": "Hi {{ user.traits.first_name }}"})]
    await bus.publish_contracts(nc.jetstream(), cards)
    await delivered(sessions, *cards)
    async with unit_of_work(sessions) as s:
        assert await inbox_repository.erase_profiles(s, app.workspace_id, [dan]) == 1
    assert (await app.feed(userId="dan")).json() == {"messages": []}
    assert [m["content"]["title"] for m in (await app.feed(userId="eve")).json()["messages"]] == ["Hi Eve"]
