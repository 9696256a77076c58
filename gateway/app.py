"""Gateway app factory and lifespan."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway import ratelimit
from gateway.api import router
from gateway.config import get_settings
from gateway.service import STALE_WRITE_KEY_SECONDS, KeyCache
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
        app.state.key_cache = KeyCache(settings.key_cache_seconds)
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


def build() -> FastAPI:
    """The gateway ASGI app."""
    return create_app("Herald gateway", lifespan, [router])
