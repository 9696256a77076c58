"""Gateway app factory and lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway.api import router
from gateway.config import get_settings
from gateway.service import KeyCache
from kernel.web import create_app, open_resources


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with open_resources("gateway", settings) as res:
        res.http = httpx.AsyncClient(
            timeout=settings.upstream_timeout_seconds,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )
        app.state.resources = res
        app.state.key_cache = KeyCache(settings.key_cache_seconds)
        yield


def build() -> FastAPI:
    """The gateway ASGI app."""
    return create_app("Herald gateway", lifespan, [router])
