"""The web layer every service shares is honest about failure: it commits before it answers, a failed
commit is an error response, only an unreachable database or bus is a 503, everything else a logged 500,
and readiness tells a dead required dependency from a degraded one."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg.exceptions
import httpx
import nats.errors
import pytest
import sqlalchemy.exc
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Message, Receive, Scope, Send
from structlog.testing import capture_logs

from gateway.app import build as build_gateway
from gateway.config import get_settings as gateway_settings
from herald.infra import EmbeddedNats, free_port
from herald.stack import create_workspace
from kernel import bus
from kernel.logging import CORRELATION_HEADER
from kernel.settings import DatabaseSettings, HeraldSettings
from kernel.web import Informational, Session, create_app, open_resources
from services.ingest.app import build as build_ingest
from services.ingest.config import get_settings as ingest_settings
from tests.conftest import PUBLIC_KEY, Infra, eventually
from tests.integration.helpers import running


class DatabaseServiceSettings(HeraldSettings, DatabaseSettings):
    """Settings of a small service that uses PostgreSQL, as every database-backed service's do."""


def settings_for(database_url: str | None = None) -> HeraldSettings:
    """Settings for a small test service; with a database URL, it opens a pool like a real service."""
    if database_url is None:
        return HeraldSettings(gateway_public_keys=PUBLIC_KEY)
    return DatabaseServiceSettings(gateway_public_keys=PUBLIC_KEY, database_url=database_url)


def small_service(
    router: APIRouter, settings: HeraldSettings, checks: dict[str, Any] | None = None
) -> FastAPI:
    """A service built exactly as Herald's are: `create_app` and a lifespan that opens `open_resources`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Open what the settings ask for, plus extra readiness checks."""
        async with open_resources("small", settings) as res:
            res.readiness.update(checks or {})
            app.state.resources = res
            yield

    return create_app("small service", lifespan, [router])


@asynccontextmanager
async def serving(
    app: FastAPI, when_response_starts: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield a client for it; `when_response_starts` runs as the status is sent."""

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with a hook at the moment it hands the response's status line to the server."""

        async def sending(message: Message) -> None:
            """Run the hook before the response leaves."""
            if when_response_starts is not None and message["type"] == "http.response.start":
                await when_response_starts()
            await send(message)

        await app(scope, receive, sending)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=watched)
        async with httpx.AsyncClient(transport=transport, base_url="http://small") as client:
            yield client


def dead_database_url(infra: Infra) -> str:
    """A PostgreSQL URL where nothing listens."""
    return make_url(infra.database_url).set(port=free_port()).render_as_string(hide_password=False)


