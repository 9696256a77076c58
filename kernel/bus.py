"""NATS JetStream plumbing: streams, de-duplicated publishes, pull consumers, request/reply."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StorageType, StreamConfig
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from kernel.contracts import CONSUMERS, STREAMS
from kernel.errors import PermanentError
from kernel.logging import BUS_CORRELATION_HEADER, bind_correlation_id, current_correlation_id

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

MESSAGES = Counter(
    "herald_bus_messages_total", "Bus messages handled", ["consumer", "outcome"]
)
HANDLE_SECONDS = Histogram(
    "herald_bus_handle_seconds", "Time to handle one message, or one batch for a batched consumer", ["consumer"]
)
BATCH_FALLBACKS = Counter(
    "herald_bus_batch_fallbacks_total", "Batches that failed together and were handled one message at a time", ["consumer"]
)

# Deduplication window for `Nats-Msg-Id`; later duplicates are absorbed by idempotent consumers.
DUPLICATE_WINDOW_SECONDS = 120.0


async def connect(url: str, name: str) -> NATS:
    """Connect to NATS (one URL, or several comma-separated), reconnecting forever once connected."""
    return await nats.connect(
        [server.strip() for server in url.split(",") if server.strip()],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        drain_timeout=10,
    )


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create Herald's streams, or bring their subjects and replica count up to date; safe to re-run.

    `replicas` is how many JetStream servers keep a copy: 1 on one server, 3 on a three-node cluster.
    """
    for name, subjects in STREAMS.items():
        config = StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        )
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


def headers_for(message_id: str, correlation_id: str | None = None) -> dict[str, str]:
    """Headers for a de-duplicated publish carrying a correlation id (by default the current one)."""
    headers = {"Nats-Msg-Id": message_id}
    correlation_id = correlation_id or current_correlation_id()
    if correlation_id:
        headers[BUS_CORRELATION_HEADER] = correlation_id
    return headers


async def publish(
    js: JetStreamContext, subject: str, message: BaseModel, message_id: str, timeout: float = 5.0
) -> None:
    """Publish one contract message and wait until JetStream has stored it."""
    await js.publish(
        subject, message.model_dump_json().encode(), timeout=timeout, headers=headers_for(message_id)
    )


async def publish_many(
    js: JetStreamContext,
    items: list[tuple[str, bytes, str]],
    timeout: float = 5.0,
    correlation_ids: list[str | None] | None = None,
) -> None:
    """Publish (subject, payload, message id) triples pipelined; return once all are stored."""
    correlation_ids = correlation_ids or [None] * len(items)
    futures = [
        await js.publish_async(subject, payload, headers=headers_for(message_id, correlation))
        for (subject, payload, message_id), correlation in zip(items, correlation_ids, strict=True)
    ]
    async with asyncio.timeout(timeout):
        for ack in asyncio.as_completed(futures):
            await ack


@dataclass(frozen=True)
class Received(Generic[M]):
    """A received message, parsed, with the correlation id it travelled with (what a batched handler gets)."""

    payload: M
    correlation_id: str | None = None


@dataclass
class ConsumerSpec:
    """A durable pull consumer and the typed handler its messages go to.

    A plain handler takes one payload; `concurrency` of them run at once. A `batched` handler takes
    a list of `Received` (a whole fetch); up to `concurrency` batches are in flight while the next
    one is fetched. It either returns None (all done), or a list with one entry per message: None
    for done, or the exception that one failed with (a `PermanentError` is never retried, any other
    is redelivered with backoff). When it raises, it must have applied nothing, and each message of
    the batch is retried on its own, so one bad message cannot hold back the rest.
    """

    stream: str
    durable: str
    subject: str
    model: type[BaseModel]
    handler: Callable[[Any], Awaitable[None]]
    batch: int = 64
    concurrency: int = 1
    max_deliver: int = 20
    ack_wait: float = 30.0
    batched: bool = False

    @classmethod
    def for_service(
        cls,
        service: str,
        model: type[BaseModel],
        handler: Callable[[Any], Awaitable[None]],
        settings: Any,
        batched: bool = False,
    ) -> "ConsumerSpec":
        """A service's own durable consumer, as the contracts declare it, tuned by its settings."""
        stream, durable, subject = CONSUMERS[service]
        return cls(
            stream=stream,
            durable=durable,
            subject=subject,
            model=model,
            handler=handler,
            batch=settings.consumer_batch,
            concurrency=settings.consumer_concurrency,
            ack_wait=settings.ack_wait_seconds,
            batched=batched,
        )


