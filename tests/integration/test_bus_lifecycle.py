"""A consumer's life: its durable follows the spec, long work stays in progress, idling is silent,
trouble is logged once, stopping is prompt and bounded, and readiness knows when it died."""

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from prometheus_client import REGISTRY

from kernel import bus
from kernel.contracts import MembershipChanged

PAYLOAD = MembershipChanged(
    workspace_id="ws", segment_id="s", profile_id="p", change="entered",
    at=datetime(2026, 11, 22, tzinfo=UTC), cause_message_id="m",
)


def body(segment_id: str) -> bytes:
    """A valid message whose segment id tells the test's handler what it is."""
    return PAYLOAD.model_copy(update={"segment_id": segment_id}).model_dump_json().encode()


async def _wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait, polling, until the predicate holds; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def _test_stream(nc: NATS) -> tuple[str, str, str]:
    """A stream of this test's own: (stream, durable, subject prefix)."""
    tag = uuid.uuid4().hex[:10]
    await nc.jetstream().add_stream(StreamConfig(name=f"T_{tag}", subjects=[f"t{tag}.>"]))
    return f"T_{tag}", f"d{tag}", f"t{tag}"


def _fetches(durable: str, outcome: str) -> float:
    """The consumer's pulls so far with this outcome (herald_bus_fetches_total)."""
    return REGISTRY.get_sample_value("herald_bus_fetches_total", {"consumer": durable, "outcome": outcome}) or 0.0


async def test_start_brings_an_existing_durable_up_to_the_spec_and_exposes_the_effective_config(nc: NATS) -> None:
    js = nc.jetstream()
    stream, durable, prefix = await _test_stream(nc)

    async def handler(message: MembershipChanged) -> None:
        """Nothing to do."""

    first = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler)
    async with bus.consuming(js, [first]):
        pass
    changed = dataclasses.replace(first, ack_wait=4.0, max_deliver=3, max_ack_pending=50)
    async with bus.consuming(js, [changed]) as consumers:
        info = await js.consumer_info(stream, durable)
        assert (info.config.ack_wait, info.config.max_deliver, info.config.max_ack_pending) == (4.0, 3, 50)
        consumer = consumers[durable]
        assert (consumer.ack_wait, consumer.max_deliver, consumer.max_ack_pending) == (4.0, 3, 50)


async def test_a_batch_that_outlasts_the_ack_wait_is_kept_in_progress_and_delivered_once(nc: NATS) -> None:
    js = nc.jetstream()
    stream, durable, prefix = await _test_stream(nc)
    seen: list[str] = []
    done = asyncio.Event()

    async def handler(batch: list[bus.Received[MembershipChanged]]) -> None:
        """Work on the batch for longer than the ack wait."""
        seen.extend(r.payload.segment_id for r in batch)
        await asyncio.sleep(2.5)  # the work itself: longer than the 1 s ack wait
        done.set()

    spec = bus.ConsumerSpec(
        stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler,
        batch=10, concurrency=2, batched=True, ack_wait=1.0,
    )
    async with bus.consuming(js, [spec]):
        await js.publish(f"{prefix}.a", body("slow"))
        await asyncio.wait_for(done.wait(), 10)
        info = await js.consumer_info(stream, durable)
        assert seen == ["slow"], "redelivered while still being handled"
        assert info.num_redelivered == 0
    info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_an_idle_consumer_logs_nothing_and_handles_the_next_event_when_it_comes(nc: NATS) -> None:
    js = nc.jetstream()
    stream, durable, prefix = await _test_stream(nc)
    pulls = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")  # sees each pull request
    handled = asyncio.Event()

    async def handler(message: MembershipChanged) -> None:
        """Note that it came."""
        handled.set()

    async def other_work_in_this_process() -> None:
        """Hold the event loop 50 ms at a time, forever."""
        # Blocking work elsewhere in the process (another consumer's CPU-heavy batch, say) holds the
        # event loop 50 ms at a time. A pull's client-side deadline then starts late, the server's
        # "request timeout" lands inside it, and nats-py raises a plain asyncio.TimeoutError.
        while True:
            time.sleep(0.05)
            await asyncio.sleep(0)

    spec = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler)
    with structlog.testing.capture_logs() as logs:
        async with bus.consuming(js, [spec]):
            busy = asyncio.create_task(other_work_in_this_process())
            try:
                await _wait_until(lambda: pulls.delivered >= 4, timeout=30)  # several idle pulls
            finally:
                busy.cancel()
            await js.publish(f"{prefix}.a", body("after-idling"))
            await asyncio.wait_for(handled.wait(), 5)
    await pulls.unsubscribe()
    assert [(e["event"], e.get("error")) for e in logs if e["log_level"] in ("warning", "error")] == []


