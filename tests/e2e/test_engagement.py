"""Every outcome of a send is an event on the user's timeline (the real stack: scheduler → dispatcher → sinks →
EVENTS → profiles), and a test send goes through a channel's real provider with the answer in the response."""

import secrets
import uuid
from typing import Any

from herald.stack import Stack
from tests.conftest import eventually
from tests.e2e.conftest import Workspace


async def timeline_with(space: Workspace, user: str, *names: str) -> list[dict[str, Any]]:
    """The user's timeline once every one of these events is on it."""

    async def check() -> list[dict[str, Any]] | None:
        r = await space.api.get(f"/api/v1/users/{user}/events")
        events: list[dict[str, Any]] = r.json()["events"] if r.status_code == 200 else []
        return events if all(any(e["name"] == n for e in events) for n in names) else None

    return await eventually(check, timeout=30)


def one(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [e for e in events if e["name"] == name]
    return found


async def a_user(space: Workspace, **traits: Any) -> str:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await space.identify(user, {"first_name": "Ada", **traits})
    await space.stored(user)
    return user


async def test_sent_delivered_and_bounced_are_on_the_users_timeline_with_the_send_and_campaign(ws: Workspace) -> None:
    campaign = await ws.campaign(delay_seconds=0, cancel_on=[], message={"subject": "Hi", "body": "Your {{ event.properties.name }}"})
    fine = await a_user(ws, email=f"fine-{uuid.uuid4().hex[:6]}@example.com")
    gone_address = f"gone-{uuid.uuid4().hex[:6]}@example.com"
    assert (await ws.sink.post("/email/bounces", json={"address": gone_address})).status_code < 300
    gone = await a_user(ws, email=gone_address)
    for user in (fine, gone):
        assert (await ws.track(user, properties={"name": "Kite", "price": 150})).status_code == 200

    events = await timeline_with(ws, fine, "$message_sent", "$message_delivered")
    sent, delivered = one(events, "$message_sent"), one(events, "$message_delivered")
    assert delivered["properties"] == {"send_id": sent["properties"]["send_id"], "campaign_id": campaign["id"], "channel": "email"}
    [message] = await ws.messages(fine)
    assert message["send_id"] == sent["properties"]["send_id"] and message["status"] == "sent"

    events = await timeline_with(ws, gone, "$message_bounced")
    bounced = one(events, "$message_bounced")["properties"]
    assert (bounced["campaign_id"], bounced["channel"], bounced["reason_code"]) == (campaign["id"], "email", "hard_bounce")
    assert not [e for e in events if e["name"] in ("$message_delivered", "$message_failed")]


async def test_a_webhooks_2xx_is_delivered(ws: Workspace, stack: Stack) -> None:
    hook = f"/hooks/{uuid.uuid4().hex[:8]}"
    await ws.campaign(channel="webhook", delay_seconds=0, cancel_on=[],
                      message={"url": f"{stack.config.url('sinks')}/webhooks{hook}", "body": {"hi": "{{ user.user_id }}"}})
    user = await a_user(ws)
    assert (await ws.track(user, properties={"name": "Kite", "price": 150})).status_code == 200
    events = await timeline_with(ws, user, "$message_delivered")
    assert one(events, "$message_delivered")["properties"]["channel"] == "webhook"


async def test_a_test_send_goes_through_the_real_provider_and_answers_how_it_went(ws: Workspace) -> None:
    address = f"test-{uuid.uuid4().hex[:6]}@example.com"
    sent = await ws.api.post("/api/v1/channels/test", json={
        "channel": "email", "address": address, "message": {"subject": "Checking {{ 1 | plus: 1 }}", "body": "Hello"},
    })
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "sent" and sent.json()["recipient"] == address
    [email] = await eventually(lambda: ws.emails_to(address), timeout=10)
    assert email["subject"] == "Checking 2"

    user = await a_user(ws, email=f"ada-{uuid.uuid4().hex[:6]}@example.com")
    rendered = await ws.api.post("/api/v1/channels/test", json={
        "channel": "email", "user_id": user, "message": {"subject": "Hi {{ user.traits.first_name }}", "body": "b"},
    })
    assert rendered.json()["status"] == "sent", rendered.text
    events = (await ws.api.get(f"/api/v1/users/{user}/events")).json()["events"]
    assert not [e for e in events if e["name"].startswith("$message_")]  # a test send is nobody's campaign's

    # Push to one device token, with the APNs credentials the sink issued.
    key = (await ws.sink.post("/apns/keys")).json()
    apns = {k: key[k] for k in ("team_id", "key_id", "private_key")} | {"topic": "com.example.shop", "environment": "sandbox"}
    assert (await ws.api.put("/api/v1/channels/apns", json=apns)).status_code == 200
    token = secrets.token_hex(32)
    pushed = await ws.api.post("/api/v1/channels/test", json={
        "channel": "push", "address": token, "platform": "ios", "message": {"title": "Test", "body": "It works"},
    })
    assert pushed.status_code == 200 and pushed.json()["status"] == "sent", pushed.text
    [device] = pushed.json()["devices"]
    assert (device["service"], device["status"]) == ("apns", "sent")
    pushes = [p for p in (await ws.sink.get("/messages")).json()["pushes"] if p["token"] == token]
    assert pushes and pushes[0]["payload"]["aps"]["alert"] == {"title": "Test", "body": "It works"}

    # What cannot go is said, never a 5xx.
    unknown = await ws.api.post("/api/v1/channels/test", json={"channel": "email", "user_id": "nobody-here",
                                                               "message": {"subject": "s", "body": "b"}})
    assert unknown.status_code == 404
    invalid = await ws.api.post("/api/v1/channels/test", json={"channel": "email", "address": address, "message": {"body": "b"}})
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "message", "subject"]
    both = await ws.api.post("/api/v1/channels/test", json={"channel": "sms", "message": {"body": "b"}})
    assert both.status_code == 422
    no_address = await ws.api.post("/api/v1/channels/test", json={"channel": "email", "user_id": await a_user(ws),
                                                                  "message": {"subject": "s", "body": "b"}})
    assert (no_address.json()["status"], no_address.json()["reason_code"]) == ("skipped", "no_address")


async def test_a_webhook_to_a_link_local_or_private_address_is_refused(ws: Workspace) -> None:
    # The stack allows loopback (its sinks are there), nothing else that is not public.
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/hook", "http://[fe80::1]/hook"):
        answer = await ws.api.post("/api/v1/channels/test", json={"channel": "webhook", "user_id": await a_user(ws),
                                                                  "message": {"url": url}})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["reason_code"]) == ("failed", "blocked_address"), answer.text
        assert "may not reach" in answer.json()["reason"]
