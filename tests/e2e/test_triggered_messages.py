"""The path from an app's event to a delivered message, through the real processes."""

import uuid

from tests.conftest import eventually
from tests.e2e.conftest import Workspace


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_a_triggering_event_delivers_one_personalised_email(ws: Workspace, stack) -> None:  # type: ignore[no-untyped-def]
    user, address = unique("ada"), f"{unique('ada')}@example.com"
    await ws.campaign()
    assert (await ws.identify(user, {"first_name": "Ada", "email": address})).json() == {"success": True}
    r = await ws.track(user, properties={"name": "Red Shoes", "price": 150})
    assert r.status_code == 200 and r.json() == {"success": True}
    correlation_id = r.headers["x-correlation-id"]

    emails = await eventually(lambda: ws.emails_to(address), timeout=20)
    assert len(emails) == 1
    assert "Ada" in emails[0]["subject"]
    assert emails[0]["body"].strip() == "Your Red Shoes is waiting."

    messages = await eventually(
        lambda: _when(ws.messages(user), lambda ms: ms and ms[0]["status"] == "sent"), timeout=10
    )
    assert len(messages) == 1 and messages[0]["recipient"] == address
    # The delivery is on the user's timeline as an engagement event.
    timeline = await ws.stored(user, count=3)
    assert "$message_sent" in [e["name"] for e in timeline["events"]]
    # The request's correlation id travelled through every hop to the dispatcher's log.
    dispatcher_log = (stack.log_dir / "dispatcher.log").read_text()
    assert any(correlation_id in line and "send_outcome" in line for line in dispatcher_log.splitlines())


async def test_a_scheduler_restart_during_the_delay_loses_nothing(ws: Workspace, stack) -> None:  # type: ignore[no-untyped-def]
    user, address = unique("eve"), f"{unique('eve')}@example.com"
    await ws.campaign(delay_seconds=3)
    await ws.identify(user, {"first_name": "Eve", "email": address})
    await ws.track(user, properties={"name": "Tent", "price": 400})
    await eventually(lambda: _when(ws.messages(user), lambda ms: ms and ms[0]["status"] == "scheduled"))

    scheduler = stack.procs["scheduler"]
    scheduler.terminate()
    assert scheduler.wait(20) in (0, -15)
    stack.start_one("scheduler")
    stack.wait_ready(timeout=30)

    emails = await eventually(lambda: ws.emails_to(address), timeout=20)
    assert len(emails) == 1 and "Eve" in emails[0]["subject"]


async def test_an_exception_event_before_the_delay_cancels_the_send(ws: Workspace) -> None:
    user, address = unique("bea"), f"{unique('bea')}@example.com"
    await ws.campaign(delay_seconds=2)
    await ws.identify(user, {"first_name": "Bea", "email": address})
    await ws.track(user, properties={"name": "Lamp", "price": 300})
    await eventually(lambda: _when(ws.messages(user), lambda ms: ms and ms[0]["status"] == "scheduled"))
    await ws.track(user, event="Order Completed", properties={"total": 300})

    messages = await eventually(
        lambda: _when(ws.messages(user), lambda ms: ms and ms[0]["status"] == "cancelled"), timeout=10
    )
    assert "Order Completed" in messages[0]["reason"]
    # Well past the due time, still nothing was sent.
    marker = await _marker_email(ws)
    assert marker and await ws.emails_to(address) == []


async def test_an_event_that_misses_the_property_filter_schedules_nothing(ws: Workspace) -> None:
    user, address = unique("cy"), f"{unique('cy')}@example.com"
    campaign = await ws.campaign(delay_seconds=0)
    await ws.identify(user, {"first_name": "Cy", "email": address})
    await ws.track(user, properties={"name": "Sock", "price": 50})
    await ws.stored(user, count=2)
    await _marker_email(ws)
    assert await ws.messages(user) == []
    assert await ws.emails_to(address) == []
    stats = (await ws.api.get(f"/api/v1/campaigns/{campaign['id']}/stats")).json()
    assert stats["by_status"].get("scheduled", 0) == 0


async def test_webhook_campaign_posts_the_rendered_json(ws: Workspace, stack) -> None:  # type: ignore[no-untyped-def]
    user, path = unique("dee"), f"/webhooks/{unique('hook')}"
    await ws.campaign(
        channel="webhook",
        delay_seconds=0,
        message={"url": stack.config.url("sinks") + path, "body": {"text": "{{ user.traits.first_name }} added {{ event.properties.name }}", "price": 150}},
    )
    await ws.identify(user, {"first_name": "Dee"})
    await ws.track(user, properties={"name": "Kite", "price": 150})
    hooks = await eventually(lambda: ws.webhooks_at(path), timeout=15)
    assert len(hooks) == 1
    assert hooks[0]["body"] == {"text": "Dee added Kite", "price": 150}
    assert hooks[0]["headers"]["idempotency-key"]


async def test_audience_segment_gates_the_send(ws: Workspace) -> None:
    inside, outside = unique("in"), unique("out")
    segment = await ws.api.post("/api/v1/segments", json={"name": "VIP", "filter": {"trait": "tier", "op": "eq", "value": "vip"}})
    assert segment.status_code == 201
    await ws.campaign(delay_seconds=0, audience={"segment_id": segment.json()["id"]})
    await ws.identify(inside, {"tier": "vip", "email": f"{inside}@example.com"})
    await ws.identify(outside, {"tier": "basic", "email": f"{outside}@example.com"})
    await ws.track(inside, properties={"name": "Ring", "price": 900})
    await ws.track(outside, properties={"name": "Ring", "price": 900})

    await eventually(lambda: ws.emails_to(f"{inside}@example.com"), timeout=15)
    skipped = await eventually(lambda: ws.messages(outside))
    assert skipped[0]["status"] == "not_in_audience"
    assert await ws.emails_to(f"{outside}@example.com") == []
    size = (await ws.api.get(f"/api/v1/segments/{segment.json()['id']}")).json()["size"]
    assert size == 1


async def _when(awaitable, predicate):  # type: ignore[no-untyped-def]
    value = await awaitable
    return value if predicate(value) else None


async def _marker_email(ws: Workspace) -> list:
    """Send a second, matching event and wait for its email: everything before it has been handled."""
    user, address = unique("marker"), f"{unique('marker')}@example.com"
    await ws.identify(user, {"email": address})
    await ws.track(user, properties={"name": "Marker", "price": 101})
    return await eventually(lambda: ws.emails_to(address), timeout=20)
