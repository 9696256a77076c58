"""The chaos tier's tools: a stack whose every part can be killed, an SDK-like load, a counting
webhook receiver, and the ledger that says what was lost, doubled or is still under way."""

import asyncio
import itertools
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx

from herald.infra import EmbeddedNats, EmbeddedPostgres, free_port, port_open
from herald.stack import SERVICES, Stack, create_workspace
from kernel.contracts import FINAL_DELIVERY_STATUSES

INFRA = ("nats", "postgres")
COMPONENTS = (*INFRA, *SERVICES, "sinks")


def sample(ids: Iterable[str], limit: int = 5) -> str:
    """A few of these ids, sorted, and how many more there are."""
    ordered = sorted(ids)
    shown = ", ".join(ordered[:limit])
    return shown + (f", … (+{len(ordered) - limit} more)" if len(ordered) > limit else "")


# --- the webhook receiver --------------------------------------------------------------------

Mode = Literal["up", "failing", "down"]


class Receiver:
    """A webhook endpoint on its own thread and event loop, so the test's own waits never delay it.

    It counts the requests it accepted per `idempotency-key` (the dispatcher's send id) the moment
    it has read them, before answering: a request read is a request the provider acted on, even if
    the sender dies before the answer reaches it. `down()` closes the listening socket and every
    open connection (connections are refused, like a provider that is gone); `failing()` keeps
    listening but answers 503 without accepting anything; `up()` serves again on the same port.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.port = free_port()
        self.latency = latency
        self.mode: Mode = "up"
        self._accepted: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"receiver-{self.port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """The receiver's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Receiver":
        """Start its thread and listen."""
        self._thread.start()
        self._call(self._listen())
        return self

    def accepted(self) -> Counter[str]:
        """Requests accepted (answered 2xx) per idempotency key, so far."""
        with self._lock:
            return Counter(self._accepted)

    def refused(self) -> Counter[str]:
        """Requests answered 503 per idempotency key, so far."""
        with self._lock:
            return Counter(self._refused)

    def down(self) -> None:
        """Stop listening and drop every connection: the provider is gone."""
        self.mode = "down"
        self._call(self._close())

    def failing(self) -> None:
        """Keep listening, answer every request 503: the provider is up but unwell."""
        self.mode = "failing"
        if self._server is None:
            self._call(self._listen())

    def up(self) -> None:
        """Serve normally again, on the same port."""
        if self._server is None:
            self._call(self._listen())
        self.mode = "up"

    def stop(self) -> None:
        """Close everything and end the thread."""
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One keep-alive HTTP/1.1 connection: read each request whole, count it, answer it."""
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                headers: dict[str, str] = {}
                for line in head.split("\r\n")[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length") or 0))
                key = headers.get("idempotency-key", "<no idempotency-key>")
                with self._lock:
                    failing = self.mode != "up"
                    (self._refused if failing else self._accepted)[key] += 1
                if failing:
                    status, body = "503 Service Unavailable", b'{"error": "down for maintenance"}'
                else:
                    status, body = "200 OK", b'{"ok": true}'
                    if self.latency:
                        await asyncio.sleep(self.latency)  # a provider's own response time
                writer.write(
                    f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


# --- the load ---------------------------------------------------------------------------------


class Load:
    """`track` calls at a steady rate through the gateway, sent and retried the way an SDK does.

    Each call has its own messageId and one of a few user ids. 5xx, 429 and network errors are
    retried with backoff doubling from 0.2 s to 2 s (analytics-python's shape) for up to
    `give_up_seconds`; a call counts as accepted only when it got a 200. It stops by itself after
    `max_seconds` worth of calls, or at `stop()`, and then lets the calls under way finish.
    """

    def __init__(
        self,
        sdk: httpx.AsyncClient,
        run: str,
        users: list[str],
        event: str,
        rate: float,
        max_seconds: float,
        give_up_seconds: float = 45.0,
    ) -> None:
        self.sdk, self.run, self.users, self.event = sdk, run, users, event
        self.rate, self.max_calls, self.give_up_seconds = rate, int(rate * max_seconds), give_up_seconds
        self.accepted: dict[str, str] = {}  # messageId -> userId, for each call answered 200
        self.unaccepted: dict[str, str] = {}  # messageId -> its last answer, for each call given up on
        self.retries = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()

    def start(self) -> "Load":
        """Start sending in the background."""
        self._task = asyncio.create_task(self._run(), name=f"load-{self.run}")
        return self

    async def stop(self) -> "Load":
        """Send no new calls; wait for the calls under way to be accepted or given up."""
        self._stop.set()
        if self._task is not None:
            await self._task
        return self

    async def abort(self) -> None:
        """Stop at once, cancelling the calls under way (a failed test must not wait for them)."""
        self._stop.set()
        for task in [*self._calls, *([self._task] if self._task else [])]:
            task.cancel()
        await asyncio.gather(*self._calls, *([self._task] if self._task else []), return_exceptions=True)

    async def finished(self, timeout: float) -> "Load":
        """Wait until every call of the bounded run was sent and settled."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self

    def describe(self) -> str:
        """Calls accepted, given up and retried so far."""
        given_up = Counter(reason.split(":")[0] for reason in self.unaccepted.values())
        return (
            f"{len(self.accepted)} calls answered 200, {len(self.unaccepted)} not accepted {dict(given_up)}, "
            f"{self.retries} retries"
        )

    async def wait_accepted(self, count: int, timeout: float, what: str) -> None:
        """Wait until at least `count` calls were accepted in all."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            if time.monotonic() > deadline or (self._task is not None and self._task.done()):
                raise AssertionError(
                    f"{what}: {len(self.accepted)} calls accepted, wanted {count} within {timeout:.0f}s "
                    f"({self.retries} retries; given up: {len(self.unaccepted)}, e.g. {list(self.unaccepted.values())[:3]})"
                )
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in itertools.count():
            if i >= self.max_calls or self._stop.is_set():
                break
            pause = started + i / self.rate - loop.time()
            if pause > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), pause)
                    break
                except TimeoutError:
                    pass
            message_id = f"{self.run}-{i:05d}"
            task = asyncio.create_task(self._call(message_id, self.users[i % len(self.users)]))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        if self._calls:
            await asyncio.gather(*self._calls)

    async def _call(self, message_id: str, user_id: str) -> None:
        body = {"userId": user_id, "event": self.event, "messageId": message_id, "properties": {"run": self.run}}
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.give_up_seconds
        backoff = 0.2
        while True:
            try:
                response = await self.sdk.post("/v1/track", json=body)
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    self.accepted[message_id] = user_id
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code != 429 and response.status_code < 500:
                    self.unaccepted[message_id] = last  # an SDK drops a call the server refused
                    return
            if loop.time() + backoff > give_up_at:
                self.unaccepted[message_id] = f"given up after {self.give_up_seconds:.0f}s; last: {last}"
                return
            self.retries += 1
            await asyncio.sleep(backoff)  # the SDK's retry backoff
            backoff = min(2.0, backoff * 2)


# --- the cluster ------------------------------------------------------------------------------


def live(pid: int) -> bool:
    """Whether a process exists and is not a zombie (from /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # the state follows the name, which may hold spaces


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class Tenant:
    """One fault's workspace, with SDK and API clients through the gateway."""

    workspace_id: str
    sdk: httpx.AsyncClient
    api: httpx.AsyncClient

    async def campaign(self, name: str, channel: str, event: str, message: dict[str, Any], delay_seconds: int = 1) -> str:
        """Create and launch an action-based campaign triggered by `event`; returns its id."""
        body = {"name": name, "channel": channel, "trigger": {"event": event}, "delay_seconds": delay_seconds, "message": message}
        created = await self.api.post("/api/v1/campaigns", json=body)
        assert created.status_code == 201, created.text
        campaign_id: str = created.json()["id"]
        launched = await self.api.post(f"/api/v1/campaigns/{campaign_id}/launch")
        assert launched.status_code == 200 and launched.json()["status"] == "active", launched.text
        return campaign_id


class Cluster:
    """The tier's own NATS, PostgreSQL and stack, and the means to kill -9 and restart each part."""

    def __init__(self, nats: EmbeddedNats, postgres: EmbeddedPostgres, stack: Stack) -> None:
        self.nats, self.postgres, self.stack = nats, postgres, stack

    @property
    def database_url(self) -> str:
        """The tier's PostgreSQL."""
        return self.postgres.url

    def alive(self, name: str) -> bool:
        """Whether the component's process is running."""
        if name == "nats":
            return self.nats.proc is not None and self.nats.proc.poll() is None
        if name == "postgres":
            return self.postgres.proc is not None and self.postgres.proc.poll() is None
        proc = self.stack.procs.get(name)
        return proc is not None and proc.poll() is None

    async def kill(self, name: str) -> None:
        """SIGKILL the component, and wait until it is gone."""
        await asyncio.to_thread(self._kill, name)

    def _kill(self, name: str) -> None:
        if name == "nats":
            assert self.nats.proc is not None
            self.nats.proc.kill()
            self.nats.proc.wait(10)
        elif name == "postgres":
            self._kill_postgres()
        else:
            proc = self.stack.procs[name]
            proc.kill()
            proc.wait(10)

    def _kill_postgres(self) -> None:
        """SIGKILL the postmaster and every process it started, as when its container or machine dies.

        Each backend and worker leads a process group of its own, so one killpg cannot reach them:
        the postmaster is stopped first (it forks nothing more), its children listed and killed,
        the postmaster last, so none of them notices the others die and exits in good order. Killed
        alone, the postmaster would leave backends holding the shared memory, and a new postmaster
        must never run beside them. Once every one is gone, the old postmaster.pid is stale for
        certain and is removed, so that a reused pid cannot make it look alive.
        """
        proc = self.postgres.proc
        assert proc is not None
        doomed = [proc.pid]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            doomed = [*children(proc.pid), proc.pid]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)
        deadline = time.monotonic() + 15
        while survivors := [pid for pid in doomed if live(pid)]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres processes {survivors} outlived SIGKILL")
            time.sleep(0.05)
        (self.postgres.data_dir / "postmaster.pid").unlink(missing_ok=True)

    async def restart(self, name: str) -> None:
        """Start a killed component again on the same port and data (the caller waits for readiness)."""
        # NATS and PostgreSQL start (blocking) on a worker thread, where die_with_parent arms no
        # parent-death signal; the fixture's finally is what stops them.
        if name == "nats":
            await asyncio.to_thread(self.nats.start)  # JetStream recovers its streams from its store
        elif name == "postgres":
            # It replays its WAL (crash recovery); start() returns once it accepts connections.
            await asyncio.to_thread(self.postgres.start)
        else:
            self.stack.start_one(name)

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until every process answers its readiness check."""
        await asyncio.to_thread(self.stack.wait_ready, timeout)

    async def heal(self) -> None:
        """Restart whatever is not running (infrastructure first), then wait until all is ready."""
        for name in COMPONENTS:
            if not self.alive(name):
                # A postmaster that died on its own leaves backends that exit once they notice; until
                # then PostgreSQL's own postmaster.pid check refuses to start beside them.
                await self.restart(name)
        await self.ready()

    def stop(self) -> None:
        """Stop the stack, then PostgreSQL, then NATS."""
        try:
            self.stack.stop()
        finally:
            try:
                self.postgres.stop()  # a fast shutdown; its backends exit with it
            finally:
                self.nats.stop()

    def log(self, name: str) -> str:
        """Everything a component logged in this tier."""
        if name == "nats":
            path = self.nats.data_dir / "nats.log"
        elif name == "postgres":
            path = self.postgres.data_dir.parent / f"{self.postgres.data_dir.name}.log"
        else:
            assert self.stack.log_dir is not None
            path = self.stack.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @asynccontextmanager
    async def tenant(self, name: str) -> AsyncIterator[Tenant]:
        """A fresh workspace and clients for it."""
        created = await create_workspace(self.database_url, name)
        base = self.stack.config.url("gateway")
        async with (
            httpx.AsyncClient(base_url=base, auth=(created["write_key"], ""), timeout=10) as sdk,
            httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {created['api_key']}"}, timeout=10) as api,
        ):
            yield Tenant(created["workspace_id"], sdk, api)

    async def sink_emails(self) -> list[dict[str, Any]]:
        """Every email the dev SMTP sink caught (it keeps them across restarts)."""
        async with httpx.AsyncClient(base_url=self.stack.config.url("sinks"), timeout=10) as sink:
            response = await sink.get("/messages")
            response.raise_for_status()
            emails: list[dict[str, Any]] = response.json()["emails"]
            return emails

    def sink_listening(self) -> bool:
        """Whether the SMTP sink accepts connections."""
        return port_open(self.stack.config.smtp_port)


# --- the ledger -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendRow:
    """The scheduler's decision for one send."""

    status: str
    reason: str | None
    trigger_message_id: str | None


@dataclass(frozen=True)
class DeliveryRow:
    """The dispatcher's delivery log entry for one send."""

    status: str
    reason: str | None
    attempts: int


@dataclass
class CampaignLedger:
    """One campaign's send decisions and delivery log rows, by send id."""

    sends: dict[str, SendRow]
    deliveries: dict[str, DeliveryRow]


async def stored_events(database_url: str, workspace_id: str, message_ids: list[str]) -> dict[str, int]:
    """Rows in profiles.events per message id, for these ids of this workspace."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT message_id, count(*) AS n FROM profiles.events"
            " WHERE workspace_id = $1 AND message_id = ANY($2::text[]) GROUP BY message_id",
            workspace_id,
            message_ids,
        )
    finally:
        await conn.close()
    return {r["message_id"]: int(r["n"]) for r in rows}


async def campaign_ledger(database_url: str, workspace_id: str, campaign_id: str) -> CampaignLedger:
    """The scheduler's sends and the dispatcher's deliveries of one campaign."""
    conn = await asyncpg.connect(database_url)
    try:
        sends = await conn.fetch(
            "SELECT send_id, status, reason, trigger->>'message_id' AS trigger FROM scheduler.sends"
            " WHERE workspace_id = $1 AND campaign_id = $2",
            workspace_id,
            campaign_id,
        )
        deliveries = await conn.fetch(
            "SELECT send_id, status, reason, attempts FROM dispatcher.deliveries WHERE workspace_id = $1 AND campaign_id = $2",
            workspace_id,
            campaign_id,
        )
    finally:
        await conn.close()
    return CampaignLedger(
        {r["send_id"]: SendRow(r["status"], r["reason"], r["trigger"]) for r in sends},
        {r["send_id"]: DeliveryRow(r["status"], r["reason"], int(r["attempts"])) for r in deliveries},
    )


@dataclass
class Verdict:
    """What one look found: what is still under way (pending) and what is wrong for good (violations)."""

    label: str
    pending: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    state: tuple[Any, ...] = ()  # changes whenever anything counted changes
    summary: list[str] = field(default_factory=list)  # the counts behind the findings

    def __add__(self, other: "Verdict") -> "Verdict":
        return Verdict(
            f"{self.label} + {other.label}",
            self.pending + other.pending,
            self.violations + other.violations,
            (*self.state, *other.state),
            self.summary + other.summary,
        )

    def describe(self) -> str:
        """The counts, then the findings, one per line, each naming the fault and channel it belongs to."""
        lines = [*self.summary, *(f"still pending: {p}" for p in self.pending), *(f"VIOLATION: {v}" for v in self.violations)]
        return "\n".join(lines)


def judge_events(label: str, accepted: Iterable[str], stored: dict[str, int]) -> Verdict:
    """Every accepted event is in profiles.events exactly once."""
    accepted = list(accepted)
    verdict = Verdict(label)
    missing = [m for m in accepted if stored.get(m, 0) == 0]
    doubled = {m: n for m, n in stored.items() if n > 1}
    if missing:
        verdict.pending.append(
            f"[{label}] {len(missing)} of {len(accepted)} events answered 200 are not in profiles.events: {sample(missing)}"
        )
    if doubled:
        verdict.violations.append(
            f"[{label}] {len(doubled)} events are stored more than once: "
            + ", ".join(f"{m} ×{n}" for m, n in sorted(doubled.items())[:5])
        )
    verdict.state = (label, len(missing), sum(stored.values()))
    verdict.summary.append(f"[{label}] {len(accepted)} events answered 200, {len(accepted) - len(missing)} of them stored")
    return verdict


def judge_sends(
    label: str, accepted: Iterable[str], ledger: CampaignLedger, arrivals: Counter[str], unknown_allowed: bool
) -> Verdict:
    """Every accepted event made one send; every send was delivered exactly once, or is `unknown` and arrived at most once.

    `arrivals` counts, per send id, how often the send reached the provider; read it after the
    ledger, so that a send the ledger records as sent has already been counted.
    """
    verdict = Verdict(label)
    by_trigger: defaultdict[str | None, list[str]] = defaultdict(list)
    for send_id, send in ledger.sends.items():
        by_trigger[send.trigger_message_id].append(send_id)
    accepted = list(accepted)
    unsent = [m for m in accepted if m not in by_trigger]
    if unsent:
        verdict.pending.append(f"[{label}] {len(unsent)} accepted events have no send decision yet: {sample(unsent)}")
    several = {m: ids for m, ids in by_trigger.items() if len(ids) > 1}
    if several:
        verdict.violations.append(f"[{label}] {len(several)} events triggered several sends: {sample(str(m) for m in several)}")

    waiting: list[str] = []
    under_way: defaultdict[str, list[str]] = defaultdict(list)
    not_sent: defaultdict[str, list[str]] = defaultdict(list)
    final: defaultdict[str, list[str]] = defaultdict(list)
    never_arrived, doubled = [], []
    for send_id, send in ledger.sends.items():
        if send.status == "scheduled":
            waiting.append(send_id)
            continue
        if send.status != "requested":
            not_sent[f"{send.status}: {send.reason}"].append(send_id)
            continue
        delivery = ledger.deliveries.get(send_id)
        if delivery is None or delivery.status not in FINAL_DELIVERY_STATUSES:
            status = "not in the delivery log" if delivery is None else f"{delivery.status} ({delivery.reason})"
            under_way[status].append(send_id)
            continue
        arrived = arrivals.get(send_id, 0)
        if delivery.status == "sent":
            if arrived == 0:
                never_arrived.append(send_id)
            elif arrived > 1:
                doubled.append(f"{send_id} ×{arrived}")
        elif delivery.status == "unknown" and unknown_allowed:
            if arrived > 1:
                doubled.append(f"{send_id} ×{arrived} (unknown)")
        else:
            final[f"{delivery.status}: {delivery.reason}"].append(send_id)
    if waiting:
        verdict.pending.append(f"[{label}] {len(waiting)} sends are still scheduled: {sample(waiting)}")
    for status, ids in under_way.items():
        verdict.pending.append(f"[{label}] {len(ids)} sends are still under way, {status}: {sample(ids)}")
    for status, ids in not_sent.items():
        verdict.violations.append(f"[{label}] {len(ids)} due sends were not requested — {status}: {sample(ids)}")
    for status, ids in final.items():
        verdict.violations.append(f"[{label}] {len(ids)} sends were not delivered — {status}: {sample(ids)}")
    if never_arrived:
        verdict.violations.append(
            f"[{label}] {len(never_arrived)} sends are recorded sent but never reached the provider: {sample(never_arrived)}"
        )
    if doubled:
        verdict.violations.append(f"[{label}] {len(doubled)} sends reached the provider more than once: {sample(doubled)}")
    strangers = {k: n for k, n in arrivals.items() if k not in ledger.sends}
    if strangers:
        verdict.violations.append(
            f"[{label}] {len(strangers)} deliveries reached the provider under keys that are no send of this campaign: "
            + sample(f"{k} ×{n}" for k, n in strangers.items())
        )
    statuses = Counter(d.status for d in ledger.deliveries.values())
    verdict.state = (label, len(ledger.sends), tuple(sorted(statuses.items())), sum(arrivals.values()))
    verdict.summary.append(
        f"[{label}] {len(ledger.sends)} send decisions, delivery log {dict(sorted(statuses.items()))}, "
        f"{sum(arrivals.values())} arrivals at the provider ({len(arrivals)} distinct send ids)"
    )
    return verdict


async def settle(look: Callable[[], Awaitable[Verdict]], timeout: float, what: str) -> Verdict:
    """Look until nothing is pending and two looks a second apart agree; return the last look.

    Raises AssertionError with everything still pending (and anything already wrong) on timeout.
    """
    deadline = time.monotonic() + timeout
    previous: Verdict | None = None
    while True:
        verdict = await look()
        if not verdict.pending and previous is not None and previous.state == verdict.state:
            return verdict
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not settled within {timeout:.0f}s\n{verdict.describe()}")
        previous = None if verdict.pending else verdict
        await asyncio.sleep(1.0)
