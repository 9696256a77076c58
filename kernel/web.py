"""The FastAPI app factory every service uses: health, readiness, metrics, errors, correlation."""

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from typing import Annotated, Any

import httpx
import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel import bus, db, signing
from kernel.errors import HeraldError, Unauthorized, is_dependency_outage
from kernel.logging import CORRELATION_HEADER, bind_correlation_id, current_correlation_id
from kernel.settings import BusSettings, DatabaseSettings, HeraldSettings

log = structlog.get_logger(__name__)

READINESS_TIMEOUT_SECONDS = 3.0
RETRY_AFTER_SECONDS = "5"


class JSON(JSONResponse):
    """JSON rendered with orjson (datetimes, UUIDs and large payloads, fast)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


REQUESTS = Counter("herald_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("herald_http_request_seconds", "HTTP request latency", ["method", "route"])
POOL_IN_USE = Gauge("herald_db_pool_in_use", "Database connections checked out of this process's pool")
POOL_CAPACITY = Gauge("herald_db_pool_capacity", "Most connections this process's pool may open")


Check = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Informational:
    """A readiness check whose failure degrades the service but keeps it in rotation.

    `/readyz` still answers 200, and lists the check under `degraded` with its error and `impact`:
    what does not work meanwhile, and what still does.
    """

    check: Check
    impact: str


ReadinessCheck = Check | Informational


@dataclass
class Resources:
    """What a process connects to, opened by its lifespan and closed in reverse order.

    `readiness` is what `/readyz` runs: a name mapped to an async check that returns when its part is
    usable and raises when it is not (each gets `READINESS_TIMEOUT_SECONDS`). A plain check is
    required: if it fails, `/readyz` answers 503 with the name and its error under `detail`, and
    Kubernetes takes the pod out of rotation. A check wrapped in `Informational(check, impact=...)`
    only degrades: `/readyz` stays 200 with `"status": "degraded"`. `open_resources` registers
    `postgresql` and `nats`; a service adds its own during its lifespan the same way, e.g.
    `res.readiness["consumers"] = consumers_alive` (required unless wrapped), and
    `make_informational` turns an existing one into an informational one.
    """

    settings: HeraldSettings
    engine: AsyncEngine | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    nc: NATS | None = None
    js: JetStreamContext | None = None
    http: httpx.AsyncClient | None = None
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)

    def make_informational(self, name: str, impact: str) -> None:
        """Keep the registered check `name`, but let its failure only degrade readiness (see `impact`)."""
        check = self.readiness[name]
        self.readiness[name] = Informational(check.check if isinstance(check, Informational) else check, impact)

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
        POOL_IN_USE.set_function(engine.pool.checkedout)
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
    """Raise unless NATS is connected and answers a round trip."""
    if not nc.is_connected:
        raise RuntimeError("NATS is not connected")
    await nc.flush(timeout=2)


async def get_resources(request: Request) -> Resources:
    """The process's resources, opened by the lifespan (async: FastAPI runs a plain function in a thread,
    a hop on every request)."""
    return request.app.state.resources


Res = Annotated[Resources, Depends(get_resources)]


async def get_session(res: Res) -> AsyncIterator[AsyncSession]:
    """One session per request, committed when the route returns (or rolled back if it raises)."""
    async with db.unit_of_work(res.db) as session:
        yield session


# scope="function": FastAPI ends the dependency as soon as the route returns, before it sends the
# response (its default for `yield` dependencies is after). So a client that hears 2xx finds the
# transaction committed, and a commit that fails becomes the response (503 or 500) instead of an
# error logged after a 2xx.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


@lru_cache
def _verifier(public_keys: str) -> signing.Verifier:
    return signing.Verifier.from_setting(public_keys)


def request_target(request: Request) -> str:
    """The path and query of a request exactly as they arrived (what the gateway signed)."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


async def internal_workspace(request: Request, res: Res) -> str:
    """The workspace the gateway authenticated and signed this very request for; 401 otherwise."""
    verifier = _verifier(res.settings.gateway_public_keys)
    token = request.headers.get(signing.HEADER, "")
    body = await request.body()
    try:
        return verifier.verify(token, request.method, request_target(request), body)
    except signing.BadSignature as exc:
        raise Unauthorized(str(exc)) from None


WorkspaceId = Annotated[str, Depends(internal_workspace)]


