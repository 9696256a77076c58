"""Segmenter app factory and lifespan: the API, the PROFILES consumer, the audience responder, the outbox drain,
the background backfill of new segments and the sweep of segments that read the clock."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

from fastapi import FastAPI

from kernel import bus
from kernel.contracts import AUDIENCE_QUERY_SUBJECT, AudienceQuery, ProfileChanged
from kernel.outbox import Outbox
from kernel.privacy import erasure_consumer, serve_export
from kernel.web import create_app, open_resources
from services.segmenter import handlers, models, service
from services.segmenter.api import router, users_router
from services.segmenter.config import get_settings
from services.segmenter.privacy import service as privacy


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with open_resources("segmenter", settings) as res:
        app.state.resources = res
        outbox = Outbox(models.outbox)
        consumer = bus.ConsumerSpec.for_service(
            "segmenter",
            ProfileChanged,
            partial(handlers.on_profile_changes, sessions=res.db, js=res.jetstream, outbox=outbox),
            settings,
            batched=True,
        )
        responder = await bus.serve_requests(
            res.nats, AUDIENCE_QUERY_SUBJECT, AudienceQuery, partial(handlers.on_audience_query, sessions=res.db)
        )
        erasures = erasure_consumer("segmenter", privacy.erase, res.db, res.jetstream, settings)
        exports = await serve_export(res.nats, "segmenter", privacy.export, res.db)
        stop = asyncio.Event()
        app.state.backfill_wake = wake = asyncio.Event()
        drain = asyncio.create_task(outbox.drain(res.db, res.jetstream, stop), name="segmenter:outbox")
        backfills = asyncio.create_task(
            service.run_backfills(res.db, stop, wake, settings.segment_backfill_chunk, settings.segment_backfill_poll_seconds),
            name="segmenter:backfills",
        )
        every = timedelta(seconds=settings.segment_sweep_seconds)
        sweeps = asyncio.create_task(
            service.run_sweeps(
                res.db, res.jetstream, outbox, stop, every, settings.segment_backfill_chunk,
                min(settings.segment_sweep_seconds, settings.segment_backfill_poll_seconds),
            ),
            name="segmenter:sweeps",
        )
        try:
            async with bus.consuming(res.jetstream, [consumer, erasures], readiness=res.readiness):
                yield
        finally:
            stop.set()
            wake.set()  # the backfill loop stops now, not at its next poll
            await responder.stop()  # answers in flight go out before the connection drains
            await exports.stop()
            await asyncio.gather(drain, backfills, sweeps)


def build() -> FastAPI:
    """The segmenter ASGI app."""
    return create_app("Herald segmenter", lifespan, [router, users_router])
