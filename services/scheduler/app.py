"""Scheduler app factory and lifespan: the API, the PROFILES consumer and the due-send timer."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from kernel import bus
from kernel.contracts import ResolvedEvent
from kernel.web import create_app, open_resources
from services.scheduler import handlers, service
from services.scheduler.api import router
from services.scheduler.config import get_settings
from services.scheduler.results import service as results


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with open_resources("scheduler", settings) as res:
        app.state.resources = res
        stop, due = asyncio.Event(), asyncio.Event()
        consumer = bus.ConsumerSpec.for_service(
            "scheduler",
            ResolvedEvent,
            partial(handlers.on_resolved_events, sessions=res.db, nc=res.nats, due=due),
            settings,
            batched=True,
        )
        timer = asyncio.create_task(
            service.run_timer(res.db, res.nats, res.jetstream, stop, due, settings.poll_seconds, settings.due_batch)
        )
        experiments = asyncio.create_task(results.run_experiments(res.db, stop))
        async with bus.consuming(res.jetstream, [consumer], readiness=res.readiness):
            yield
            stop.set()
            due.set()
            await timer
            await experiments


def build() -> FastAPI:
    """The scheduler ASGI app."""
    return create_app("Herald scheduler", lifespan, [router])
