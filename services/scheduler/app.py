"""Scheduler app factory and lifespan: the API, the PROFILES and SEGMENTS consumers, the occurrence and due-send timers."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from kernel import bus
from kernel.contracts import MembershipChanged, ResolvedEvent, membership_subject
from kernel.privacy import erasure_consumer, serve_export
from kernel.web import create_app, open_resources
from services.scheduler import handlers, service
from services.scheduler.api import router
from services.scheduler.config import get_settings
from services.scheduler.delivery.api import router as delivery_router
from services.scheduler.privacy import service as privacy
from services.scheduler.results import service as results

SEGMENT_ENTRY_DURABLE = "scheduler-segments"


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
        # Segment entries (MembershipChanged on SEGMENTS) enter users into campaigns with a `segment_entry`.
        entries = bus.ConsumerSpec(
            stream="SEGMENTS",
            durable=SEGMENT_ENTRY_DURABLE,
            subject=membership_subject(">"),
            model=MembershipChanged,
            handler=partial(handlers.on_membership_changes, sessions=res.db, due=due),
            batch=settings.consumer_batch,
            concurrency=settings.consumer_concurrency,
            ack_wait=settings.ack_wait_seconds,
            batched=True,
        )
        timer = asyncio.create_task(
            service.run_timer(res.db, res.nats, res.jetstream, stop, due, settings.poll_seconds, settings.due_batch)
        )
        occurrences = asyncio.create_task(service.run_occurrence_timer(res.db, stop, due, settings.poll_seconds))
        experiments = asyncio.create_task(results.run_experiments(res.db, stop))
        erasures = erasure_consumer("scheduler", privacy.erase, res.db, res.jetstream, settings)
        exports = await serve_export(res.nats, "scheduler", privacy.export, res.db)
        async with bus.consuming(res.jetstream, [consumer, entries, erasures], readiness=res.readiness):
            yield
            stop.set()
            due.set()
            await timer
            await occurrences
            await experiments
            await exports.stop()


def build() -> FastAPI:
    """The scheduler ASGI app."""
    return create_app("Herald scheduler", lifespan, [router, delivery_router])
