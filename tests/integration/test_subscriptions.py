"""Subscriptions and consent in the profiles service, on real PostgreSQL and NATS: states from traits, the API and
the C1 request (links, SMS replies), newest-wins and replays, groups, consent history, the timeline events each
change makes (on PROFILES, not moving last_seen), merges, the published view, and bad input."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from nats.aio.client import Client as NATS
from pydantic import ValidationError
from sqlalchemy import text, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import SUBSCRIPTION_SUBJECT, SendRequested, SubscriptionChange, SubscriptionSet
from kernel.db import unit_of_work
from kernel.errors import Unprocessable
from services.profiles import service as profiles_service
from services.profiles.app import build
from services.profiles.config import get_settings
from services.profiles.subscriptions import service as subscriptions
from services.scheduler import api as scheduler_api
from services.scheduler import service as scheduler
from services.scheduler.models import Campaign, ScheduledSend
from services.scheduler.schemas import CampaignIn, CampaignPatch
from services.segmenter import repository as segmenter_repository
from tests.conftest import eventually
from tests.integration.helpers import running
from tests.integration.test_dispatch_delivery import a_send, delivery, dispatcher, handle, responder, smtp  # noqa: F401
from tests.integration.test_profile_updates import T0, apply, event

IDENTIFY = "identify"


@pytest.fixture
async def api(workspace_id: str, infra: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build, get_settings, workspace_id) as client:
        yield client


async def group(api: httpx.AsyncClient, name: str = "Weekly digest", channel: str = "email") -> str:
    r = await api.post("/api/v1/subscription-groups", json={"channel": channel, "name": name, "description": "Fridays"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def states(api: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    r = await api.get(f"/api/v1/users/{user_id}/subscriptions")
    assert r.status_code == 200, r.text
    return r.json()


async def timeline(api: httpx.AsyncClient, user_id: str, name: str, n: int) -> list[dict[str, Any]]:
    """The user's events of this name once there are `n` of them (they arrive through EVENTS)."""

    async def found() -> list[dict[str, Any]]:
        r = await api.get(f"/api/v1/users/{user_id}/events")
        rows = [e for e in r.json()["events"] if e["name"] == name] if r.status_code == 200 else []
        return rows if len(rows) >= n else []

    return await eventually(found)


