"""NATS JetStream plumbing: streams, de-duplicated publishes, pull consumers, request/reply.

A consumer is honest about failure: a message it can never handle (unparseable, a permanent error,
or a transient one on its last allowed delivery) is filed on the DEADLETTERS stream with where it
came from and why, then terminated; nothing is dropped silently.

Shutdown fits the Kubernetes grace period (45 s in k8s/) in the worst case, phase by phase:

    preStop sleep (endpoints removed, no new traffic)                    5 s
    uvicorn drains HTTP requests in flight (`timeout_graceful_shutdown`,
      which must be at most the gateway's 10 s upstream timeout)        10 s
    lifespan exit: consumers stop (no new fetch; a fetch in progress is
      cancelled, not waited out) and responders take no new query;
      in-flight batches and answers finish, all at once, within         15 s  (STOP_SECONDS, then cancelled)
    NATS drain (`drain_timeout`; milliseconds once consumers have
      unsubscribed and responders drained)                              10 s
    engine dispose, process exit                                         ~0 s
                                                                  total  40 s  < 45 s, 5 s to spare

A batch still running at STOP_SECONDS is cancelled: an open transaction rolls back, and what it
had not acked JetStream redelivers after the ack wait (30 s) to another replica; every consumer is
idempotent, so that costs latency, never correctness. The ack wait is not on this path:
`in_progress()` keeps a long batch alive while it runs, so a batch may outlast the ack wait, and
at shutdown it is bounded by STOP_SECONDS instead.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, StorageType, StreamConfig
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from kernel.contracts import (
    CONSUMERS,
    DEAD_CONSUMER_HEADER,
    DEAD_REASON_HEADER,
    DEAD_SEQUENCE_HEADER,
    DEAD_SUBJECT_HEADER,
    REJECTIONS_KEPT,
    STREAMS,
    Published,
    dead_letter_subject,
)
from kernel.errors import is_permanent
from kernel.logging import BUS_CORRELATION_HEADER, bind_correlation_id, current_correlation_id
from kernel.settings import StreamSettings

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

MESSAGES = Counter(
    "herald_bus_messages_total",
    "Bus messages handled, by outcome: ok, retried, or dead-lettered as poison, rejected (a permanent"
    " failure) or exhausted (a transient failure on the last allowed delivery)",
    ["consumer", "outcome"],
)
HANDLE_SECONDS = Histogram(
    "herald_bus_handle_seconds", "Time to handle one message, or one batch for a batched consumer", ["consumer"]
)
BATCH_FALLBACKS = Counter(
    "herald_bus_batch_fallbacks_total", "Batches that failed together and were handled one message at a time", ["consumer"]
)
FETCHES = Counter(
    "herald_bus_fetches_total",
    "Pulls from JetStream, by outcome: messages, empty (nothing to do) or failed (server trouble)",
    ["consumer", "outcome"],
)

# Deduplication window for `Nats-Msg-Id`; later duplicates are absorbed by idempotent consumers.
DUPLICATE_WINDOW_SECONDS = 120.0
DEAD_LETTERS = "DEADLETTERS"
REJECTIONS = "REJECTIONS"
REJECTIONS_MAX_BYTES = 16 * 1024 * 1024
# How long one pull waits for messages; a stop cancels it rather than waiting it out.
FETCH_SECONDS = 1.0
# Pause after a pull failed for a reason other than "nothing there" (JetStream unavailable, consumer gone).
FETCH_BACKOFF_SECONDS = 1.0
# How long a stopping consumer or responder lets its in-flight work finish (see the budget above).
STOP_SECONDS = 15.0
REASON_LIMIT = 500  # characters of the error kept in a dead letter's reason header


# --- connection -------------------------------------------------------------------------------


# Errors that mean the connection is being lost; the disconnect line that follows reports them.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    nats.errors.UnexpectedEOF,
    nats.errors.StaleConnectionError,
    OSError,
)


class _ConnectionLog:
    """Logs a connection's life in one structured line per change: an outage is one warning, not one per retry."""

    # The same error while connected is logged at most this often (a slow consumer reports every message).
    REPEAT_SECONDS = 60.0

    def __init__(self, nc: NATS, name: str) -> None:
        self.nc = nc
        self.name = name
        self.down_since: float | None = None
        self.cause: BaseException | None = None
        self.failed_attempts = 0
        self.last_logged: dict[type[BaseException], float] = {}
        self.suppressed: dict[type[BaseException], int] = {}

    def _server(self) -> str | None:
        """host:port of the server in use, never the URL (it may carry credentials)."""
        server = getattr(self.nc, "_current_server", None)
        uri = getattr(server, "uri", None)
        return f"{uri.hostname}:{uri.port}" if uri is not None else None

    async def disconnected(self) -> None:
        """The connection dropped: one warning per outage, with why (closing on purpose is `closed`)."""
        if self.nc.is_closed or self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self.failed_attempts = 0
        cause, self.cause = self.cause, None
        log.warning(
            "nats_disconnected",
            connection=self.name,
            server=self._server(),
            error=describe(cause) if cause else None,
        )

    async def reconnected(self) -> None:
        """Connected again: one line, with how long it was down and how many attempts failed."""
        down = time.monotonic() - self.down_since if self.down_since is not None else None
        log.info(
            "nats_reconnected",
            connection=self.name,
            server=self._server(),
            down_seconds=round(down, 3) if down is not None else None,
            failed_attempts=self.failed_attempts,
        )
        self.down_since, self.cause, self.failed_attempts = None, None, 0

    async def error(self, exc: Exception) -> None:
        """An asynchronous error, logged once per outage or once a minute per kind, never once per retry."""
        if self.nc.is_connecting:  # the first connect keeps trying
            self.failed_attempts += 1
            if self.failed_attempts == 1:
                log.warning("nats_connect_failing", connection=self.name, server=self._server(), exc_info=exc)
            return
        if self.down_since is None and not self.nc.is_closed:
            if self.nc.is_reconnecting or isinstance(exc, CONNECTION_LOST):
                self.cause = self.cause or exc  # reported by the disconnect line that follows
                return
        if self.down_since is not None:  # reconnect attempts failing
            self.failed_attempts += 1
            if self.failed_attempts == 1:
                log.warning("nats_reconnect_failing", connection=self.name, server=self._server(), exc_info=exc)
            return
        kind, now = type(exc), time.monotonic()
        if now - self.last_logged.get(kind, -self.REPEAT_SECONDS) < self.REPEAT_SECONDS:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        self.last_logged[kind] = now
        log.error("nats_error", connection=self.name, repeated=self.suppressed.pop(kind, 0), exc_info=exc)

    async def closed(self) -> None:
        """The connection is closed for good (drained at shutdown, or it gave up)."""
        log.info("nats_closed", connection=self.name)


