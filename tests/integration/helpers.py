"""Run one service's app in-process, lifespan and all, against the session's real infrastructure."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from kernel.web import INTERNAL_TOKEN_HEADER, WORKSPACE_HEADER


@asynccontextmanager
async def running(build: Any, get_settings: Any, workspace_id: str, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan with extra HERALD_* settings; yield a client that speaks as the gateway."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    app: FastAPI = build()
    try:
        async with app.router.lifespan_context(app):
            headers = {INTERNAL_TOKEN_HEADER: os.environ["HERALD_INTERNAL_TOKEN"], WORKSPACE_HEADER: workspace_id}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service", headers=headers) as client:
                yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