async def test_traits_in_braze_s_shape_set_states_newest_first_and_are_announced(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    js = nc.jetstream()
    digest = await group(api)
    resolved = await js.subscribe(f"profiles.events.{workspace_id}", ordered_consumer=True)
    newer = event(workspace_id, type=IDENTIFY, user_id="ada", timestamp=T0 + timedelta(hours=1), traits={
        "email_subscribe": "opted_in", "push_subscribe": "unsubscribed", "plan": "pro",
        "subscription_groups": [{"subscription_group_id": digest, "subscription_state": "subscribed"}],
    })
    older = event(workspace_id, type=IDENTIFY, user_id="ada", timestamp=T0, traits={
        "email_subscribe": "unsubscribed", "sms_subscribe": "subscribed",
        "subscription_groups": [{"subscription_group_id": digest, "subscription_state": "unsubscribed"},
                                {"subscription_group_id": "sg_nobody", "subscription_state": "subscribed"}],
    })
    await apply(sessions, js, newer)
    await apply(sessions, js, older)  # late: only sms is new to it
    await apply(sessions, js, newer)  # a redelivery changes nothing
    held = await states(api, "ada")
    assert held["email"]["state"] == "opted_in" and held["email"]["source"] == "sdk"
    assert held["email"]["at"].startswith("2026-11-01T01:00:00")
    assert held["push"]["state"] == "unsubscribed"
    assert held["sms"]["state"] == "subscribed"
    assert held["groups"] == {digest: {"state": "subscribed", "at": held["email"]["at"], "source": "sdk"}}
    profile = (await api.get("/api/v1/users/ada")).json()
    assert profile["traits"] == {"plan": "pro"}  # the subscription traits are states, not custom traits
    assert profile["subscriptions"] == held

    changes = await timeline(api, "ada", "$subscription_changed", 4)
    announced = sorted((e["properties"].get("group_id") or e["properties"]["channel"], e["properties"]["to"]) for e in changes)
    assert announced == sorted([("email", "opted_in"), ("push", "unsubscribed"), (digest, "subscribed"), ("sms", "subscribed")])
    email = next(e for e in changes if e["properties"]["channel"] == "email" and "group_id" not in e["properties"])
    assert email["properties"] == {"channel": "email", "from": None, "to": "opted_in", "source": "sdk", "subscribed": True}
    digest_change = next(e for e in changes if e["properties"].get("group_id") == digest)
    assert digest_change["properties"]["channel"] == "email"  # the group's channel
    again = (await api.get("/api/v1/users/ada")).json()
    assert again["computed"]["last_seen"] == profile["computed"]["last_seen"]  # a $ event is not the user being seen
    published = [orjson.loads((await resolved.next_msg(timeout=10)).data)["event"] for _ in range(6)]  # 2 identifies (the replay is de-duplicated), 4 changes
    assert sorted(e["event"] for e in published if e["type"] == "track") == ["$subscription_changed"] * 4  # resolved events


async def test_the_api_sets_states_and_a_repeat_or_an_older_change_changes_nothing(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id="bo", traits={"email": "bo@example.com"}))
    digest = await group(api)
    at = "2026-11-02T09:00:00Z"
    body = {"email": {"state": "unsubscribed", "at": at, "source": "preference_center"},
            "groups": {digest: {"state": "subscribed", "at": at}}}
    r = await api.put("/api/v1/users/bo/subscriptions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == {"state": "unsubscribed", "at": "2026-11-02T09:00:00Z", "source": "preference_center"}
    assert r.json()["groups"][digest]["source"] == "api"
    assert (await api.put("/api/v1/users/bo/subscriptions", json=body)).json() == r.json()  # a replay
    older = {"email": {"state": "subscribed", "at": "2026-11-01T09:00:00Z"}}
    assert (await api.put("/api/v1/users/bo/subscriptions", json=older)).json()["email"]["state"] == "unsubscribed"
    await timeline(api, "bo", "$subscription_changed", 2)
    listed = (await api.get(f"/api/v1/subscription-groups/{digest}")).json()
    assert listed["subscribed"] == 1
    r = await api.get("/api/v1/users/bo/events")
    assert len([e for e in r.json()["events"] if e["name"] == "$subscription_changed"]) == 2  # once each, never again


async def test_another_service_sets_a_state_over_the_request_reply_subject(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id="cy", traits={"phone": "+4915112345678"}))
    stop = SubscriptionChange(workspace_id=workspace_id, user_id="cy", channel="sms", state="unsubscribed", source="sms",
                              at=T0 + timedelta(days=1))
    answer = await bus.request(nc, SUBSCRIPTION_SUBJECT, stop, SubscriptionSet)
    assert answer.found and answer.changed and answer.current is not None and answer.current.state == "unsubscribed"
    assert (await bus.request(nc, SUBSCRIPTION_SUBJECT, stop, SubscriptionSet)).changed is False  # a replay
    nobody = stop.model_copy(update={"user_id": "nobody"})
    assert (await bus.request(nc, SUBSCRIPTION_SUBJECT, nobody, SubscriptionSet)).error == "no_user"
    other = stop.model_copy(update={"workspace_id": f"{workspace_id}x"})
    assert (await bus.request(nc, SUBSCRIPTION_SUBJECT, other, SubscriptionSet)).found is False  # never across workspaces
    unknown = SubscriptionChange(workspace_id=workspace_id, user_id="cy", group_id="sg_unknown", state="unsubscribed",
                                 source="link", at=T0)
    assert (await bus.request(nc, SUBSCRIPTION_SUBJECT, unknown, SubscriptionSet)).error == "unknown_group"
    (change,) = await timeline(api, "cy", "$subscription_changed", 1)
    assert change["properties"]["source"] == "sms" and change["properties"]["subscribed"] is False
    assert (await states(api, "cy"))["sms"]["source"] == "sms"