async def connect(url: str, name: str) -> NATS:
    """Connect to NATS (one URL, or several comma-separated), reconnecting forever once connected.

    Disconnection, reconnection, errors and closing are each logged once, as structured lines.
    """
    nc = NATS()
    watch = _ConnectionLog(nc, name)
    options: dict[str, Any] = {  # nats-py annotates reconnect_time_wait as int; it takes seconds as a float
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "drain_timeout": 10,
        "error_cb": watch.error,
        "disconnected_cb": watch.disconnected,
        "reconnected_cb": watch.reconnected,
        "closed_cb": watch.closed,
    }
    await nc.connect([server.strip() for server in url.split(",") if server.strip()], **options)
    watch.failed_attempts = 0
    return nc


# --- streams ----------------------------------------------------------------------------------

# JetStream's error code when a stream's max_bytes does not fit the storage left to reserve.
INSUFFICIENT_STORAGE = 10047


def stream_configs(replicas: int = 1, retention: StreamSettings | None = None) -> list[StreamConfig]:
    """Herald's streams as they should be: subjects, replicas and retention (from HERALD_* when not given)."""
    retention = retention or StreamSettings()
    configs = []
    for name, subjects in STREAMS.items():
        dead = name == DEAD_LETTERS
        hours = retention.dead_letter_max_age_hours if dead else retention.stream_max_age_hours
        config = StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
            max_age=hours * 3600,
            max_bytes=retention.dead_letter_max_bytes if dead else retention.stream_max_bytes,
        )
        if name == REJECTIONS:
            # A bounded diagnostic list per workspace, not a log to replay: a small reservation.
            config.max_msgs_per_subject = REJECTIONS_KEPT
            config.max_bytes = REJECTIONS_MAX_BYTES
        configs.append(config)
    return configs


