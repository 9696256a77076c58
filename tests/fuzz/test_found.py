"""What the fuzz tests found, pinned as the plain requests that showed it."""

from typing import Any

from tests.fuzz.conftest import STORED_BOUND_SECONDS, Fuzz, api_json, eventually, path_segment


async def two_numeric_message_ids(fuzz: Fuzz) -> None:
    """Two calls whose messageIds are different numbers past 64 bits: once both answered 200, and one was dropped."""
    for number in (10**29, 10**29 + 1):
        response = await fuzz.ws.track("ada", event="Signed Up", messageId=number)
        assert response.status_code == 400, response.text
        assert response.json()["detail"][0]["loc"] == ["messageId"], response.text


def test_a_message_id_that_is_a_number_is_refused_whatever_its_size(fuzz: Fuzz) -> None:
    fuzz.run(two_numeric_message_ids(fuzz))


async def filter_with_a_lone_surrogate(fuzz: Fuzz) -> None:
    """A lone surrogate in a condition's value: it parsed, passed the grammar, and orjson refused it (a 500)."""
    body = b'{"name": "s", "filter": {"trait": "plan", "op": "gt", "value": "x\\udfffy"}}'
    response = await fuzz.ws.api.post("/api/v1/segments", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_filter" and "surrogate" in response.text, response.text


def test_a_filter_value_with_a_lone_surrogate_is_refused(fuzz: Fuzz) -> None:
    fuzz.run(filter_with_a_lone_surrogate(fuzz))


async def user_with_a_line_feed_is_shown(fuzz: Fuzz) -> None:
    """A userId with a line feed: stored, then looked up by the id it was stored under."""
    user, message_id = "line\nfeed", fuzz.unique("line-feed")
    sent = await fuzz.ws.track(user, event="Signed Up", messageId=message_id)
    assert sent.status_code == 200, sent.text
    stored = "SELECT 1 FROM profiles.events WHERE workspace_id = :ws AND message_id = :m"
    await eventually(lambda: fuzz.query(stored, ws=fuzz.ws.workspace_id, m=message_id), timeout=STORED_BOUND_SECONDS)
    response = await fuzz.ws.api.get(f"/api/v1/users/{path_segment(user)}/events")
    assert response.status_code == 200, response.text
    assert [e["message_id"] for e in response.json()["events"]] == [message_id]


def test_a_user_id_with_a_line_feed_reads_back(fuzz: Fuzz) -> None:
    fuzz.run(user_with_a_line_feed_is_shown(fuzz))


async def a_send_delivered_after_a_hundred_others(fuzz: Fuzz) -> None:
    """One send decided before a hundred others and delivered after them (it waits 5 s): the scheduler's newest
    100 sends and the dispatcher's newest 100 deliveries, which the gateway joins, are not the same sends."""
    user, plain = "many", {"subject": "hi", "body": "hello"}
    await fuzz.ws.campaign(name="early", trigger={"event": "Early"}, delay_seconds=5, cancel_on=[], message=plain)
    for n in range(100):
        await fuzz.ws.campaign(name=f"now {n}", trigger={"event": "Now"}, delay_seconds=0, cancel_on=[], message=plain)
    assert (await fuzz.ws.identify(user, {"email": "many@example.com"})).status_code == 200
    assert (await fuzz.ws.track(user, event="Early")).status_code == 200

    async def listed(**params: Any) -> list[dict[str, Any]]:
        return (await api_json(fuzz.ws, f"/api/v1/users/{user}/messages", **params))["messages"]

    await eventually(listed, timeout=STORED_BOUND_SECONDS)  # the early one is scheduled
    assert (await fuzz.ws.track(user, event="Now")).status_code == 200

    async def all_sent() -> bool:
        messages = await listed(limit=500)
        return len(messages) == 101 and all(m["status"] == "sent" for m in messages)

    await eventually(all_sent, timeout=STORED_BOUND_SECONDS)
    page = await listed()
    assert len(page) <= 100 and all(m["status"] == "sent" for m in page), [
        (m["campaign_name"], m["status"]) for m in page if m["status"] != "sent"
    ]


def test_a_user_with_more_sends_than_a_page_sees_each_with_its_status(fuzz: Fuzz) -> None:
    fuzz.run(a_send_delivered_after_a_hundred_others(fuzz))
