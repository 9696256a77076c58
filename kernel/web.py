"""The FastAPI app factory every service uses: health, readiness, metrics, errors, correlation."""

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import nats.errors
import orjson
import sqlalchemy.exc
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel import bus, db
from kernel.errors import HeraldError, Unauthorized
from kernel.logging import CORRELATION_HEADER, bind_correlation_id
from kernel.settings import BusSettings, DatabaseSettings, HeraldSettings

log = structlog.get_logger(__name__)

INTERNAL_TOKEN_HEADER = "X-Herald-Internal-Token"
WORKSPACE_HEADER = "X-Herald-Workspace"

class JSON(JSONResponse):
    """JSON rendered with orjson (datetimes, UUIDs and large payloads, fast)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


REQUESTS = Counter("herald_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("herald_http_request_seconds", "HTTP request latency", ["method", "route"])
POOL_IN_USE = Gauge("herald_db_pool_in_use", "Database connections checked out of this process's pool")
POOL_CAPACITY = Gauge("herald_db_pool_capacity", "Most connections this process's pool may open")


@dataclass
class Resources:
    """What a process connects to, opened by its lifespan and closed in reverse order."""

    settings: HeraldSettings
    engine: AsyncEngine | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    nc: NATS | None = None
    js: JetStreamContext | None = None
    http: httpx.AsyncClient | None = None
    readiness: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)

    @property
    def db(self) -> async_sessionmaker[AsyncSession]:
        assert self.sessions is not None, "this service has no database"
        return self.sessions

    @property
    def jetstream(self) -> JetStreamContext:
        assert self.js is not None, "this service has no bus"
        return self.js

    @property
    def nats(self) -> NATS:
        assert self.nc is not None, "this service has no bus"
        return self.nc


@asynccontextmanager
async def open_resources(name: str, settings: HeraldSettings) -> AsyncIterator[Resources]:
    """Open the engine and the NATS connection the settings ask for; drain and dispose on exit."""
    res = Resources(settings=settings)
    if isinstance(settings, DatabaseSettings):
        res.engine = db.make_engine(
            settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
        res.sessions = db.make_sessionmaker(res.engine)
        engine = res.engine
        res.readiness["postgresql"] = lambda: db.ping(engine)
        POOL_IN_USE.set_function(engine.pool.checkedout)  # type: ignore[attr-defined]
        POOL_CAPACITY.set(settings.db_pool_size + settings.db_max_overflow)
    try:
        if isinstance(settings, BusSettings):
            res.nc = await bus.connect(settings.nats_url, name=name)
            res.js = res.nc.jetstream()
            nc = res.nc
            res.readiness["nats"] = lambda: _nats_ready(nc)
        yield res
    finally:
        if res.http is not None:
            await res.http.aclose()
        if res.nc is not None and not res.nc.is_closed:
            # drain() needs a live connection; during an outage there is nothing left to flush.
            await (res.nc.drain() if res.nc.is_connected else res.nc.close())
        if res.engine is not None:
            await res.engine.dispose()


async def _nats_ready(nc: NATS) -> None:
    if not nc.is_connected:
        raise RuntimeError("NATS is not connected")
    await nc.flush(timeout=2)


def get_resources(request: Request) -> Resources:
    """The process's resources, opened by the lifespan."""
    return request.app.state.resources  # type: ignore[no-any-return]


Res = Annotated[Resources, Depends(get_resources)]


async def get_session(res: Res) -> AsyncIterator[AsyncSession]:
    """One session per request, committed at the edge (or rolled back if the route raises)."""
    async with db.unit_of_work(res.db) as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def internal_workspace(request: Request, res: Res) -> str:
    """The workspace the gateway authenticated; refuses calls that did not come through it."""
    expected = res.settings.internal_token.get_secret_value()
    given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong internal token; call Herald through the gateway")
    workspace = request.headers.get(WORKSPACE_HEADER)
    if not workspace:
        raise Unauthorized("no workspace on an internal call")
    return workspace


WorkspaceId = Annotated[str, Depends(internal_workspace)]


class ObservabilityMiddleware:
    """Binds a correlation id per request and records Prometheus request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or [])
        correlation_id = bind_correlation_id(
            raw.get(CORRELATION_HEADER.lower().encode(), b"").decode() or None
        )
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((CORRELATION_HEADER.lower().encode(), correlation_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUESTS.labels(scope["method"], path, str(status)).inc()
            LATENCY.labels(scope["method"], path).observe(time.perf_counter() - started)


async def _herald_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HeraldError)
    return JSON(exc.body(), status_code=exc.status_code, headers=exc.headers)


# A dependency that is down (connection refused, pool exhausted, server gone): 503, never 500.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
)


async def _dependency_down(request: Request, exc: Exception) -> Response:
    log.warning("dependency_unavailable", path=request.url.path, error=repr(exc))
    return JSON(
        {"error": "unavailable", "detail": "a dependency (database or bus) is unavailable; retry"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSON({"error": "validation_error", "detail": detail}, status_code=422)


health = APIRouter(tags=["operations"])


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up."""
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(res: Res) -> Response:
    """Readiness: every dependency this service uses answers."""
    failures: dict[str, str] = {}
    for name, check in res.readiness.items():
        try:
            async with asyncio.timeout(3):
                await check()
        except Exception as exc:
            failures[name] = repr(exc)
    if failures:
        return JSON(
            {"error": "unavailable", "detail": failures}, status_code=503, headers={"Retry-After": "5"}
        )
    return JSON({"status": "ready"})


@health.get("/metrics")
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    routers: list[APIRouter],
) -> FastAPI:
    """Build a service's FastAPI app with Herald's shared operational surface."""
    app = FastAPI(title=title, lifespan=lifespan, default_response_class=JSON)
    app.add_middleware(ObservabilityMiddleware)
    app.add_exception_handler(HeraldError, _herald_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in DEPENDENCY_ERRORS:
        app.add_exception_handler(error, _dependency_down)
    app.include_router(health)
    for router in routers:
        app.include_router(router)
    return app