async def ensure_streams(js: JetStreamContext, replicas: int = 1, retention: StreamSettings | None = None) -> None:
    """Create Herald's streams, or bring their subjects, replicas and retention up to date; safe to re-run.

    `replicas` is how many JetStream servers keep a copy: 1 on one server, 3 on a three-node cluster.
    `retention` bounds every stream, the dead letters too, by age and by size (the oldest messages
    go first); without it, it is read from the HERALD_STREAM_* and HERALD_DEAD_LETTER_* environment.
    A message older than the limits is gone even if a lagging consumer never handled it: size the
    limits for the longest consumer outage and the furthest replay you want.
    """
    for config in stream_configs(replicas, retention):
        try:
            await js.stream_info(config.name or "")
        except nats.js.errors.NotFoundError:
            apply = js.add_stream
        else:
            apply = js.update_stream
        try:
            await apply(config)
        except nats.js.errors.APIError as exc:
            if exc.err_code == INSUFFICIENT_STORAGE:
                raise RuntimeError(
                    f"JetStream cannot reserve {config.max_bytes} bytes for stream {config.name}: lower "
                    "HERALD_STREAM_MAX_BYTES / HERALD_DEAD_LETTER_MAX_BYTES or give the server more storage"
                ) from exc
            raise


# --- publishing -------------------------------------------------------------------------------


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
    items: Sequence[tuple[str, bytes, str]],
    timeout: float = 5.0,
    correlation_ids: Sequence[str | None] | None = None,
) -> None:
    """Publish (subject, payload, message id) triples pipelined; return once all are stored."""
    correlation_ids = correlation_ids or [None] * len(items)
    futures = [
        await js.publish_async(subject, payload, headers=headers_for(message_id, correlation))
        for (subject, payload, message_id), correlation in zip(items, correlation_ids, strict=True)
    ]
    try:
        async with asyncio.timeout(timeout):
            for ack in asyncio.as_completed(futures):
                await ack
    finally:
        # The first failure is raised; the others are consumed here rather than reported as
        # "never retrieved", and acks still awaited are abandoned.
        for future in futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()


async def publish_contracts(
    js: JetStreamContext,
    messages: Sequence[Published],
    correlation_ids: Sequence[str | None] | None = None,
    timeout: float = 5.0,
) -> None:
    """Publish contract messages pipelined, each to its own subject under its de-duplication id; return once stored."""
    await publish_many(
        js,
        [(m.subject, m.model_dump_json().encode(), m.dedupe_id) for m in messages],
        timeout=timeout,
        correlation_ids=correlation_ids,
    )


