"""Session fixtures: real NATS JetStream and PostgreSQL, started from the same wheels `make run` uses."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import structlog
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from herald.infra import EmbeddedNats, EmbeddedPostgres, free_port
from herald.stack import Stack, StackConfig, migrate
from kernel import signing
from kernel.db import make_engine, make_sessionmaker
from kernel.logging import configure_logging

SIGNING_KEY, PUBLIC_KEY = signing.new_key_pair()  # this session's gateway key pair
SIGNER = signing.Signer(SIGNING_KEY)


def pytest_configure(config: pytest.Config) -> None:
    """Log in the services' own console format, as `make run` does: a traceback is plain text. Unconfigured,
    structlog renders it with rich and every local variable, which takes seconds per dead-lettered message and
    stalled the consumers of the in-process services under test. Loggers stay uncached for `capture_logs`."""
    configure_logging("tests", "console", "INFO")
    structlog.configure(cache_logger_on_first_use=False)


def as_gateway(workspace_id: str) -> signing.GatewayAuth:
    """httpx auth that signs each request as the gateway would, for this workspace."""
    return signing.GatewayAuth(SIGNER, workspace_id)


class Infra:
    def __init__(self, nats_url: str, database_url: str, root: Path) -> None:
        self.nats_url, self.database_url, self.root = nats_url, database_url, root


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """NATS and PostgreSQL for the whole session, migrated, with the streams created."""
    root = tmp_path_factory.mktemp("herald")
    nats_server = postgres = None
    try:
        nats_server = EmbeddedNats(root / "nats", free_port()).start()
        postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=False).start()
        migrate(postgres.url, nats_server.url)
        os.environ.update(
            {
                "HERALD_ENV": "test",
                "HERALD_DATABASE_URL": postgres.url,
                "HERALD_NATS_URL": nats_server.url,
                "HERALD_GATEWAY_PUBLIC_KEYS": PUBLIC_KEY,
                "HERALD_GATEWAY_SIGNING_KEY": SIGNING_KEY,
                "HERALD_LOG_FORMAT": "console",
            }
        )
        yield Infra(nats_server.url, postgres.url, root)
    finally:
        if postgres:
            postgres.stop()
        if nats_server:
            nats_server.stop()


@pytest.fixture
def workspace_id() -> str:
    """A workspace id nobody else uses, so tests never see each other's data."""
    return f"ws_{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def sessions(infra: Infra) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(infra.database_url, pool_size=5)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def nc(infra: Infra) -> AsyncIterator[NATS]:
    client = await nats.connect(infra.nats_url)
    yield client
    await client.drain()


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll an async check until it returns something truthy; fail with the last value on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while True:
        last = await check()
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def stack(infra: Infra) -> Iterator[Stack]:
    """The whole stack as real processes, started the way `make run` starts them: one per session,
    shared by the e2e and fuzz tiers. Two stacks on one NATS and PostgreSQL would be two replicas of
    each service with different sinks: a send taken by the other dispatcher never reaches this one's."""
    config = StackConfig.on_free_ports(
        infra.root / "stack", infra.database_url, infra.nats_url, SIGNING_KEY,
        # The sinks listen on 127.0.0.1, which webhooks may reach only when allowed.
        extra_env={"HERALD_SCHEDULER_POLL_SECONDS": "0.1", "HERALD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"},
    )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    running = Stack(config, log_dir=infra.root / "logs")
    try:
        running.start()
        running.wait_ready(timeout=60)
        yield running
    finally:
        codes = running.stop()
        # Every service must stop cleanly on SIGTERM: drained, not killed.
        assert all(code in (0, -15) for code in codes.values()), f"unclean exits: {codes}"
