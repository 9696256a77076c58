"""`herald up` (what `make run` runs) stops everything it started, however it is stopped: by SIGTERM
delivered twice (make passes on the signal its process group already delivered) and repeated while it
shuts down, or by SIGKILL, after which the parent-death signal stops every child. Either way nothing is
left holding the ports, so the next `make run` starts."""

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from herald.infra import free_port, port_open, wait_for
from herald.stack import PROCESSES

ROOT = Path(__file__).resolve().parents[2]
READY, STOPPING, ALREADY_STOPPING, STOPPED = "Herald is up.", "stopping services", "already stopping", "stopped;"
# Generous: two cores shared with other test runs. The waits end as soon as their condition holds.
START_TIMEOUT, STOP_TIMEOUT = 90.0, 40.0
# What `herald up` runs as its direct children: the services, the dev sinks, NATS and PostgreSQL.
ROLES = sorted([*PROCESSES, "nats-server", "postgres"])


def _bindable(port: int) -> bool:
    """Whether a server could listen on `port` now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_run(count: int) -> int:
    """The first of `count` consecutive free ports (the gateway's, then the five services').

    Taken below the ephemeral range: `free_port()` answers a port from it that bind(0) prefers (odd,
    on Linux), but a run of consecutive ports holds even ones, which the outgoing connections of every
    process on this machine draw from and may take between this check and `herald up` binding them.
    """
    try:
        lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    for _ in range(100):
        base = random.randrange(10000, lowest_ephemeral - count)
        if all(_bindable(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


@dataclass
class Settings:
    """A local stack of its own: data dir and free ports, as HERALD_* variables."""

    env: dict[str, str]
    gateway_port: int
    ports: list[int]

    @classmethod
    def fresh(cls, data_dir: Path) -> "Settings":
        """Free ports and a new data dir; every other HERALD_* variable of this process left out."""
        gateway = _free_run(len(PROCESSES) - 1)
        ports = list(range(gateway, gateway + len(PROCESSES) - 1))
        named: dict[str, int] = {}
        for name in ("SMTP_PORT", "SINK_HTTP_PORT", "NATS_PORT", "POSTGRES_PORT"):
            port = free_port()
            while port in ports:
                port = free_port()
            named[name] = port
            ports.append(port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update({f"HERALD_{k}": str(v) for k, v in named.items()})
        env.update({"HERALD_DATA_DIR": str(data_dir), "HERALD_GATEWAY_PORT": str(gateway)})
        return cls(env, gateway, ports)


class HeraldUp:
    """One `herald up`, in a session of its own (a signal to its process group reaches it alone), its output in a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.children: list[psutil.Process] = []
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "herald", "up"], cwd=ROOT, env=settings.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def output(self) -> str:
        """Everything `herald up` and its services printed so far."""
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Wait for the banner and the gateway's /readyz; then record every process `herald up` started."""
        url = f"http://127.0.0.1:{self.settings.gateway_port}/readyz"

        def ready() -> bool:
            if READY not in self.output():
                return False
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, START_TIMEOUT, "herald up", self.proc, self.log)
        parent = psutil.Process(self.proc.pid)
        self.children = parent.children(recursive=True)
        assert sorted(_role(child) for child in parent.children()) == ROLES

    def wait_for_output(self, text: str) -> None:
        """Wait until `herald up` prints `text`."""
        wait_for(lambda: text in self.output(), STOP_TIMEOUT, f"{text!r} from herald up", self.proc, self.log)

    def assert_everything_stopped(self) -> None:
        """Every process `herald up` started has exited and none of the stack's ports is listening."""
        _, alive = psutil.wait_procs(self.children, timeout=STOP_TIMEOUT)
        assert alive == [], f"left running: {[_describe(p) for p in alive]}"

        def listening() -> list[int]:
            return [p for p in self.settings.ports if port_open(p)]

        deadline = time.monotonic() + STOP_TIMEOUT
        while listening() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listening() == [], "ports still taken"

    def kill_everything(self) -> None:
        """Kill `herald up` and whatever it started that still runs, so a failed test leaves nothing behind."""
        leftovers = list(self.children)
        if self.proc.poll() is None:
            with suppress(psutil.Error):
                leftovers += psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.kill()
            self.proc.wait()
        for process in leftovers:
            with suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(leftovers, timeout=10)


def _role(process: psutil.Process) -> str:
    """`gateway` … `sinks` for `herald serve NAME`, else the executable's name (nats-server, postgres)."""
    cmdline = process.cmdline()
    if "serve" in cmdline:
        return cmdline[cmdline.index("serve") + 1]
    return Path(cmdline[0]).name


def _describe(process: psutil.Process) -> str:
    """A leftover process, for the failure message."""
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:120]}"
    except psutil.Error:
        return str(process.pid)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[[], HeraldUp]]:
    """Start `herald up` on one data dir and one set of free ports (again on the same ones if called twice)."""
    settings = Settings.fresh(tmp_path / "herald")
    runs: list[HeraldUp] = []

    def start() -> HeraldUp:
        runs.append(HeraldUp(settings, tmp_path / f"herald-up-{len(runs)}.log"))
        return runs[-1]

    try:
        yield start
    finally:
        for run in runs:
            run.kill_everything()


def _to_process(run: HeraldUp, sig: int) -> None:
    """Signal `herald up` itself (`kill PID`)."""
    with suppress(ProcessLookupError):
        os.kill(run.proc.pid, sig)


def _like_make(run: HeraldUp, sig: int) -> None:
    """What `herald up` receives under `make run` when the group is signalled: the group's copy, then make's."""
    with suppress(ProcessLookupError):
        os.killpg(run.proc.pid, sig)
        os.kill(run.proc.pid, sig)


@pytest.mark.parametrize("deliver", [_to_process, _like_make], ids=["kill-twice", "group-and-make-forwarding"])
def test_sigterm_twice_then_more_signals_while_stopping_stop_every_process_with_exit_0(
    launch: Callable[[], HeraldUp], deliver: Callable[[HeraldUp, int], None]
) -> None:
    run = launch()
    run.wait_ready()
    deliver(run, signal.SIGTERM)
    deliver(run, signal.SIGTERM)
    run.wait_for_output(STOPPING)
    # Keep interrupting (SIGTERM, then Ctrl-C's SIGINT) while the shutdown runs: none may cut it short.
    deadline = time.monotonic() + STOP_TIMEOUT
    for sig in itertools.cycle((signal.SIGTERM, signal.SIGINT)):
        if run.proc.poll() is not None or time.monotonic() > deadline:
            break
        deliver(run, sig)
        time.sleep(0.1)  # pacing between signals, not a wait for an outcome
    code = run.proc.wait(STOP_TIMEOUT)
    output = run.output()
    assert code == 0, output[-3000:]
    assert output.count(ALREADY_STOPPING) == 1, output[-3000:]
    assert STOPPED in output
    run.assert_everything_stopped()


def test_sigkill_stops_every_process_and_the_next_run_starts_on_the_same_ports(
    launch: Callable[[], HeraldUp],
) -> None:
    first = launch()
    first.wait_ready()
    first.proc.kill()
    first.proc.wait()
    first.assert_everything_stopped()

    second = launch()  # same data dir, same ports: what a second `make run` finds
    second.wait_ready()
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(STOP_TIMEOUT) == 0, second.output()[-3000:]
    second.assert_everything_stopped()