# --- consumers --------------------------------------------------------------------------------


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
    for done, or the exception that one failed with. When it raises, it must have applied nothing,
    and each message of the batch is retried on its own, so one bad message cannot hold back the rest.

    A failure that `kernel.errors.is_permanent` calls permanent is dead-lettered at once; any other
    is redelivered with backoff, and dead-lettered when it fails on delivery `max_deliver`.
    `max_ack_pending` defaults to four fetches' worth, at least 1000.
    """

    stream: str
    durable: str
    subject: str
    model: type[BaseModel]
    handler: Callable[[Any], Awaitable[Any]]
    batch: int = 64
    concurrency: int = 1
    max_deliver: int = 20
    ack_wait: float = 30.0
    batched: bool = False
    max_ack_pending: int | None = None

    @classmethod
    def for_service(
        cls,
        service: str,
        model: type[BaseModel],
        handler: Callable[[Any], Awaitable[Any]],
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

    def consumer_config(self) -> ConsumerConfig:
        """The durable consumer's configuration on the server, as this spec wants it."""
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending or max(1000, self.batch * 4),
            filter_subject=self.subject,
        )


@asynccontextmanager
async def consuming(
    js: JetStreamContext,
    specs: Sequence[ConsumerSpec],
    readiness: MutableMapping[str, Any] | None = None,
    stop_timeout: float = STOP_SECONDS,
) -> AsyncIterator[dict[str, "Consumer"]]:
    """Run these consumers for the block and yield them by durable name, each with its effective config.

    Each durable consumer is created, or updated to the spec (ack wait, max deliver, max ack
    pending), before its first fetch. Given `readiness` (a service's `Resources.readiness`), one
    check per consumer (`consumer:<durable>`) fails while its fetch loop is not running. On exit
    all stop together: no new fetch, in-flight batches finish within `stop_timeout` (the shutdown
    budget in this module's docstring), and the checks are removed.
    """
    consumers: dict[str, Consumer] = {}
    try:
        for spec in specs:
            consumer = Consumer(js, spec)
            await consumer.start()
            consumers[spec.durable] = consumer
        if readiness is not None:
            for durable, consumer in consumers.items():
                readiness[f"consumer:{durable}"] = consumer.check
        yield consumers
    finally:
        if readiness is not None:
            for durable in consumers:
                readiness.pop(f"consumer:{durable}", None)
        await asyncio.gather(*(consumer.stop(stop_timeout) for consumer in consumers.values()))


def backoff_seconds(num_delivered: int) -> float:
    """Redelivery delay after a transient failure: 0.5 s doubling, capped at 30 s."""
    return float(min(30.0, 0.5 * 2 ** max(0, num_delivered - 1)))


