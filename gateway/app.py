"""Gateway app factory and lifespan."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import openapi, ratelimit
from gateway.api import router
from gateway.braze import router as braze_router
from gateway.config import get_settings
from gateway.inbound import router as inbound_router
from gateway.inbox import router as inbox_router
from gateway.links import router as links_router
from gateway.service import STALE_WRITE_KEY_SECONDS, ApiGrant, KeyCache
from kernel import http, signing
from kernel.web import create_app, open_resources


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database pool and the HTTP client to the services; PostgreSQL only degrades readiness."""
    settings = get_settings()
    async with open_resources("gateway", settings) as res:
        # Failing readiness on PostgreSQL would take every gateway pod out of rotation at once and
        # turn a database outage into an ingestion outage, while known write keys can still be served.
        res.make_informational(
            "postgresql",
            impact=(
                f"SDK calls with a write key used in the last {STALE_WRITE_KEY_SECONDS / 60:.0f} minutes are"
                " still accepted from the key cache; other write keys and the /api/v1 API answer 503"
            ),
        )
        res.http = httpx.AsyncClient(
            timeout=settings.upstream_timeout_seconds,
            transport=http.sharded(httpx.Limits(max_connections=200, max_keepalive_connections=100)),
        )
        app.state.resources = res
        app.state.key_cache = KeyCache[str](settings.key_cache_seconds)
        app.state.api_key_cache = KeyCache[ApiGrant](settings.api_key_cache_seconds)
        app.state.signer = signing.Signer(settings.gateway_signing_key.get_secret_value())
        app.state.limiter = limiter = ratelimit.RateLimiter({"sdk": settings.sdk_rate_limit, "api": settings.api_rate_limit})
        stop = asyncio.Event()
        replica = f"gw-{secrets.token_hex(6)}"  # this process's counts, apart from the other replicas'
        sync = asyncio.create_task(
            ratelimit.run_sync(res.db, limiter, replica, stop, settings.rate_limit_sync_seconds), name="gateway:rate-limits"
        )
        try:
            yield
        finally:
            stop.set()
            await sync


class SdkCors:
    """CORS on the SDK surface (`/v1/...`): browser SDKs call it from any site with a public write key.

    Preflights are answered for any origin, and every answer, errors included, carries
    `Access-Control-Allow-Origin: *` (no credentials: the write key is in the body or in Basic auth).
    The internal API under `/api/v1` is for servers and tools and gets none of it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["Retry-After"],
            max_age=86400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def build() -> FastAPI:
    """The gateway ASGI app."""
    app = create_app("Herald gateway", lifespan, [router, inbound_router, inbox_router, links_router, braze_router])
    app.add_middleware(SdkCors)  # outermost: even an unhandled error's answer is readable by the page
    openapi.serve_merged(app)
    return app