async def test_server_trouble_is_logged_once_per_outage_and_the_consumer_recovers(nc: NATS) -> None:
    js = nc.jetstream()
    stream, durable, prefix = await _test_stream(nc)
    handled = asyncio.Event()

    async def handler(message: MembershipChanged) -> None:
        """Note that it came."""
        handled.set()

    spec = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler)
    with structlog.testing.capture_logs() as logs:
        async with bus.consuming(js, [spec]):
            failed_before = _fetches(durable, "failed")
            await js.delete_consumer(stream, durable)  # every pull now fails: JetStream has no such consumer
            await _wait_until(lambda: _fetches(durable, "failed") >= failed_before + 3)
            await js.add_consumer(stream, spec.consumer_config())
            await js.publish(f"{prefix}.a", body("after-the-outage"))
            await asyncio.wait_for(handled.wait(), 10)
    noisy = [e["event"] for e in logs if e["log_level"] in ("warning", "error")]
    assert noisy == ["consumer_fetch_failing"], "one line for the outage, not one per pull"
    (failing,) = [e for e in logs if e["event"] == "consumer_fetch_failing"]
    assert failing["consumer"] == durable and isinstance(failing["exc_info"], Exception)
    assert [e["event"] for e in logs if e["event"] == "consumer_fetch_recovered"] == ["consumer_fetch_recovered"]


async def test_stop_cancels_the_pull_in_progress_instead_of_waiting_it_out(nc: NATS) -> None:
    js = nc.jetstream()
    stream, durable, prefix = await _test_stream(nc)
    pulls = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")

    async def handler(message: MembershipChanged) -> None:
        """Nothing to do."""

    spec = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler)
    consumer = bus.Consumer(js, spec)
    await consumer.start()
    seen = pulls.delivered
    await _wait_until(lambda: pulls.delivered > seen)  # a pull has just gone out and waits for messages
    started = time.monotonic()
    await consumer.stop()
    took = time.monotonic() - started
    await pulls.unsubscribe()
    assert took < bus.FETCH_SECONDS / 2, f"stop waited {took:.2f}s for an idle pull to time out"


async def test_once_stop_is_requested_no_new_pull_goes_out_and_the_batch_in_hand_is_finished(nc: NATS) -> None:
    js = nc.jetstream()
    stream, durable, prefix = await _test_stream(nc)
    pulls = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def handler(batch: list[bus.Received[MembershipChanged]]) -> None:
        """Hold the batch until the test releases it."""
        entered.set()
        await release.wait()
        finished.extend(r.payload.segment_id for r in batch)

    spec = bus.ConsumerSpec(
        stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler,
        batched=True, concurrency=1,
    )
    consumer = bus.Consumer(js, spec)
    await consumer.start()
    await js.publish(f"{prefix}.a", body("in-hand"))
    await asyncio.wait_for(entered.wait(), 10)  # its one slot is taken: the loop waits for it
    await nc.flush()
    pulls_at_stop = pulls.delivered
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0)  # let stop() begin: it asks the loop to stop before anything else
    release.set()
    await asyncio.wait_for(stopping, 10)
    await nc.flush()
    await pulls.unsubscribe()
    assert pulls.delivered == pulls_at_stop, "a new pull went out after stop was requested"
    assert finished == ["in-hand"]
    info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_batch_still_running_at_the_stop_deadline_is_abandoned_unacked(nc: NATS) -> None:
    js = nc.jetstream()
    stream, durable, prefix = await _test_stream(nc)
    entered = asyncio.Event()

    async def handler(message: MembershipChanged) -> None:
        """Never finish."""
        entered.set()
        await asyncio.Event().wait()  # hangs

    spec = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(10):
            async with bus.consuming(js, [spec], stop_timeout=0.5):
                await js.publish(f"{prefix}.a", body("hangs"))
                await asyncio.wait_for(entered.wait(), 10)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["consumer_stop_timed_out"]
    info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 1, "left to JetStream to redeliver, never acked"


async def test_a_responder_stops_only_after_the_answers_in_flight_are_sent(nc: NATS, infra) -> None:  # type: ignore[no-untyped-def]
    subject = f"rpc.test.{uuid.uuid4().hex[:10]}"
    serving = await nats.connect(infra.nats_url)  # the responder's own connection, closed right after stop
    entered = asyncio.Event()

    async def handler(query: MembershipChanged) -> MembershipChanged:
        """Answer with the query, after a while."""
        entered.set()
        await asyncio.sleep(0.5)  # the work of answering
        return query

    responder = await bus.serve_requests(serving, subject, MembershipChanged, handler)
    await serving.flush()  # the subscription is in place before another connection asks
    asking = asyncio.create_task(bus.request(nc, subject, PAYLOAD, MembershipChanged, timeout=5))
    await asyncio.wait_for(entered.wait(), 5)
    await responder.stop()
    await serving.close()
    answer = await asking
    assert answer == PAYLOAD


async def test_readiness_fails_when_a_consumer_is_no_longer_fetching(infra) -> None:  # type: ignore[no-untyped-def]
    own = await nats.connect(infra.nats_url)
    stream, durable, prefix = await _test_stream(own)

    async def handler(message: MembershipChanged) -> None:
        """Nothing to do."""

    spec = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"{prefix}.>", model=MembershipChanged, handler=handler)
    checks: dict[str, Callable[[], Awaitable[None]]] = {}
    failure: list[Exception] = []

    async def probe() -> bool:
        """Whether the consumer's readiness check fails now."""
        try:
            await checks[f"consumer:{durable}"]()
        except Exception as exc:
            failure.append(exc)
            return True
        return False

    async with bus.consuming(own.jetstream(), [spec], readiness=checks):
        assert list(checks) == [f"consumer:{durable}"]
        assert not await probe(), "ready while fetching"
        await own.close()  # the connection is gone for good: the fetch loop ends
        async with asyncio.timeout(10):
            while not await probe():
                await asyncio.sleep(0.05)
    assert "not running" in str(failure[0])
    assert checks == {}, "the checks leave with the consumers"