async def test_groups_are_paged_edited_archived_and_deleted_only_when_empty(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    ids = [await group(api, f"List {i}", channel="push" if i % 2 else "email") for i in range(5)]
    seen, cursor = [], None
    while True:
        r = await api.get("/api/v1/subscription-groups", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [g["id"] for g in r.json()["groups"]]
        if (cursor := r.json()["next_cursor"]) is None:
            break
    assert seen == ids[::-1]
    push = (await api.get("/api/v1/subscription-groups", params={"channel": "push"})).json()["groups"]
    assert [g["id"] for g in push] == [ids[3], ids[1]]
    r = await api.patch(f"/api/v1/subscription-groups/{ids[0]}", json={"name": "Monthly", "description": None})
    assert r.status_code == 200 and r.json()["name"] == "Monthly" and r.json()["description"] is None
    assert (await api.delete(f"/api/v1/subscription-groups/{ids[1]}")).json() == {"id": ids[1], "deleted": True, "archived": False}
    assert (await api.get(f"/api/v1/subscription-groups/{ids[1]}")).status_code == 404

    await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id="di"))
    await api.put("/api/v1/users/di/subscriptions", json={"groups": {ids[0]: {"state": "unsubscribed"}}})
    assert (await api.delete(f"/api/v1/subscription-groups/{ids[0]}")).json() == {"id": ids[0], "deleted": False, "archived": True}
    assert ids[0] not in [g["id"] for g in (await api.get("/api/v1/subscription-groups")).json()["groups"]]
    only = (await api.get("/api/v1/subscription-groups", params={"archived": "only"})).json()["groups"]
    assert [g["id"] for g in only] == [ids[0]]
    assert (await api.patch(f"/api/v1/subscription-groups/{ids[0]}", json={"name": "x"})).status_code == 409
    r = await api.put("/api/v1/users/di/subscriptions", json={"groups": {ids[0]: {"state": "subscribed"}}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "groups", ids[0]]
    assert (await api.post(f"/api/v1/subscription-groups/{ids[0]}/unarchive")).json()["archived_at"] is None
    assert (await states(api, "di"))["groups"][ids[0]]["state"] == "unsubscribed"  # kept through the archive


async def test_consent_history_is_kept_and_the_newest_decides(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id="ed"))
    granted = {"purpose": "marketing_email", "status": "granted", "policy_version": "2026-01", "source": "signup_form",
               "at": "2026-11-01T10:00:00Z"}
    withdrawn = {**granted, "status": "withdrawn", "policy_version": "2026-02", "source": "api", "at": "2026-11-03T10:00:00Z"}
    older = {**granted, "policy_version": "2025-12", "at": "2026-10-01T10:00:00Z"}
    r = await api.post("/api/v1/users/ed/consents", json=granted)
    assert r.status_code == 201, r.text
    assert r.json()["created"] and r.json()["in_force"]
    assert (await api.post("/api/v1/users/ed/consents", json=withdrawn)).json()["in_force"] is True
    late = (await api.post("/api/v1/users/ed/consents", json=older)).json()
    assert late["created"] and not late["in_force"]  # kept in the history; the newest still decides
    replay = (await api.post("/api/v1/users/ed/consents", json=withdrawn)).json()
    assert replay["created"] is False and replay["in_force"] is True
    body = (await api.get("/api/v1/users/ed/consents")).json()
    assert body["in_force"]["marketing_email"]["status"] == "withdrawn"
    assert [c["policy_version"] for c in body["history"]] == ["2026-02", "2026-01", "2025-12"]
    changes = await timeline(api, "ed", "$consent_changed", 2)
    assert sorted((c["properties"]["from"] or "", c["properties"]["to"]) for c in changes) == [
        ("", "granted"), ("granted", "withdrawn")
    ]


