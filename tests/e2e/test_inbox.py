"""In-app messages and content cards through the real processes: campaigns made through the gateway, triggered by
an SDK call, rendered by the dispatcher into the user's feed, fetched by the app with its write key across origins,
and an impression reported back onto the user's timeline."""

import uuid
from typing import Any

from tests.conftest import eventually
from tests.e2e.conftest import Workspace


async def test_a_triggered_in_app_message_and_card_reach_the_apps_feed_and_its_reports_the_timeline(ws: Workspace) -> None:
    trigger = {"event": "Product Added"}
    await ws.campaign(name="Cart modal", channel="in_app", trigger=trigger, delay_seconds=0, cancel_on=[], message={
        "layout": "slide_up", "header": "Hi {{ user.traits.first_name }}",
        "body": "Your {{ event.properties.name }} is waiting", "buttons": [{"text": "Open", "deep_link": "shop://cart"}],
    })
    await ws.campaign(name="Cart card", channel="content_card", trigger=trigger, delay_seconds=0, cancel_on=[], message={
        "title": "{{ event.properties.name }}", "link": "https://shop.example/cart", "pinned": True, "ttl_hours": 24,
    })
    ada = f"ada-{uuid.uuid4().hex[:8]}"
    await ws.identify(ada, {"first_name": "Ada"}, anonymousId=f"anon-{ada}")
    await ws.stored(ada)
    assert (await ws.track(ada, properties={"name": "Red Shoes"})).status_code == 200

    async def feed() -> list[dict[str, Any]] | None:
        r = await ws.sdk.get("/v1/messages", params={"userId": ada}, headers={"origin": "https://shop.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*", r.text
        messages: list[dict[str, Any]] = r.json()["messages"]
        return messages if len(messages) == 2 else None

    card, modal = await eventually(feed, timeout=30)
    assert (card["type"], card["pinned"], card["content"]["title"]) == ("content_card", True, "Red Shoes")
    assert modal["type"] == "in_app" and modal["content"]["header"] == "Hi Ada"
    assert modal["content"]["body"] == "Your Red Shoes is waiting" and modal["content"]["layout"] == "slide_up"

    seen = await ws.sdk.post(f"/v1/messages/{modal['id']}/events", json={"type": "impression", "userId": ada})
    assert seen.status_code == 200 and seen.json()["recorded"] is True, seen.text
    left = (await ws.sdk.get("/v1/messages", params={"anonymousId": f"anon-{ada}"})).json()["messages"]
    assert [m["id"] for m in left] == [card["id"]]  # an in-app message is shown once

    sent = {(m["channel"], m["status"]) for m in await ws.messages(ada)}
    assert {("in_app", "sent"), ("content_card", "sent")} <= sent

    async def viewed() -> dict[str, Any] | None:
        events = (await ws.api.get(f"/api/v1/users/{ada}/events")).json()["events"]
        return next((e for e in events if e["name"] == "$message_viewed"), None)

    event = await eventually(viewed, timeout=30)
    assert event["properties"]["send_id"] == modal["id"] and event["properties"]["channel"] == "in_app"
    assert event["properties"]["campaign_id"] == modal["campaign_id"]
