"""The chaos tier's own instruments can fail: the receiver behaves like a provider that is up, unwell
or gone, the load counts only what got a 200, and the audit names every way a send can go wrong."""

import json
from collections import Counter

import httpx
import pytest

from tests.chaos.harness import CampaignLedger, DeliveryRow, Load, Receiver, SendRow, judge_events, judge_sends


async def test_the_receiver_accepts_answers_503_and_refuses_connections_like_a_provider() -> None:
    """Up: 200, counted; failing: 503, not counted as delivered; down: connection refused; up again: same port."""
    receiver = Receiver().start()
    try:
        async with httpx.AsyncClient(base_url=receiver.url, timeout=5) as client:

            async def post(key: str) -> int:
                return (await client.post("/hook", json={"k": key}, headers={"idempotency-key": key})).status_code

            assert await post("a") == 200
            assert await post("a") == 200
            receiver.failing()
            assert await post("b") == 503
            receiver.down()
            with pytest.raises(httpx.TransportError):
                await post("c")
            receiver.up()
            assert await post("d") == 200
        assert receiver.accepted() == Counter({"a": 2, "d": 1})
        assert receiver.refused() == Counter({"b": 1})
    finally:
        receiver.stop()


async def test_the_load_counts_a_call_accepted_only_when_it_got_a_200() -> None:
    """503s and network errors are retried until a 200; a 400 is given up at once, never counted."""
    tries: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        message_id = json.loads(request.content)["messageId"]
        tries[message_id] += 1
        if message_id.endswith("00001"):
            return httpx.Response(400, json={"error": "invalid_call"})
        if tries[message_id] == 1:
            raise httpx.ConnectError("refused", request=request)
        if tries[message_id] == 2:
            return httpx.Response(503, headers={"Retry-After": "5"})
        return httpx.Response(200, json={"success": True})

    async with httpx.AsyncClient(base_url="http://gateway", transport=httpx.MockTransport(answer)) as sdk:
        load = Load(sdk, "t", ["u1", "u2"], "Chaos Ping", rate=100, max_seconds=0.035).start()  # three calls
        await load.finished(timeout=10)
    assert sorted(load.accepted) == ["t-00000", "t-00002"]
    assert list(load.unaccepted) == ["t-00001"] and "HTTP 400" in load.unaccepted["t-00001"]
    assert load.retries == 4


def test_the_audit_names_missing_and_doubled_events() -> None:
    """An accepted event not stored is pending; one stored twice is a violation."""
    verdict = judge_events("f", ["m1", "m2", "m3"], {"m1": 1, "m3": 2})
    assert len(verdict.pending) == 1 and "m2" in verdict.pending[0]
    assert len(verdict.violations) == 1 and "m3 ×2" in verdict.violations[0]


def test_the_audit_names_every_way_a_send_can_go_wrong() -> None:
    """Lost, doubled, failed, unrecorded, unasked-for and unfinished sends each get their own finding."""
    sends = {
        "ok": SendRow("requested", None, "m-ok"),
        "twice": SendRow("requested", None, "m-twice"),
        "unknown-once": SendRow("requested", None, "m-u1"),
        "unknown-twice": SendRow("requested", None, "m-u2"),
        "failed": SendRow("requested", None, "m-failed"),
        "silent": SendRow("requested", None, "m-silent"),
        "later": SendRow("scheduled", None, "m-later"),
        "retrying": SendRow("requested", None, "m-retrying"),
        "dup-a": SendRow("requested", None, "m-dup"),
        "dup-b": SendRow("requested", None, "m-dup"),
    }
    deliveries = {
        "ok": DeliveryRow("sent", None, 1),
        "twice": DeliveryRow("sent", None, 1),
        "unknown-once": DeliveryRow("unknown", "interrupted", 1),
        "unknown-twice": DeliveryRow("unknown", "interrupted", 1),
        "failed": DeliveryRow("failed", "gave up", 5),
        "silent": DeliveryRow("sent", None, 1),
        "retrying": DeliveryRow("retrying", "HTTP 503", 2),
        "dup-a": DeliveryRow("sent", None, 1),
        "dup-b": DeliveryRow("sent", None, 1),
    }
    arrivals = Counter({"ok": 1, "twice": 2, "unknown-once": 1, "unknown-twice": 2, "dup-a": 1, "dup-b": 1, "stranger": 1})
    accepted = [s.trigger_message_id or "" for s in sends.values()] + ["m-none"]
    verdict = judge_sends("f", accepted, CampaignLedger(sends, deliveries), arrivals, unknown_allowed=True)
    pending, violations = "\n".join(verdict.pending), "\n".join(verdict.violations)
    assert "m-none" in pending and "later" in pending and "retrying (HTTP 503)" in pending
    assert "twice ×2" in violations and "unknown-twice ×2 (unknown)" in violations
    assert "failed: gave up" in violations and "silent" in violations and "stranger ×1" in violations
    assert "m-dup" in violations
    assert len(verdict.violations) == 5 and "unknown-once" not in violations

    strict = judge_sends("f", accepted, CampaignLedger(sends, deliveries), arrivals, unknown_allowed=False)
    assert any("unknown: interrupted" in v and "unknown-once" in v for v in strict.violations)