async def test_a_merge_keeps_the_newest_state_of_each_and_every_consent(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, type=IDENTIFY, user_id="fay", timestamp=T0,
                                    traits={"email_subscribe": "subscribed", "push_subscribe": "opted_in"}))
    await apply(sessions, js, event(workspace_id, type=IDENTIFY, anonymous_id="anon-fay", timestamp=T0 + timedelta(hours=2),
                                    traits={"email_subscribe": "unsubscribed"}))
    r = await api.post("/api/v1/users/anon-fay/consents", params={"by": "anonymous_id"},
                       json={"purpose": "analytics", "status": "granted", "policy_version": "1"})
    assert r.status_code == 201, r.text
    await apply(sessions, js, event(workspace_id, type=IDENTIFY, user_id="fay", anonymous_id="anon-fay", timestamp=T0 + timedelta(hours=3)))
    held = await states(api, "fay")
    assert (held["email"]["state"], held["push"]["state"]) == ("unsubscribed", "opted_in")
    assert (await api.get("/api/v1/users/fay/consents")).json()["in_force"]["analytics"]["status"] == "granted"


async def test_the_published_view_shows_states_by_channel_and_group(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id="gus"))
    digest = await group(api, channel="sms")
    await api.put("/api/v1/users/gus/subscriptions", json={"email": {"state": "subscribed"}, "groups": {digest: {"state": "subscribed"}}})
    async with unit_of_work(sessions) as s:
        rows = (await s.execute(text(
            "SELECT channel, group_id, state, source FROM profiles.segment_subscriptions WHERE workspace_id = :ws ORDER BY 1, 2"
        ), {"ws": workspace_id})).all()
    assert [tuple(r) for r in rows] == [("email", None, "subscribed", "api"), ("sms", digest, "subscribed", "api")]


@pytest.mark.parametrize(
    "path, body, loc",
    [
        ("/api/v1/users/hal/subscriptions", {"email": {"state": "maybe"}}, ["body", "email", "state"]),
        ("/api/v1/users/hal/subscriptions", {"emial": {"state": "subscribed"}}, ["body", "emial"]),
        ("/api/v1/users/hal/subscriptions", {"push": {"state": "subscribed", "at": "1999-01-01T00:00:00Z"}}, ["body", "push", "at"]),
        ("/api/v1/users/hal/subscriptions", {"sms": {"state": "subscribed", "source": "a b"}}, ["body", "sms", "source"]),
        ("/api/v1/users/hal/subscriptions", {"groups": {"sg_x": {"state": "opted_in"}}}, ["body", "groups", "sg_x", "state"]),
        ("/api/v1/users/hal/subscriptions", {"groups": {"weekly": {"state": "subscribed"}}}, ["body", "groups", "weekly", "[key]"]),
        ("/api/v1/users/hal/consents", {"purpose": "ads", "status": "yes", "policy_version": "1"}, ["body", "status"]),
        ("/api/v1/users/hal/consents", {"purpose": "ads", "status": "granted"}, ["body", "policy_version"]),
        ("/api/v1/users/hal/consents", {"purpose": "ads", "status": "granted", "policy_version": "a\x00"}, ["body", "policy_version"]),
        ("/api/v1/subscription-groups", {"channel": "fax", "name": "x"}, ["body", "channel"]),
        ("/api/v1/subscription-groups", {"channel": "email", "name": ""}, ["body", "name"]),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str,
    path: str, body: dict[str, Any], loc: list[str],
) -> None:
    await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id="hal"))
    r = await api.request("PUT" if path.endswith("/subscriptions") else "POST", path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc


async def test_unknown_users_and_groups_and_other_workspaces_are_404(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id="ivy"))
    assert (await api.get("/api/v1/users/nobody/subscriptions")).status_code == 404
    assert (await api.post("/api/v1/users/nobody/consents", json={"purpose": "a", "status": "granted", "policy_version": "1"})).status_code == 404
    r = await api.put("/api/v1/users/ivy/subscriptions", json={"groups": {"sg_unknown": {"state": "subscribed"}}})
    assert r.status_code == 404 and "sg_unknown" in r.json()["detail"]
    other = f"ws_{uuid.uuid4().hex[:16]}"
    async with running(build, get_settings, other) as elsewhere:
        theirs = await group(elsewhere)
        assert (await elsewhere.get("/api/v1/users/ivy/subscriptions")).status_code == 404
    assert (await api.get(f"/api/v1/subscription-groups/{theirs}")).status_code == 404
    assert (await api.delete(f"/api/v1/subscription-groups/{theirs}")).status_code == 404
    r = await api.put("/api/v1/users/ivy/subscriptions", json={"groups": {theirs: {"state": "subscribed"}}})
    assert r.status_code == 404


