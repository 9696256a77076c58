"""The whole Herald stack as separate processes: what `herald up` runs and the e2e tests start."""

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from herald.infra import die_with_parent, free_port
from kernel import signing
from kernel.migrate import upgrade_all
from services.dispatcher.credentials import new_secrets_key

SERVICES = ("ingest", "profiles", "segmenter", "scheduler", "dispatcher", "gateway")
PROCESSES = (*SERVICES, "sinks")
# Each service's (app module, settings module), gateway first.
APPS: dict[str, tuple[str, str]] = {
    "gateway": ("gateway.app", "gateway.config"),
    **{s: (f"services.{s}.app", f"services.{s}.config") for s in SERVICES if s != "gateway"},
}
Echo = Callable[[str, str], None]


@dataclass
class StackConfig:
    data_dir: Path
    database_url: str
    nats_url: str
    gateway_signing_key: str  # the gateway's alone; the services get its public key
    secrets_key: str = ""  # the dispatcher's alone: seals channel credentials at rest
    gateway_port: int = 8000
    smtp_port: int = 1025
    sink_http_port: int = 8025
    host: str = "127.0.0.1"
    env: str = "development"
    log_format: str = "console"
    service_ports: dict[str, int] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def on_free_ports(
        cls, data_dir: Path, database_url: str, nats_url: str, gateway_signing_key: str, extra_env: dict[str, str]
    ) -> "StackConfig":
        """A stack for the tests and the bench: every port a free one, test settings, JSON logs."""
        return cls(
            data_dir=data_dir, database_url=database_url, nats_url=nats_url, gateway_signing_key=gateway_signing_key,
            secrets_key=new_secrets_key(),
            gateway_port=free_port(), smtp_port=free_port(), sink_http_port=free_port(), env="test", log_format="json",
            service_ports={s: free_port() for s in SERVICES if s != "gateway"}, extra_env=extra_env,
        )

    def port(self, service: str) -> int:
        if service == "gateway":
            return self.gateway_port
        if service == "sinks":
            return self.sink_http_port
        return self.service_ports.get(service, self.gateway_port + 1 + SERVICES.index(service))

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.port(service)}"

    @property
    def link_key(self) -> str:
        """The key that signs messages' public links, shared by the dispatcher and the gateway: derived from the
        gateway's signing key, so a local stack keeps its links valid across restarts without storing another key."""
        return hashlib.sha256(b"herald-link-key:" + self.gateway_signing_key.encode()).hexdigest()

    def environment(self, service: str) -> dict[str, str]:
        """The environment a child process runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(
            {
                "HERALD_ENV": self.env,
                "HERALD_HOST": self.host,
                "HERALD_PORT": str(self.port(service)),
                "HERALD_DATABASE_URL": self.database_url,
                "HERALD_NATS_URL": self.nats_url,
                "HERALD_GATEWAY_PUBLIC_KEYS": signing.public_key_text(self.gateway_signing_key),
                "HERALD_LOG_FORMAT": self.log_format,
                "HERALD_SMTP_HOST": self.host,
                "HERALD_SMTP_PORT": str(self.smtp_port),
                "HERALD_SINK_HTTP_PORT": str(self.sink_http_port),
                # Push goes to the sinks' APNs- and FCM-compatible endpoints, which issue the credentials to use.
                "HERALD_APNS_URL": f"{self.url('sinks')}/apns",
                "HERALD_APNS_SANDBOX_URL": f"{self.url('sinks')}/apns",
                "HERALD_FCM_URL": f"{self.url('sinks')}/fcm",
                "HERALD_TWILIO_URL": f"{self.url('sinks')}/twilio",
                "HERALD_FCM_TOKEN_ORIGINS": f"https://oauth2.googleapis.com,{self.url('sinks')}",
                "HERALD_DATA_DIR": str(self.data_dir),
                **{f"HERALD_{s.upper()}_URL": self.url(s) for s in SERVICES if s != "gateway"},
                # The local stack's webhook sink, and whatever a developer runs beside it, are on this
                # machine: let its webhooks reach loopback and the stack's host (production allows none).
                "HERALD_WEBHOOK_ALLOWED_HOSTS": ",".join(dict.fromkeys(["127.0.0.0/8", "::1", "localhost", self.host])),
                # Emails' signed links (open pixel, click redirects, unsubscribe) point at this gateway, which serves them.
                "HERALD_PUBLIC_URL": self.url("gateway"),
                "HERALD_LINK_KEY": self.link_key,
                **self.extra_env,
            }
        )
        if service == "gateway":
            env["HERALD_GATEWAY_SIGNING_KEY"] = self.gateway_signing_key
        if service == "dispatcher" and self.secrets_key:
            env.setdefault("HERALD_SECRETS_KEY", self.secrets_key)
        return env


def migrate(database_url: str, nats_url: str | None, stream_replicas: int = 1) -> list[str]:
    """Apply every schema's migrations and (given NATS) create the streams."""
    from herald.infra import ensure_streams

    schemas = upgrade_all(database_url)
    if nats_url:
        asyncio.run(ensure_streams(nats_url, stream_replicas))
    return schemas


