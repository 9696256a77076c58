"""Segmenter app factory and lifespan: the API, the PROFILES consumer, the audience responder."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from kernel import bus
from kernel.contracts import AUDIENCE_QUERY_SUBJECT, AudienceQuery, ProfileChanged
from kernel.web import create_app, open_resources
from services.segmenter import handlers
from services.segmenter.api import router
from services.segmenter.config import get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with open_resources("segmenter", settings) as res:
        app.state.resources = res
        consumer = bus.ConsumerSpec.for_service(
            "segmenter",
            ProfileChanged,
            partial(handlers.on_profile_changes, sessions=res.db, js=res.jetstream),
            settings,
            batched=True,
        )
        await bus.serve_requests(
            res.nats, AUDIENCE_QUERY_SUBJECT, AudienceQuery, partial(handlers.on_audience_query, sessions=res.db)
        )
        async with bus.consuming(res.jetstream, [consumer]):
            yield


def build() -> FastAPI:
    """The segmenter ASGI app."""
    return create_app("Herald segmenter", lifespan, [router])
