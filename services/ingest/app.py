"""Ingest app factory and lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kernel.web import create_app, open_resources
from services.ingest.api import router
from services.ingest.braze.api import router as braze_router
from services.ingest.config import get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with open_resources("ingest", get_settings()) as res:
        app.state.resources = res
        yield


def build() -> FastAPI:
    """The ingest ASGI app."""
    return create_app("Herald ingest", lifespan, [router, braze_router])