def workspace_of(payload: bytes) -> str | None:
    """The `workspace_id` of a JSON payload, if it has a usable one (a dead letter is filed under it)."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    workspace = document.get("workspace_id") if isinstance(document, dict) else None
    if isinstance(workspace, str) and 0 < len(workspace) <= 128 and workspace.isprintable():
        if not any(c in workspace for c in ".*> "):
            return workspace
    return None


def describe(exc: BaseException) -> str:
    """`ErrorType: message` on one line, bounded; a wrapped database error as its driver said it."""
    root = exc
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error, statement and all
    if isinstance(orig, BaseException):
        root = orig
        for _ in range(10):  # SQLAlchemy's adapted error is raised from the driver's own
            if root.__cause__ is None:
                break
            root = root.__cause__
    return " ".join(f"{type(root).__name__}: {root}".split())[:REASON_LIMIT]


class Consumer:
    """Fetches from a durable pull consumer until stopped; acks only after the handler returns."""

    def __init__(self, js: JetStreamContext, spec: ConsumerSpec) -> None:
        self.js = js
        self.spec = spec
        self.info: ConsumerInfo | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._unsubscribed = False

    @property
    def ack_wait(self) -> float:
        """The ack wait the server applies to this consumer, in seconds (read back at start)."""
        assert self.info is not None, "start() the consumer first"
        return float(self.info.config.ack_wait or self.spec.ack_wait)

    @property
    def max_deliver(self) -> int:
        """Deliveries the server allows a message (-1: no limit), read back at start."""
        assert self.info is not None, "start() the consumer first"
        return int(self.info.config.max_deliver or self.spec.max_deliver)

    @property
    def max_ack_pending(self) -> int:
        """Messages the server lets this consumer hold unacknowledged, read back at start."""
        assert self.info is not None, "start() the consumer first"
        return int(self.info.config.max_ack_pending or 0)

    async def start(self) -> None:
        """Create the durable consumer or update it to the spec, bind to it, and start fetching."""
        self.info = await self.js.add_consumer(self.spec.stream, self.spec.consumer_config())
        self._sub = await self.js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)
        self._task = asyncio.create_task(self._run(self._sub), name=f"consumer:{self.spec.durable}")
        self._task.add_done_callback(self._ended)

    async def check(self) -> None:
        """Readiness: raise unless the fetch loop is running."""
        if self._task is None:
            raise RuntimeError(f"consumer {self.spec.durable} is not started")
        if self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            raise RuntimeError(f"consumer {self.spec.durable} is not running" + (f": {error!r}" if error else ""))

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop fetching at once and let in-flight batches finish, for at most `timeout` seconds.

        Past it, what is still running is cancelled: nothing of it was acked, so JetStream
        redelivers those messages after the ack wait.
        """
        self._stop.set()
        if self._task is not None and not self._task.done():
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                log.warning("consumer_stop_timed_out", consumer=self.spec.durable, timeout=timeout)
                self._task.cancel()
                await asyncio.wait({self._task})
        if self._sub is not None:
            await self._unsubscribe(self._sub)

    def _ended(self, task: "asyncio.Task[None]") -> None:
        """Log a fetch loop that died (readiness reports it from then on)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer_died", consumer=self.spec.durable, exc_info=task.exception())

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        """The fetch loop: pull, hand each fetch to the handler, until stopped; then finish what is in hand."""
        limiter = asyncio.Semaphore(self.spec.concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        failing_since: float | None = None

        async def handle_limited(msg: Msg) -> None:
            """Handle one message once a concurrency slot is free."""
            async with limiter:
                await self._handle(msg)

        while not self._stop.is_set():
            if self.spec.batched and not await self._acquire_unless_stopped(limiter):
                break  # never hold more than we handle: a free slot before fetching
            received_before = sub.delivered
            try:
                msgs = await self._fetch_unless_stopped(sub)
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
                if self.spec.batched:
                    limiter.release()
                if not self._stop.is_set():
                    log.error("consumer_connection_closed", consumer=self.spec.durable, exc_info=exc)
                break
            except TimeoutError:
                # Nothing to do. nats-py raises its own TimeoutError, FetchTimeoutError, or a plain
                # asyncio.TimeoutError when the server's "request timeout" lands just inside the
                # deadline; all mean an idle consumer.
                msgs = []
            except Exception as exc:
                if self.spec.batched:
                    limiter.release()
                FETCHES.labels(self.spec.durable, "failed").inc()
                if failing_since is None:  # once per outage, not per fetch
                    failing_since = time.monotonic()
                    log.warning(
                        "consumer_fetch_failing", consumer=self.spec.durable, retry_seconds=FETCH_BACKOFF_SECONDS,
                        exc_info=exc,
                    )
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), FETCH_BACKOFF_SECONDS)
                continue
            if failing_since is not None and (msgs or sub.delivered != received_before):
                log.info(
                    "consumer_fetch_recovered",
                    consumer=self.spec.durable,
                    failed_seconds=round(time.monotonic() - failing_since, 3),
                )
                failing_since = None
            if not msgs:
                if self.spec.batched:
                    limiter.release()
                if msgs is not None:
                    FETCHES.labels(self.spec.durable, "empty").inc()
                continue
            FETCHES.labels(self.spec.durable, "messages").inc()
            if self.spec.batched:
                task = asyncio.create_task(self._handle_batch(msgs))
                in_flight.add(task)

                def finished(task: "asyncio.Task[None]") -> None:
                    """Free the batch's slot and report how it ended."""
                    in_flight.discard(task)
                    limiter.release()
                    self._report(task)

                task.add_done_callback(finished)
            else:
                async with self._kept_in_progress(msgs):
                    await asyncio.gather(*(handle_limited(m) for m in msgs))
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)  # each reported by _report
        # A fetch reply can land just after its client-side timeout (or its cancellation); those
        # messages wait in the subscription's queue. Stop interest first, then handle what came.
        await self._unsubscribe(sub)
        late = self._late_arrivals(sub)
        if self.spec.batched and late:
            await self._handle_batch(late)
        elif late:
            async with self._kept_in_progress(late):
                for msg in late:
                    await self._handle(msg)

    async def _acquire_unless_stopped(self, limiter: asyncio.Semaphore) -> bool:
        """Take a handling slot, or give up when a stop is requested first; True with the slot held."""
        acquire = asyncio.ensure_future(limiter.acquire())
        if await self._done_unless_stopped(acquire):
            return True
        await self._cancel(acquire)
        if not acquire.cancelled() and acquire.exception() is None:
            limiter.release()  # acquired just as it was cancelled
        return False

    async def _fetch_unless_stopped(self, sub: JetStreamContext.PullSubscription) -> list[Msg] | None:
        """One pull; None when a stop came first and nothing had arrived yet (the pull is then cancelled).

        A pull that has already received something is allowed to finish (at most FETCH_SECONDS) so
        that its messages are handled rather than left to the ack wait.
        """
        if self._stop.is_set():
            return None
        received_before = sub.delivered
        fetch = asyncio.ensure_future(sub.fetch(self.spec.batch, timeout=FETCH_SECONDS))
        if await self._done_unless_stopped(fetch) or sub.delivered != received_before:
            return await fetch
        await self._cancel(fetch)
        if not fetch.cancelled() and fetch.exception() is None:
            return fetch.result()
        return None

    async def _done_unless_stopped(self, work: "asyncio.Future[Any]") -> bool:
        """Wait until `work` is done or a stop is requested; True when `work` is done."""
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            stopping.cancel()
        return work.done()

    @staticmethod
    async def _cancel(work: "asyncio.Future[Any]") -> None:
        """Cancel `work` and wait until it has ended (whatever it ended with is left on it)."""
        work.cancel()
        await asyncio.wait({work})

    async def _unsubscribe(self, sub: JetStreamContext.PullSubscription) -> None:
        """Stop interest in the pull inbox once (JetStream then drops pull requests still waiting)."""
        if self._unsubscribed:
            return
        self._unsubscribed = True
        # Unsubscribe rather than leave it to drain(): a late fetch status message left in the
        # subscription's queue would make drain() wait for its whole timeout.
        try:
            await sub.unsubscribe()
        except nats.errors.Error as exc:
            log.debug("consumer_unsubscribe_skipped", consumer=self.spec.durable, reason=type(exc).__name__)

    def _report(self, task: "asyncio.Task[None]") -> None:
        """Log a batch task that died outside the handler; its messages are redelivered after the ack wait."""
        if not task.cancelled() and task.exception() is not None:
            log.error("batch_task_failed", consumer=self.spec.durable, exc_info=task.exception())

    @staticmethod
    def _late_arrivals(sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Messages already in the subscription's queue, without pull status messages."""
        queue = getattr(getattr(sub, "_sub", None), "_pending_queue", None)
        late: list[Msg] = []
        while queue is not None and not queue.empty():
            msg = queue.get_nowait()
            if msg.reply and msg.reply.startswith("$JS.ACK."):  # skip pull status messages
                late.append(msg)
        return late

    @asynccontextmanager
    async def _kept_in_progress(self, msgs: Sequence[Msg]) -> AsyncIterator[None]:
        """While the block runs, tell JetStream every ack_wait/3 that each unsettled message is still being handled."""
        beat = asyncio.create_task(self._beat(msgs), name=f"in_progress:{self.spec.durable}")
        try:
            yield
        finally:
            beat.cancel()
            await asyncio.wait({beat})

    async def _beat(self, msgs: Sequence[Msg]) -> None:
        """Send `in_progress()` for each unsettled message every ack_wait/3 until cancelled."""
        interval = self.ack_wait / 3
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                if not msg.is_acked:
                    try:
                        await msg.in_progress()
                    except nats.errors.Error:
                        return  # the connection is gone; the ack wait takes over

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        """Hand a whole fetch to a batched handler; if it fails, handle each message on its own."""
        name = self.spec.durable
        async with self._kept_in_progress(msgs):
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
                log.warning("batch_failed", consumer=name, size=len(parsed), exc_info=exc)
                BATCH_FALLBACKS.labels(name).inc()
                for msg, _ in parsed:
                    await self._handle(msg)
                return
            for (msg, _), failure in zip(parsed, failures or [None] * len(parsed), strict=True):
                await self._settle(msg, failure)

    async def _parse(self, msg: Msg) -> "Received[Any] | None":
        """The typed payload, or None after dead-lettering a message that can never parse."""
        try:
            payload = self.spec.model.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._settle_quietly(msg, self._dead_letter(msg, "poison", exc))
            return None
        return Received(payload, (msg.headers or {}).get(BUS_CORRELATION_HEADER))

    async def _handle(self, msg: Msg) -> None:
        """Handle one message on its own and settle it."""
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

    async def _settle(self, msg: Msg, failure: BaseException | None) -> None:
        """Ack a handled message; dead-letter one that can never succeed; redeliver any other after backoff."""
        name = self.spec.durable
        if failure is None:
            MESSAGES.labels(name, "ok").inc()
            await self._settle_quietly(msg, msg.ack())
        elif is_permanent(failure):
            await self._settle_quietly(msg, self._dead_letter(msg, "rejected", failure))
        elif 0 < self.max_deliver <= msg.metadata.num_delivered:
            # JetStream would drop it silently after this delivery: file it instead.
            await self._settle_quietly(msg, self._dead_letter(msg, "exhausted", failure))
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
                error=describe(failure),
                exc_info=failure if delivered >= 3 else None,
            )
            MESSAGES.labels(name, "retried").inc()
            await self._settle_quietly(msg, msg.nak(delay=delay))

    async def _settle_quietly(self, msg: Msg, settling: Awaitable[None]) -> None:
        """Ack, nak, term or dead-letter; if the connection is gone, JetStream redelivers after the ack wait."""
        try:
            await settling
        except nats.errors.Error as exc:
            log.warning(
                "message_settle_failed",
                consumer=self.spec.durable,
                subject=msg.subject,
                sequence=msg.metadata.sequence.stream,
                exc_info=exc,
            )

    async def _dead_letter(self, msg: Msg, kind: str, exc: BaseException) -> None:
        """File a message that can never succeed on DEADLETTERS, then terminate it; retry later if filing fails.

        `kind` is poison (cannot parse), rejected (a permanent failure) or exhausted (a transient
        failure on the last allowed delivery). The copy keeps the payload and the message's own
        headers, and says where it came from and why; its id is the consumer and stream sequence,
        so a second attempt to file the same message is de-duplicated.
        """
        name, meta = self.spec.durable, msg.metadata
        subject = dead_letter_subject(workspace_of(msg.data), name)
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
        headers.update(
            {
                "Nats-Msg-Id": f"dead:{meta.stream}:{name}:{meta.sequence.stream}",
                DEAD_SUBJECT_HEADER: msg.subject,
                DEAD_CONSUMER_HEADER: name,
                DEAD_SEQUENCE_HEADER: str(meta.sequence.stream),
                DEAD_REASON_HEADER: f"{kind}: {describe(exc)}",
            }
        )
        where = {"consumer": name, "subject": msg.subject, "sequence": meta.sequence.stream, "delivered": meta.num_delivered}
        try:
            await self.js.publish(subject, msg.data, headers=headers, timeout=5.0)
        except Exception as publish_error:
            # Not filed: keep the message. On its last delivery JetStream will drop it; this line
            # (and the source stream, until its max age) is then what is left of it.
            log.error("dead_letter_failed", **where, kind=kind, error=describe(exc), exc_info=publish_error)
            MESSAGES.labels(name, "retried").inc()
            await msg.nak(delay=backoff_seconds(meta.num_delivered))
            return
        log.error("message_dead", **where, kind=kind, dead_subject=subject, exc_info=exc)
        MESSAGES.labels(name, kind).inc()
        await msg.term()


