"""An SMS campaign through the real processes: an account the Twilio-compatible sink issued saved through the
gateway, texts arriving at the sink in E.164 with their segments counted, a bad number failing its own send, and
STOP / HELP / START texted back through the gateway's inbound webhook, signed as Twilio signs."""

import uuid
from typing import Any

import httpx

from tests.conftest import eventually
from tests.e2e.conftest import Workspace

SENDER = "+16502530000"


async def test_texts_go_out_in_e164_and_stop_texted_back_is_on_the_timeline_and_honoured(ws: Workspace) -> None:
    account = (await ws.sink.post("/twilio/accounts")).json()
    saved = await ws.api.put("/api/v1/channels/sms", json={**account, "from_number": "+1 650-253-0000"})
    assert saved.status_code == 200, saved.text
    assert account["auth_token"] not in saved.text and saved.json()["from_number"] == SENDER
    inbound_url = saved.json()["inbound_url"]  # under HERALD_PUBLIC_URL, which the local stack sets to its gateway
    assert inbound_url == str(ws.api.base_url).rstrip("/") + f"/v1/sms/inbound/{ws.workspace_id}"

    await ws.campaign(channel="sms", delay_seconds=0, cancel_on=[], message={
        "body": "Hi {{ user.traits.first_name }}, your {{ event.properties.name }} is waiting 🛒",
    })
    ada, bob = f"ada-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    await ws.identify(ada, {"first_name": "Ada", "phone": "+1 (415) 555-2671"})
    await ws.identify(bob, {"first_name": "Bob", "phone": "12345"})
    await ws.stored(ada)
    await ws.stored(bob)
    for user in (ada, bob):
        assert (await ws.track(user, properties={"name": "Red Shoes", "price": 150})).status_code == 200

    async def final(user: str, count: int = 1) -> list[dict[str, Any]] | None:
        messages = await ws.messages(user)
        done = [m for m in messages if m.get("status") in ("sent", "failed", "skipped")]
        return done if len(done) >= count else None

    [to_ada] = await eventually(lambda: final(ada), timeout=30)
    assert (to_ada["channel"], to_ada["status"], to_ada["recipient"]) == ("sms", "sent", "+14155552671")
    assert (to_ada["segments"], to_ada["encoding"]) == (1, "UCS-2")
    [to_bob] = await eventually(lambda: final(bob), timeout=30)
    assert (to_bob["status"], to_bob["reason_code"]) == ("failed", "invalid_number")
    assert "not a phone number" in to_bob["reason"]
    texts = [t for t in (await ws.sink.get("/messages")).json()["texts"] if t["account_sid"] == account["account_sid"]]
    assert [(t["to"], t["from"], t["body"], t["num_segments"]) for t in texts] == [
        ("+14155552671", SENDER, "Hi Ada, your Red Shoes is waiting 🛒", 1)
    ]

    async def text_back(body: str) -> dict[str, Any]:
        played: dict[str, Any] = (await ws.sink.post("/twilio/inbound", json={
            "url": inbound_url, "account_sid": account["account_sid"], "from": "+14155552671", "to": SENDER, "body": body,
        })).json()
        return played

    async with httpx.AsyncClient() as anyone:
        forged = await anyone.post(inbound_url, headers={"x-twilio-signature": "AAAA"},
                                   data={"AccountSid": account["account_sid"], "From": "+14155552671", "Body": "STOP"})
    assert forged.status_code == 403, forged.text
    help_answer = await text_back("help")
    assert help_answer["status"] == 200 and "<Message>Reply STOP to stop" in help_answer["body"]
    stop_answer = await text_back("Stop")
    assert stop_answer == {"status": 200, "body": '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'}

    async def subscription_events() -> list[dict[str, Any]] | None:
        events = (await ws.api.get(f"/api/v1/users/{ada}/events")).json()["events"]
        found = [e for e in events if e.get("name") in ("$subscription_changed", "$sms_help")]
        return found if len(found) >= 2 else None

    changes = {e["name"]: e["properties"] for e in await eventually(subscription_events, timeout=15)}
    assert changes["$subscription_changed"] == {  # set in the profiles service (C1), which announces it
        "channel": "sms", "keyword": "STOP", "phone": "+14155552671", "subscribed": False,
        "from": None, "to": "unsubscribed", "source": "sms",
    }
    assert (await ws.api.get(f"/api/v1/users/{ada}/subscriptions")).json()["sms"]["state"] == "unsubscribed"
    assert changes["$sms_help"]["keyword"] == "HELP"

    assert (await ws.track(ada, properties={"name": "Kite", "price": 150})).status_code == 200
    later = await eventually(lambda: final(ada, 2), timeout=30)
    assert [(m["status"], m["reason_code"]) for m in later if m["send_id"] != to_ada["send_id"]] == [("skipped", "unsubscribed")]
    assert len([t for t in (await ws.sink.get("/messages")).json()["texts"] if t["to"] == "+14155552671"
                and t["account_sid"] == account["account_sid"]]) == 1

    assert (await text_back("START"))["status"] == 200
    assert (await ws.track(ada, properties={"name": "Lamp", "price": 150})).status_code == 200
    third = await eventually(lambda: final(ada, 3), timeout=30)
    assert sorted(m["status"] for m in third) == ["sent", "sent", "skipped"]