@asynccontextmanager
async def consuming(js: JetStreamContext, specs: list[ConsumerSpec]) -> AsyncIterator[None]:
    """Run these consumers for the duration of the block; on exit stop fetching, finish in-flight."""
    consumers = [Consumer(js, spec) for spec in specs]
    for consumer in consumers:
        await consumer.start()
    try:
        yield
    finally:
        for consumer in consumers:
            await consumer.stop()


def backoff_seconds(num_delivered: int) -> float:
    """Redelivery delay after a transient failure: 0.5 s doubling, capped at 30 s."""
    return float(min(30.0, 0.5 * 2 ** max(0, num_delivered - 1)))


class Consumer:
    """Fetches from a durable pull consumer until stopped; acks only after the handler returns."""

    def __init__(self, js: JetStreamContext, spec: ConsumerSpec) -> None:
        self.js = js
        self.spec = spec
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        """Create or bind the durable consumer and start fetching in the background."""
        config = ConsumerConfig(
            durable_name=self.spec.durable,
            ack_wait=self.spec.ack_wait,
            max_deliver=self.spec.max_deliver,
            max_ack_pending=max(1000, self.spec.batch * 4),
            filter_subject=self.spec.subject,
        )
        sub = await self.js.pull_subscribe(
            self.spec.subject, durable=self.spec.durable, stream=self.spec.stream, config=config
        )
        self._sub = sub
        self._task = asyncio.create_task(self._run(sub), name=f"consumer:{self.spec.durable}")

    async def stop(self) -> None:
        """Stop fetching and let the batch in hand finish."""
        self._stop.set()
        if self._task is not None:
            await self._task
        if self._sub is not None:
            # Unsubscribe rather than leave it to drain(): a late fetch status message left in the
            # subscription's queue would make drain() wait for its whole timeout.
            try:
                await self._sub.unsubscribe()
            except Exception as exc:
                log.warning("consumer_unsubscribe_failed", consumer=self.spec.durable, error=repr(exc))

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        limiter = asyncio.Semaphore(self.spec.concurrency)
        in_flight: set[asyncio.Task[None]] = set()

        async def handle_limited(msg: Msg) -> None:
            async with limiter:
                await self._handle(msg)

        while not self._stop.is_set():
            if self.spec.batched:
                await limiter.acquire()  # a free slot before fetching: never hold more than we handle
            try:
                msgs = await sub.fetch(self.spec.batch, timeout=1.0)
            except Exception as exc:
                if self.spec.batched:
                    limiter.release()
                if isinstance(exc, nats.errors.TimeoutError):
                    continue
                if isinstance(exc, (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError)):
                    break
                # The server went away: keep trying, the client reconnects.
                log.warning("consumer_fetch_failed", consumer=self.spec.durable, error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            if self.spec.batched:
                task = asyncio.create_task(self._handle_batch(msgs))
                in_flight.add(task)
                task.add_done_callback(lambda t: (in_flight.discard(t), limiter.release(), self._report(t)))
            else:
                await asyncio.gather(*(handle_limited(m) for m in msgs))
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)  # each reported by _report
        # A fetch reply can land just after its client-side timeout; those messages wait in the
        # subscription's queue. Handle them now rather than leave them to the ack wait.
        late = self._late_arrivals(sub)
        if self.spec.batched and late:
            await self._handle_batch(late)
        else:
            for msg in late:
                await self._handle(msg)

    def _report(self, task: "asyncio.Task[None]") -> None:
        """Log a batch task that died outside the handler (an ack on a closed connection); it redelivers."""
        if not task.cancelled() and task.exception() is not None:
            log.warning("batch_task_failed", consumer=self.spec.durable, error=repr(task.exception()))

    @staticmethod
    def _late_arrivals(sub: JetStreamContext.PullSubscription) -> list[Msg]:
        queue = getattr(getattr(sub, "_sub", None), "_pending_queue", None)
        late: list[Msg] = []
        while queue is not None and not queue.empty():
            msg = queue.get_nowait()
            if msg.reply and msg.reply.startswith("$JS.ACK."):  # skip pull status messages
                late.append(msg)
        return late

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        """Hand a whole fetch to a batched handler; if it fails, handle each message on its own."""
        name = self.spec.durable
        parsed: list[tuple[Msg, Received[Any]]] = []
        for msg in msgs:
            received = await self._parse(msg)
            if received is not None:
                parsed.append((msg, received))
        if not parsed:
            return
        try:
            with HANDLE_SECONDS.labels(name).time():
                failures = await self.spec.handler([received for _, received in parsed])
        except Exception as exc:
            log.warning("batch_failed", consumer=name, size=len(parsed), error=repr(exc))
            BATCH_FALLBACKS.labels(name).inc()
            for msg, _ in parsed:
                await self._handle(msg)
            return
        for (msg, _), failure in zip(parsed, failures or [None] * len(parsed), strict=True):
            await self._settle(msg, failure)

    async def _parse(self, msg: Msg) -> "Received[Any] | None":
        """The typed payload, or None after terminating a message that can never parse."""
        try:
            payload = self.spec.model.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._give_up(msg, "poison", "poison_message", exc)
            return None
        return Received(payload, (msg.headers or {}).get(BUS_CORRELATION_HEADER))

    async def _handle(self, msg: Msg) -> None:
        name = self.spec.durable
        received = await self._parse(msg)
        if received is None:
            return
        bind_correlation_id(received.correlation_id)
        failure: Exception | None = None
        try:
            with HANDLE_SECONDS.labels(name).time():
                if self.spec.batched:
                    failure = ((await self.spec.handler([received])) or [None])[0]
                else:
                    await self.spec.handler(received.payload)
        except Exception as exc:
            failure = exc
        await self._settle(msg, failure)

    async def _settle(self, msg: Msg, failure: Exception | None) -> None:
        """Ack a handled message; terminate a permanent failure; redeliver any other after backoff."""
        name = self.spec.durable
        if failure is None:
            MESSAGES.labels(name, "ok").inc()
            await msg.ack()
        elif isinstance(failure, PermanentError):
            await self._give_up(msg, "rejected", "message_rejected", failure)
        else:
            delivered = msg.metadata.num_delivered
            delay = backoff_seconds(delivered)
            log.warning(
                "message_retry",
                consumer=name,
                subject=msg.subject,
                sequence=msg.metadata.sequence.stream,
                delivered=delivered,
                delay=delay,
                error=repr(failure),
                exc_info=failure if delivered >= 3 else None,
            )
            MESSAGES.labels(name, "retried").inc()
            await msg.nak(delay=delay)

    async def _give_up(self, msg: Msg, outcome: str, event: str, exc: Exception) -> None:
        """Terminate a message that can never succeed: log where it is, count it, never redeliver it."""
        name = self.spec.durable
        log.error(event, consumer=name, subject=msg.subject, sequence=msg.metadata.sequence.stream, error=str(exc))
        MESSAGES.labels(name, outcome).inc()
        await msg.term()