# --- request / reply --------------------------------------------------------------------------


class Responder:
    """Answers request/reply queries on one subject (a queue group, so replicas share the load).

    Up to `concurrency` are answered at once: nats-py runs a subscription's callback one message at
    a time, so each query is handed to its own task rather than waiting for the one before it.
    """

    def __init__(
        self, nc: NATS, subject: str, model: type[M], handler: Callable[[M], Awaitable[BaseModel]], concurrency: int
    ) -> None:
        self.nc = nc
        self.subject = subject
        self._model: type[BaseModel] = model
        self._handler: Callable[[Any], Awaitable[BaseModel]] = handler
        self._limiter = asyncio.Semaphore(concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe and start answering."""
        self._sub = await self.nc.subscribe(self.subject, queue=self.subject, cb=self._on_request)

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Take no new queries, answer those already received, and return once the answers are sent.

        Past `timeout`, answers still being worked on are cancelled (their askers time out and retry).
        """
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            async with asyncio.timeout(timeout):
                with suppress(nats.errors.Error):  # a closed or draining connection: nothing more comes in
                    await sub.drain()  # every query already received gets its task
                if self._in_flight:
                    await asyncio.gather(*self._in_flight, return_exceptions=True)
                if self.nc.is_connected:
                    await self.nc.flush()
        except TimeoutError:
            log.warning("responder_stop_timed_out", subject=self.subject, timeout=timeout, in_flight=len(self._in_flight))

    async def unsubscribe(self) -> None:
        """Stop answering (the same as `stop()`, for code that held the subscription)."""
        await self.stop()

    async def _on_request(self, msg: Msg) -> None:
        """Hand a query to a task of its own once fewer than `concurrency` are being answered."""
        await self._limiter.acquire()  # beyond `concurrency`, queries wait in the subscription
        task = asyncio.create_task(self._answer(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _answer(self, msg: Msg) -> None:
        """Parse the query, ask the handler, and reply (`{"error": "internal"}` if it fails)."""
        try:
            query = self._model.model_validate_json(msg.data)
            reply = await self._handler(query)
            await msg.respond(reply.model_dump_json().encode())
        except Exception as exc:
            log.error("request_failed", subject=self.subject, exc_info=exc)
            with suppress(nats.errors.Error):
                await msg.respond(b'{"error": "internal"}')
        finally:
            self._limiter.release()


async def serve_requests(
    nc: NATS,
    subject: str,
    model: type[M],
    handler: Callable[[M], Awaitable[BaseModel]],
    concurrency: int = 16,
) -> Responder:
    """Answer request/reply queries on `subject` until the returned responder is stopped (`await r.stop()`)."""
    responder = Responder(nc, subject, model, handler, concurrency)
    await responder.start()
    return responder


async def request(nc: NATS, subject: str, query: BaseModel, answer: type[M], timeout: float = 5.0) -> M:
    """Ask a query over NATS request/reply and parse the typed answer."""
    reply = await nc.request(subject, query.model_dump_json().encode(), timeout=timeout)
    try:
        return answer.model_validate_json(reply.data)
    except ValidationError as exc:
        raise RuntimeError(f"bad answer on {subject}: {reply.data[:200]!r}") from exc