# --- the dispatcher's rule: a send the user's states refuse is skipped before it is rendered ---------------------


async def _set(sessions: async_sessionmaker[AsyncSession], workspace_id: str, profile_id: str, **what: Any) -> None:
    async with unit_of_work(sessions) as s:
        answer, _ = await subscriptions.set_from_request(s, SubscriptionChange(
            workspace_id=workspace_id, profile_id=profile_id, source="api", at=T0, **what,
        ))
    assert answer.current is not None, answer


async def test_the_dispatcher_skips_what_the_user_left_and_a_transactional_send_only_ignores_marketing_state(
    dispatcher: Any, responder: None, smtp: Any, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str,  # noqa: F811
) -> None:
    outcomes = await nc.jetstream().subscribe(f"events.{workspace_id}.track", ordered_consumer=True)
    async with unit_of_work(sessions) as s:
        digest = (await subscriptions.create_group(s, workspace_id, "email", "Weekly digest", None)).group_id
    users = {}
    for name in ("left", "never", "member"):  # made as the event path makes them, so their outcome events land on them
        await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id=name, traits={"email": f"{name}@example.com"}))
        async with unit_of_work(sessions) as s:
            users[name] = (await profiles_service.find_profile(s, workspace_id, name, "user_id")).profile_id
    left, never, member = users["left"], users["never"], users["member"]
    await _set(sessions, workspace_id, left, channel="email", state="unsubscribed")
    await _set(sessions, workspace_id, left, group_id=digest, state="unsubscribed")
    await _set(sessions, workspace_id, member, channel="email", state="opted_in")
    await _set(sessions, workspace_id, member, group_id=digest, state="subscribed")
    message = {"subject": "Hi", "body": "News."}

    def send(profile_id: str, transactional: bool = False, group: str | None = None) -> SendRequested:
        return a_send(workspace_id, profile_id, "email", message).model_copy(update={
            "transactional": transactional, "subscription_group_id": group,
            "user_id": next(u for u, p in users.items() if p == profile_id),
        })

    cases = {
        "left marketing": (send(left), ("skipped", "unsubscribed")),
        "left transactional": (send(left, transactional=True), ("sent", "ok")),
        "left its group, transactional": (send(left, transactional=True, group=digest), ("skipped", "left_group")),
        "never joined the group": (send(never, group=digest), ("skipped", "not_in_group")),
        "never joined, transactional": (send(never, transactional=True, group=digest), ("sent", "ok")),
        "no state: sendable": (send(never), ("sent", "ok")),
        "opted in and in the group": (send(member, group=digest), ("sent", "ok")),
    }
    await handle(dispatcher, *(s for s, _ in cases.values()))
    for name, (sent, expected) in cases.items():
        row = await delivery(sessions, sent.send_id)
        assert (row.status, row.reason_code) == expected, name
    skipped = await delivery(sessions, cases["left its group, transactional"][0].send_id)
    assert skipped.reason is not None and digest in skipped.reason and "api" in skipped.reason
    emailed = sorted(e["send_id"] for e in smtp.catcher.emails)
    assert emailed == sorted(s.send_id for s, (status, _) in cases.values() if status == "sent")
    events = [orjson.loads((await outcomes.next_msg(timeout=5)).data) for _ in range(3 + 4 * 2)]  # skipped once, sent twice
    reasons = sorted(e["properties"]["reason_code"] for e in events if e["event"] == "$message_skipped")
    assert reasons == ["left_group", "not_in_group", "unsubscribed"]