@pytest.fixture
async def schema(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[str]:
    """A schema of this test's own, with `things` whose parent is checked only at commit time."""
    name = f"web_{uuid.uuid4().hex[:12]}"
    async with sessions() as s, s.begin():
        await s.execute(text(f"CREATE SCHEMA {name}"))
        await s.execute(
            text(
                f"CREATE TABLE {name}.things (id text PRIMARY KEY, parent text"
                f" REFERENCES {name}.things (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    yield name
    async with sessions() as s, s.begin():
        await s.execute(text(f"DROP SCHEMA {name} CASCADE"))


async def stored(sessions: async_sessionmaker[AsyncSession], schema: str, thing_id: str) -> bool:
    """Whether another connection sees the thing (only committed rows are visible to it)."""
    async with sessions() as s:
        found = await s.scalar(text(f"SELECT id FROM {schema}.things WHERE id = :id"), {"id": thing_id})
    return found is not None


class Thing(BaseModel):
    """What the small service answers for a stored thing."""

    id: str


def things_router(schema: str, sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    """Routes that store things through the shared `Session` dependency, one way of failing each."""
    router = APIRouter()
    insert = text(f"INSERT INTO {schema}.things (id, parent) VALUES (:id, :parent)")

    @router.post("/things/{thing_id}", status_code=201)
    async def create_thing(thing_id: str, session: Session) -> Thing:
        """Store a thing."""
        await session.execute(insert, {"id": thing_id, "parent": None})
        return Thing(id=thing_id)

    @router.post("/orphans/{thing_id}", status_code=201)
    async def create_orphan(thing_id: str, session: Session) -> Thing:
        """Store a thing whose parent does not exist: accepted by the INSERT, refused at commit."""
        await session.execute(insert, {"id": thing_id, "parent": "nobody"})
        return Thing(id=thing_id)

    @router.post("/doomed/{thing_id}", status_code=201)
    async def create_then_lose_the_connection(thing_id: str, session: Session) -> Thing:
        """Store a thing, then have PostgreSQL end this request's connection before the commit."""
        await session.execute(insert, {"id": thing_id, "parent": None})
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with sessions() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        return Thing(id=thing_id)

    @router.get("/ratio")
    async def ratio(session: Session) -> dict[str, int]:
        """A query PostgreSQL refuses (division by zero): a bug, not an outage."""
        return {"ratio": int(await session.scalar(text("SELECT 1 / 0")) or 0)}

    @router.get("/count")
    async def count(session: Session) -> dict[str, int]:
        """A query that needs the database."""
        return {"things": int(await session.scalar(text("SELECT 1")) or 0)}

    return router


def failing_router(exc: BaseException) -> APIRouter:
    """One route that raises `exc`."""
    router = APIRouter()

    @router.get("/fail")
    async def fail() -> dict[str, str]:
        """Raise the error under test."""
        raise exc

    return router


def errors_logged(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The log entries that carry a traceback."""
    return [entry for entry in logs if entry.get("exc_info")]


# 1. A request's transaction is committed before its response is sent.


async def test_a_created_row_is_committed_before_the_response_is_sent(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], schema: str
) -> None:
    visible_when_answered: list[bool] = []

    async def look_from_another_connection() -> None:
        """What a client acting on the response at once would find."""
        visible_when_answered.append(await stored(sessions, schema, "t1"))

    app = small_service(things_router(schema, sessions), settings_for(infra.database_url))
    async with serving(app, when_response_starts=look_from_another_connection) as client:
        r = await client.post("/things/t1")
    assert r.status_code == 201 and r.json() == {"id": "t1"}
    assert visible_when_answered == [True], "the row must be committed before the client hears 201"


async def test_a_commit_that_fails_is_a_logged_500_and_stores_nothing(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], schema: str
) -> None:
    app = small_service(things_router(schema, sessions), settings_for(infra.database_url))
    async with serving(app) as client:
        with capture_logs() as logs:
            r = await client.post("/orphans/o1")
    assert r.status_code == 500, r.text
    assert r.json()["error"] == "internal"
    assert r.headers[CORRELATION_HEADER] in r.json()["detail"]
    assert not await stored(sessions, schema, "o1")
    [logged] = errors_logged(logs)
    assert logged["log_level"] == "error"


async def test_a_connection_lost_at_commit_is_a_503_with_retry_after(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], schema: str
) -> None:
    app = small_service(things_router(schema, sessions), settings_for(infra.database_url))
    async with serving(app) as client:
        r = await client.post("/doomed/d1")
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable" and r.headers["retry-after"]
    assert not await stored(sessions, schema, "d1")


# 2. Only an unreachable or timed-out database or bus is a 503; anything else is a logged 500.


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(2, "No such file or directory", "/etc/herald/templates/welcome.liquid"),
        PermissionError(13, "Permission denied", "/var/lib/herald/cache"),
        ValueError("invalid literal for int() with base 10: 'abc'"),
        KeyError("traits"),
        sqlalchemy.exc.OperationalError("SELECT 1", None, Exception("could not serialize access")),
        nats.errors.MaxPayloadError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_unexpected_error_is_a_500_in_the_envelope_logged_once_with_its_traceback(
    exc: BaseException,
) -> None:
    async with serving(small_service(failing_router(exc), settings_for())) as client:
        with capture_logs() as logs:
            r = await client.get("/fail")
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == "internal"
    assert r.headers[CORRELATION_HEADER] in body["detail"]
    [logged] = errors_logged(logs)
    assert logged["log_level"] == "error"
    assert len(logs) == 1, logs


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        TimeoutError(),
        OSError(113, "Connect call failed ('10.0.0.7', 5432)"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"),
        sqlalchemy.exc.InterfaceError("SELECT 1", None, Exception("connection is closed"), connection_invalidated=True),
        nats.errors.NoServersError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.NoRespondersError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_unreachable_database_or_bus_is_a_503_with_retry_after_logged_once(exc: BaseException) -> None:
    async with serving(small_service(failing_router(exc), settings_for())) as client:
        with capture_logs() as logs:
            r = await client.get("/fail")
    assert r.status_code == 503
    assert r.json()["error"] == "unavailable" and r.headers["retry-after"]
    [logged] = logs
    assert logged["log_level"] == "warning" and not logged.get("exc_info")
    assert logged["error_type"] == type(exc).__name__


async def test_postgresql_refusing_a_query_is_a_500_and_postgresql_unreachable_a_503(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], schema: str
) -> None:
    app = small_service(things_router(schema, sessions), settings_for(infra.database_url))
    async with serving(app) as client:
        refused = await client.get("/ratio")
    assert refused.status_code == 500 and refused.json()["error"] == "internal"
    dead = small_service(things_router(schema, sessions), settings_for(dead_database_url(infra)))
    async with serving(dead) as client:
        unreachable = await client.get("/count")
    assert unreachable.status_code == 503 and unreachable.headers["retry-after"]


# Routing errors use the same envelope, and no error body echoes what the client sent.


async def test_unknown_routes_and_methods_answer_in_the_error_envelope() -> None:
    async with serving(small_service(failing_router(ValueError()), settings_for())) as client:
        missing = await client.get("/nowhere")
        wrong_method = await client.delete("/fail")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert set(missing.json()) == {"error", "detail"}
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "GET"


async def test_error_responses_never_echo_what_the_client_or_the_error_carried() -> None:
    secret = "wk_" + uuid.uuid4().hex
    router = failing_router(RuntimeError(f"lookup of {secret} failed"))

    @router.post("/typed")
    async def typed(body: Thing) -> Thing:
        """Echo a valid body (invalid ones are refused before this runs)."""
        return body

    async with serving(small_service(router, settings_for())) as client:
        answers = [
            await client.get(f"/v1/projects/{secret}/nowhere"),
            await client.post("/typed", json={"id": 1, "password": secret}),
            await client.post("/typed", json={"id": {"secret": secret}}),
            await client.get("/fail"),
        ]
    assert [a.status_code for a in answers] == [404, 422, 422, 500]
    for answer in answers:
        assert secret not in answer.text, answer.text


# 3. Readiness: a required dependency down is a 503, an informational one only degrades.


async def test_readiness_fails_on_a_required_check_and_reports_an_informational_one(infra: Infra) -> None:
    async def fine() -> None:
        """A dependency that answers."""

    async def down() -> None:
        """A dependency that does not answer."""
        raise ConnectionRefusedError(111, "Connect call failed")

    impact = "new keys cannot be checked; known keys keep working"
    cases: list[tuple[dict[str, Any], int, dict[str, str] | None]] = [
        ({"bus": fine}, 200, {"status": "ready"}),
        ({"consumers": down}, 503, None),
        ({"bus": fine, "keys": Informational(down, impact=impact)}, 200, None),
        ({"consumers": down, "keys": Informational(down, impact=impact)}, 503, None),
    ]
    for checks, status, exact in cases:
        async with serving(small_service(APIRouter(), settings_for(), checks)) as client:
            r = await client.get("/readyz")
        assert r.status_code == status, (checks, r.text)
        body = r.json()
        if exact is not None:
            assert body == exact
        if "consumers" in checks:
            assert body["error"] == "unavailable" and "consumers" in body["detail"]
            assert r.headers["retry-after"]
        if "keys" in checks:
            assert body["degraded"]["keys"]["impact"] == impact
            assert "ConnectionRefusedError" in body["degraded"]["keys"]["error"]
        if status == 200 and "keys" in checks:
            assert body["status"] == "degraded"


async def test_a_service_whose_database_is_down_is_not_ready(infra: Infra) -> None:
    async with serving(small_service(APIRouter(), settings_for(dead_database_url(infra)))) as client:
        r = await client.get("/readyz")
    assert r.status_code == 503
    assert "postgresql" in r.json()["detail"]


@contextlib.contextmanager
def gateway_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[None]:
    """The gateway's settings read with these HERALD_* variables, and forgotten afterwards."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    gateway_settings.cache_clear()
    try:
        yield
    finally:
        gateway_settings.cache_clear()


async def test_the_gateway_stays_ready_while_postgresql_is_down_and_says_it_is_degraded(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gateway_env(monkeypatch, HERALD_DATABASE_URL=dead_database_url(infra)):
        async with serving(build_gateway()) as client:
            r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "degraded"
    assert "postgresql" in body["degraded"]
    assert "cache" in body["degraded"]["postgresql"]["impact"]


class Partition:
    """A TCP relay in front of PostgreSQL that a test can cut, as a crash or a network partition would."""

    def __init__(self, target: str) -> None:
        url = make_url(target)
        self.target_host, self.target_port = url.host or "127.0.0.1", url.port or 5432
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        """The PostgreSQL URL that goes through the relay."""
        return make_url(self.target).set(port=self.port).render_as_string(hide_password=False)

    async def start(self) -> None:
        """Listen and relay every connection to PostgreSQL."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """Pipe bytes both ways until either side closes."""
        server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
        self.writers += [client_writer, server_writer]

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            """Copy one direction."""
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


async def test_the_gateway_keeps_serving_known_write_keys_while_postgresql_is_down(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_workspace(infra.database_url, "web layer")
    partition = Partition(infra.database_url)
    await partition.start()
    ingest = build_ingest()
    # Every key lookup goes to PostgreSQL (no fresh cache hits), so only a stale entry can answer.
    with gateway_env(monkeypatch, HERALD_DATABASE_URL=partition.url, HERALD_KEY_CACHE_SECONDS="0"):
        gateway = build_gateway()
        async with ingest.router.lifespan_context(ingest), serving(gateway) as client:
            res = gateway.state.resources
            assert res.http is not None
            await res.http.aclose()
            res.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingest))
            track = {"userId": "ada", "event": "Signed Up"}
            before = await client.post("/v1/track", json=track, auth=(created["write_key"], ""))
            assert before.status_code == 200, before.text
            await partition.cut()
            during = await client.post("/v1/track", json=track, auth=(created["write_key"], ""))
            assert during.status_code == 200, during.text
            unknown = await client.post("/v1/track", json=track, auth=("wk_unknown", ""))
            assert unknown.status_code == 503 and unknown.headers["retry-after"]


# 4. Ingest logs each 503 it answers, once, with its cause.


BATCH = {"batch": [{"type": "track", "userId": "u", "event": f"e{i}"} for i in range(3)]}


def ingest_warnings(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The warnings logged while answering."""
    return [entry for entry in logs if entry["log_level"] == "warning"]


async def test_ingest_logs_a_503_for_a_disconnected_bus_once_with_its_cause(
    infra: Infra, tmp_path: Any, workspace_id: str
) -> None:
    private = EmbeddedNats(tmp_path / "nats", free_port()).start()
    try:
        setup = await bus.connect(private.url, "setup")
        await bus.ensure_streams(setup.jetstream())
        await setup.drain()
        async with running(build_ingest, ingest_settings, workspace_id, HERALD_NATS_URL=private.url) as client:
            private.stop()

            async def noticed() -> bool:
                """Whether ingest has seen the bus go (its readiness names NATS)."""
                return (await client.get("/readyz")).status_code == 503

            await eventually(noticed)
            with capture_logs() as logs:
                r = await client.post("/v1/batch", json=BATCH)
    finally:
        private.stop()
    assert r.status_code == 503
    [logged] = ingest_warnings(logs)
    assert logged["workspace_id"] == workspace_id and logged["events"] == 3
    assert logged["cause"] == "nats_disconnected"
    assert not errors_logged(logs)


async def test_ingest_logs_a_503_for_a_failed_publish_once_with_the_error_type(
    infra: Infra, tmp_path: Any, workspace_id: str
) -> None:
    bare = EmbeddedNats(tmp_path / "nats", free_port()).start()  # no streams: JetStream cannot store
    try:
        async with running(build_ingest, ingest_settings, workspace_id, HERALD_NATS_URL=bare.url) as client:
            with capture_logs() as logs:
                r = await client.post("/v1/batch", json=BATCH)
    finally:
        bare.stop()
    assert r.status_code == 503 and r.headers["retry-after"]
    [logged] = ingest_warnings(logs)
    assert logged["workspace_id"] == workspace_id and logged["events"] == 3
    assert logged["error_type"] == "NoStreamResponseError"
    assert not errors_logged(logs)
