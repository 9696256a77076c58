"""A push campaign through the real processes: credentials the sinks issued saved through the gateway, a
phone's token from its SDK context, and the push arriving at the sinks' APNs and FCM servers."""

import secrets
import uuid
from typing import Any

from tests.conftest import eventually
from tests.e2e.conftest import Workspace


def phone(device_id: str, token: str, kind: str) -> dict[str, Any]:
    os_name = "iOS" if kind == "ios" else "Android"
    return {"app": {"name": "Shop", "version": "3.2.0"}, "os": {"name": os_name, "version": "18.1"},
            "device": {"id": device_id, "type": kind, "token": token}}


async def test_a_triggered_push_reaches_the_users_iphone_and_android_phone(ws: Workspace) -> None:
    key = (await ws.sink.post("/apns/keys")).json()
    account = (await ws.sink.post("/fcm/service-accounts", json={"project_id": "herald-e2e"})).json()
    apns = {"team_id": key["team_id"], "key_id": key["key_id"], "private_key": key["private_key"],
            "topic": "com.example.shop", "environment": "sandbox"}
    saved = await ws.api.put("/api/v1/channels/apns", json=apns)
    assert saved.status_code == 200 and "PRIVATE KEY" not in saved.text, saved.text
    assert (await ws.api.put("/api/v1/channels/fcm", json={"service_account": account})).status_code == 200
    listed = await ws.api.get("/api/v1/channels")
    assert sorted(c["kind"] for c in listed.json()["channels"]) == ["apns", "fcm"] and "PRIVATE KEY" not in listed.text

    await ws.campaign(channel="push", delay_seconds=0, cancel_on=[], message={
        "title": "Still thinking it over, {{ user.traits.first_name }}?", "body": "Your {{ event.properties.name }} is waiting.",
        "deep_link": "shop://cart", "ios": {"sound": "default"}, "android": {"channel_id": "promo"},
    })
    user, iphone, pixel = f"ada-{uuid.uuid4().hex[:8]}", secrets.token_hex(32), f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(90)}"
    await ws.identify(user, {"first_name": "Ada"}, context=phone("iphone-" + user, iphone, "ios"))
    await ws.identify(user, {"first_name": "Ada"}, context=phone("pixel-" + user, pixel, "android"))
    await ws.stored(user, count=2)
    assert (await ws.track(user, properties={"name": "Red Shoes", "price": 150})).status_code == 200

    async def arrived() -> list[dict[str, Any]] | None:
        pushes = [p for p in (await ws.sink.get("/messages")).json()["pushes"] if p["token"] in (iphone, pixel)]
        return pushes if len(pushes) == 2 else None

    by_service = {p["service"]: p for p in await eventually(arrived, timeout=30)}
    assert by_service["apns"]["http_version"] == "2" and by_service["apns"]["headers"]["apns-topic"] == "com.example.shop"
    assert by_service["apns"]["payload"]["aps"]["alert"]["title"] == "Still thinking it over, Ada?"
    assert by_service["fcm"]["message"]["notification"]["body"] == "Your Red Shoes is waiting."

    async def delivered() -> list[dict[str, Any]] | None:
        messages = await ws.messages(user)
        return messages if messages and messages[0].get("status") == "sent" else None

    [message] = await eventually(delivered, timeout=15)
    assert message["channel"] == "push" and sorted(d["service"] for d in message["devices"]) == ["apns", "fcm"]