class Stack:
    """Starts, watches and stops the service processes."""

    def __init__(self, config: StackConfig, echo: Echo | None = None, log_dir: Path | None = None) -> None:
        self.config = config
        self.echo = echo
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._threads: list[threading.Thread] = []

    def start(self, names: tuple[str, ...] = PROCESSES) -> None:
        for name in names:
            self.start_one(name)

    def start_one(self, name: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "herald", "serve", name]
        out: int | IO[bytes] = subprocess.PIPE
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")
        # A session of its own: Ctrl-C reaches whoever started the stack, who stops the services in
        # order; the parent-death signal stops them if that process dies without doing so.
        proc = subprocess.Popen(
            cmd, env=self.config.environment(name), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # a service drains on SIGTERM
        )
        self.procs[name] = proc
        if self.log_dir is None and proc.stdout is not None:
            thread = threading.Thread(target=self._relay, args=(name, proc.stdout), daemon=True)
            thread.start()
            self._threads.append(thread)
        return proc

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            if self.echo:
                self.echo(name, line.decode(errors="replace").rstrip())

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every process answers its health or readiness check."""
        deadline = time.monotonic() + timeout
        pending = dict(self.procs)
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for name, proc in list(pending.items()):
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {proc.returncode} while starting{self.log_tail(name)}")
                    path = "/healthz" if name == "sinks" else "/readyz"
                    try:
                        if client.get(self.config.url(name) + path).status_code == 200:
                            del pending[name]
                    except httpx.TransportError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
                if pending:
                    time.sleep(0.1)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        return "\n" + path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def first_exited(self) -> str | None:
        return next((n for n, p in self.procs.items() if p.poll() is not None), None)

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every process (gateway first), wait for them to drain, kill stragglers."""
        order = ["gateway", "ingest", "scheduler", "segmenter", "profiles", "dispatcher", "sinks"]
        for name in order:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {name: proc.returncode for name, proc in self.procs.items()}


def load_state(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "state.json"
    return orjson.loads(path.read_bytes()) if path.exists() else {}


def save_state(data_dir: Path, state: dict[str, Any]) -> None:
    path = data_dir / "state.json"
    path.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    path.chmod(0o600)


def new_signing_key() -> str:
    return signing.new_key_pair()[0]


@asynccontextmanager
async def _gateway_session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A short-lived engine and one committed unit of work, for the command line."""
    from kernel.db import make_engine, make_sessionmaker, unit_of_work

    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            yield session
    finally:
        await engine.dispose()


async def create_workspace(database_url: str, name: str) -> dict[str, str]:
    """Create a workspace directly in the gateway's schema; returns its credentials."""
    from gateway import service

    async with _gateway_session(database_url) as session:
        created = await service.create_workspace(session, name)
    return created.model_dump()


async def workspace_exists(database_url: str, workspace_id: str) -> bool:
    from sqlalchemy import select

    from gateway.models import Workspace

    async with _gateway_session(database_url) as session:
        return await session.scalar(select(Workspace.id).where(Workspace.id == workspace_id)) is not None


async def set_rate_limits(database_url: str, workspace_id: str, limits: dict[str, int] | None) -> bool:
    """Give a workspace its own SDK/API rate limits (None: back to the defaults); False if it does not exist."""
    from gateway import repository

    async with _gateway_session(database_url) as session:
        return await repository.set_workspace_rate_limits(session, workspace_id, limits)
