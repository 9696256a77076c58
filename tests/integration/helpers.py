"""Run one service's app in-process, lifespan and all, against the session's real infrastructure."""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.profiles.models import Profile
from tests.conftest import as_gateway


@asynccontextmanager
async def running(build: Any, get_settings: Any, workspace_id: str, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan with extra HERALD_* settings; yield a client that speaks as the gateway."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    app: FastAPI = build()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service", auth=as_gateway(workspace_id)) as client:
                yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


async def person(sessions: async_sessionmaker[AsyncSession], workspace_id: str, traits: dict) -> str:
    """A profile with these traits, written straight into the profiles schema; returns its id."""
    profile_id = f"p_{uuid.uuid4().hex}"
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile).values(
            workspace_id=workspace_id, profile_id=profile_id, user_id=profile_id, traits=traits,
            trait_times={}, first_seen=datetime.now(UTC), last_seen=datetime.now(UTC),
        ))
    return profile_id