async def serve_requests(
    nc: NATS,
    subject: str,
    model: type[M],
    handler: Callable[[M], Awaitable[BaseModel]],
    concurrency: int = 16,
) -> Any:
    """Answer request/reply queries on `subject` (a queue group, so replicas share the load).

    Up to `concurrency` are answered at once: nats-py runs a subscription's callback one message at
    a time, so each query is handed to its own task rather than waiting for the one before it.
    """
    limiter = asyncio.Semaphore(concurrency)
    in_flight: set[asyncio.Task[None]] = set()

    async def answer(msg: Msg) -> None:
        try:
            query = model.model_validate_json(msg.data)
            reply = await handler(query)
            await msg.respond(reply.model_dump_json().encode())
        except Exception as exc:
            log.error("request_failed", subject=subject, error=repr(exc))
            await msg.respond(b'{"error": "internal"}')
        finally:
            limiter.release()

    async def on_request(msg: Msg) -> None:
        await limiter.acquire()  # beyond `concurrency`, queries wait in the subscription
        task = asyncio.create_task(answer(msg))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    return await nc.subscribe(subject, queue=subject, cb=on_request)


async def request(nc: NATS, subject: str, query: BaseModel, answer: type[M], timeout: float = 5.0) -> M:
    """Ask a query over NATS request/reply and parse the typed answer."""
    reply = await nc.request(subject, query.model_dump_json().encode(), timeout=timeout)
    try:
        return answer.model_validate_json(reply.data)
    except ValidationError as exc:
        raise RuntimeError(f"bad answer on {subject}: {reply.data[:200]!r}") from exc