class UnhandledErrorMiddleware:
    """Answers an exception that no handler took, and logs it once.

    An outage of the database or the bus (`is_dependency_outage`) is a 503 with Retry-After, logged
    as a warning; anything else is a 500 in the `{"error", "detail"}` envelope, logged as an error
    with its traceback. Neither is re-raised, so the server does not log it a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            """Remember whether the response has begun (after that, no other can be sent)."""
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            response = _answer_unhandled(scope, exc, started)
            if response is not None:
                await response(scope, receive, send)


def _answer_unhandled(scope: Scope, exc: Exception, started: bool) -> Response | None:
    """Log an unhandled exception once and build its response (None when one has already begun)."""
    fields = {
        "method": scope.get("method"),
        # The route's template, not the path: a path can carry a key (`/v1/projects/{writeKey}/…`).
        "route": getattr(scope.get("route"), "path", "unmatched"),
        "error_type": type(exc).__name__,
        "response_started": started,
    }
    if is_dependency_outage(exc):
        log.warning("dependency_unavailable", cause=_root_cause(exc), **fields)
        body = {"error": "unavailable", "detail": "a dependency (database or bus) is unavailable; retry"}
        status, headers = 503, {"Retry-After": RETRY_AFTER_SECONDS}
    else:
        log.error("request_failed", exc_info=exc, **fields)
        reference = current_correlation_id() or "unknown"
        body = {
            "error": "internal",
            "detail": f"an unexpected error; the operators can trace it by correlation id {reference}",
        }
        status, headers = 500, {}
    return None if started else JSON(body, status_code=status, headers=headers)


def _root_cause(exc: BaseException) -> str:
    """The type of the innermost error `exc` was raised from (SQLAlchemy's `.orig` included)."""
    seen: set[int] = set()
    current = exc
    while id(current) not in seen:
        seen.add(id(current))
        linked = current.__cause__ or getattr(current, "orig", None)
        if not isinstance(linked, BaseException):
            break
        current = linked
    return type(current).__name__


class ObservabilityMiddleware:
    """Binds a correlation id per request and records Prometheus request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or [])
        # Bytes as the client sent them: a valid id is echoed and carried on; anything else (not
        # ASCII, too long, other characters) is replaced with a fresh one, never decoded and never a 500.
        correlation_id = bind_correlation_id(raw.get(CORRELATION_HEADER.lower().encode()))
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
    """An expected failure, with the status its class carries."""
    assert isinstance(exc, HeraldError)
    return JSON(exc.body(), status_code=exc.status_code, headers=exc.headers)


# Starlette's own details ("Not Found") say less than these.
ROUTING_DETAILS = {
    404: "no route at this path; see /docs",
    405: "this route does not take this method; see the Allow header",
}


async def _http_error(_: Request, exc: Exception) -> Response:
    """Starlette's and FastAPI's HTTP errors (an unknown route, a wrong method) in Herald's envelope."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)  # these may carry no body
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "HTTP error"
    error = re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")
    detail = ROUTING_DETAILS.get(exc.status_code, phrase) if exc.detail == phrase else exc.detail
    return JSON({"error": error, "detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    """What is wrong with the request, by location; never the input itself (it may hold secrets)."""
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


async def _failure_of(check: Check) -> str | None:
    """None when the check passes in time, else what went wrong (type and message, no traceback)."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await check()
    except Exception as exc:
        message = str(exc)
        if not message and isinstance(exc, TimeoutError):
            message = f"no answer within {READINESS_TIMEOUT_SECONDS:g}s"
        return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__
    return None


@health.get("/readyz")
async def readyz(res: Res) -> Response:
    """Readiness: every required check passes (503 if not); a failing informational one only degrades."""
    checks = list(res.readiness.items())
    outcomes = await asyncio.gather(
        *(_failure_of(c.check if isinstance(c, Informational) else c) for _, c in checks)
    )
    failures: dict[str, str] = {}
    degraded: dict[str, dict[str, str]] = {}
    for (name, check), failure in zip(checks, outcomes, strict=True):
        if failure is None:
            continue
        if isinstance(check, Informational):
            degraded[name] = {"error": failure, "impact": check.impact}
        else:
            failures[name] = failure
    if failures:
        body: dict[str, Any] = {"error": "unavailable", "detail": failures}
        if degraded:
            body["degraded"] = degraded
        return JSON(body, status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
    if degraded:
        return JSON({"status": "degraded", "degraded": degraded})
    return JSON({"status": "ready"})


@health.get("/metrics")
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


DOCS_ASSETS_URL = "/docs-assets"


def operation_id(route: APIRoute) -> str:
    """An operation's id in the OpenAPI document: its handler's name (`get_user`, `create_segment`)."""
    return route.name


def create_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    routers: list[APIRouter],
) -> FastAPI:
    """Build a service's FastAPI app with Herald's shared operational surface.

    Its /docs (Swagger UI) and /redoc load their scripts from the app itself, not a CDN, so they work
    offline; each operation's id is its handler's name.
    """
    app = FastAPIOffline(
        title=title,
        lifespan=lifespan,
        default_response_class=JSON,
        generate_unique_id_function=operation_id,
        static_url=DOCS_ASSETS_URL,
        # `/x/` is not `/x`: a redirect would name the address the app was reached at, which behind
        # the gateway is an internal one. It is a 404 in the envelope instead.
        redirect_slashes=False,
    )
    # The last added runs first: observability sees every answer, including the unhandled-error ones.
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(ObservabilityMiddleware)
    app.add_exception_handler(HeraldError, _herald_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(health)
    for router in routers:
        app.include_router(router)
    return app