# --- a campaign's subscription group (the scheduler) ----------------------------------------------------------


async def test_a_campaign_names_a_live_group_of_its_channel_and_its_sends_carry_it(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    email, push, gone = await group(api), await group(api, "Offers", "push"), await group(api, "Old")
    await api.post(f"/api/v1/subscription-groups/{gone}/archive")
    other = f"ws_{uuid.uuid4().hex[:16]}"
    async with running(build, get_settings, other) as elsewhere:
        theirs = await group(elsewhere)
    body = {"name": "Digest", "channel": "email", "trigger": {"event": "Bought"}, "message": {"subject": "Hi", "body": "News"}}

    async def create(**fields: Any) -> Campaign:
        async with unit_of_work(sessions) as s:
            return await scheduler.create_campaign(s, nc, workspace_id, CampaignIn.model_validate({**body, **fields}))

    made = await create(subscription_group_id=email, transactional=True)
    assert scheduler_api._out(made).subscription_group_id == email  # as the API shows it
    for group_id, words in ((push, "on channel push"), (gone, "archived"), (theirs, "no subscription group"),
                            ("sg_nobody", "no subscription group")):
        with pytest.raises(Unprocessable) as refused:
            await create(subscription_group_id=group_id)
        assert refused.value.detail[0]["loc"] == ["body", "subscription_group_id"] and words in refused.value.detail[0]["msg"]
    with pytest.raises(ValidationError) as invalid:
        CampaignIn.model_validate({**body, "subscription_group_id": "weekly"})
    assert invalid.value.errors()[0]["loc"] == ("subscription_group_id",)
    with pytest.raises(Unprocessable) as refused:
        async with unit_of_work(sessions) as s:
            await scheduler.update_campaign(s, nc, workspace_id, made.id, CampaignPatch(subscription_group_id=push))
    assert "on channel push" in refused.value.detail[0]["msg"]
    async with unit_of_work(sessions) as s:
        await s.execute(update(Campaign).where(Campaign.id == made.id).values(status="active"))
        s.add(ScheduledSend(
            send_id=uuid.uuid4().hex, workspace_id=workspace_id, campaign_id=made.id, profile_id="p_1",
            user_id="u1", channel="email", status="scheduled", triggered_at=T0, due_at=datetime.now(UTC) - timedelta(seconds=1),
            trigger={"message_id": "m", "name": "Bought", "properties": {}, "timestamp": T0.isoformat()},
        ))
    async with unit_of_work(sessions) as s:
        requested = await scheduler.release_due(s, nc, 1000, workspace_id=workspace_id)
    assert [(r.subscription_group_id, r.transactional) for r in requested] == [(email, True)]


async def test_a_segment_s_reach_leaves_out_who_unsubscribed_from_the_channel(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    for name in ("ann", "ben", "cat"):
        await apply(sessions, nc.jetstream(), event(workspace_id, type=IDENTIFY, user_id=name, traits={"email": f"{name}@example.com"}))
    await api.put("/api/v1/users/ben/subscriptions", json={"email": {"state": "unsubscribed"}})
    await api.put("/api/v1/users/cat/subscriptions", json={"email": {"state": "opted_in"}, "push": {"state": "unsubscribed"}})
    for name in ("ann", "cat"):
        r = await api.post(f"/api/v1/users/{name}/devices", json={"device_id": f"phone-{name}", "platform": "ios",
                                                                  "push_token": f"token-{name}-{workspace_id}"})
        assert r.status_code == 200, r.text
    async with unit_of_work(sessions) as s:
        counted = await segmenter_repository.reach(s, workspace_id, true())
    assert counted == {"size": 3, "email": 2, "push": 1}  # ben left email; cat left push
