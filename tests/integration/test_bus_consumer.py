"""The pull-consumer loop: ack after success, redeliver after a transient failure, dead-letter poison."""

import asyncio
import uuid

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerInfo, StreamConfig
from nats.js.client import JetStreamContext

from kernel import bus
from kernel.contracts import MembershipChanged
from kernel.errors import PermanentError
from tests.conftest import eventually

PAYLOAD = MembershipChanged(
    workspace_id="ws", segment_id="s", profile_id="p", change="entered", at="2026-11-22T00:00:00Z", cause_message_id="m"
)


async def test_transient_failures_are_redelivered_poison_and_permanent_failures_are_not(nc: NATS) -> None:
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:10]
    await js.add_stream(StreamConfig(name=f"T_{tag}", subjects=[f"t{tag}.>"]))
    seen: list[str] = []
    done = asyncio.Event()
    failures = {"transient": 1}

    async def handler(message: MembershipChanged) -> None:
        seen.append(message.segment_id)
        if message.segment_id == "flaky" and failures["transient"] > 0:
            failures["transient"] -= 1
            raise RuntimeError("database blinked")
        if message.segment_id == "hopeless":
            raise PermanentError("cannot ever work")
        if message.segment_id == "last":
            done.set()

    spec = bus.ConsumerSpec(stream=f"T_{tag}", durable=f"d{tag}", subject=f"t{tag}.>", model=MembershipChanged, handler=handler)
    async with bus.consuming(js, [spec]):
        await js.publish(f"t{tag}.a", b"{not json")
        for segment in ("flaky", "hopeless", "last"):
            await js.publish(f"t{tag}.a", PAYLOAD.model_copy(update={"segment_id": segment}).model_dump_json().encode())
        await asyncio.wait_for(done.wait(), 10)
        # The flaky message comes back after its backoff and succeeds.
        await _wait_until(lambda: seen.count("flaky") == 2)
    assert seen.count("hopeless") == 1  # dead-lettered, not retried
    info = await js.consumer_info(f"T_{tag}", f"d{tag}")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def _settled(js: JetStreamContext, stream: str, durable: str) -> ConsumerInfo | None:
    """The consumer's info once nothing is pending or waiting for an ack, else None."""
    info = await js.consumer_info(stream, durable)
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None


async def _wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_batched_handler_gets_whole_fetches_and_a_failed_batch_is_retried_message_by_message(nc: NATS) -> None:
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:10]
    await js.add_stream(StreamConfig(name=f"T_{tag}", subjects=[f"t{tag}.>"]))
    batches: list[list[str]] = []
    correlations: list[str | None] = []

    async def handler(deliveries: list[bus.Received[MembershipChanged]]) -> None:
        batches.append([d.payload.segment_id for d in deliveries])
        correlations.extend(d.correlation_id for d in deliveries)
        if "hopeless" in batches[-1]:
            raise PermanentError("cannot ever work")

    # Published before the consumer exists, so its first fetch holds all of them.
    await js.publish(f"t{tag}.a", b"{not json")
    for segment in ("one", "two", "hopeless", "three"):
        body = PAYLOAD.model_copy(update={"segment_id": segment}).model_dump_json().encode()
        await js.publish(f"t{tag}.a", body, headers=bus.headers_for(segment, correlation_id=f"c-{segment}"))
    spec = bus.ConsumerSpec(stream=f"T_{tag}", durable=f"d{tag}", subject=f"t{tag}.>", model=MembershipChanged,
                            handler=handler, batch=10, concurrency=2, batched=True)
    async with bus.consuming(js, [spec]):
        await _wait_until(lambda: len(batches) == 5)
        # A message is acked after its handler returns: wait for the last acks before the consumer stops.
        info = await eventually(lambda: _settled(js, f"T_{tag}", f"d{tag}"))
    assert batches[0] == ["one", "two", "hopeless", "three"]  # the poison message never reached it
    assert batches[1:] == [["one"], ["two"], ["hopeless"], ["three"]]
    assert correlations[:4] == ["c-one", "c-two", "c-hopeless", "c-three"]
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_request_replies_are_answered_concurrently(nc: NATS) -> None:
    subject = f"rpc.test.{uuid.uuid4().hex[:10]}"
    waiting: list[asyncio.Event] = []
    both_in = asyncio.Event()

    async def handler(query: MembershipChanged) -> MembershipChanged:
        # Each answer waits until both queries are being handled: one at a time, neither would finish.
        waiting.append(asyncio.Event())
        if len(waiting) == 2:
            both_in.set()
        await asyncio.wait_for(both_in.wait(), 5)
        return query

    responder = await bus.serve_requests(nc, subject, MembershipChanged, handler)
    try:
        answers = await asyncio.gather(
            *(bus.request(nc, subject, PAYLOAD.model_copy(update={"segment_id": s}), MembershipChanged) for s in ("a", "b"))
        )
    finally:
        await responder.stop()
    assert sorted(a.segment_id for a in answers) == ["a", "b"]
