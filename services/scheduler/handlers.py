"""Scheduler inputs: resolved events from PROFILES, and time (due sends claimed from PostgreSQL)."""

import asyncio

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import ResolvedEvent, send_subject
from kernel.db import unit_of_work
from services.scheduler import service

log = structlog.get_logger(__name__)


async def on_resolved_events(
    received: list[bus.Received[ResolvedEvent]],
    sessions: async_sessionmaker[AsyncSession],
    nc: NATS,
    due: asyncio.Event,
) -> None:
    """Match a batch of events against their workspaces' active campaigns, in one transaction.

    Sends due at once (delay 0) wake the timer instead of waiting for its next look.
    """
    async with unit_of_work(sessions) as session:
        due_now = await service.on_events(session, nc, [(m.payload, m.correlation_id) for m in received])
    if due_now:
        due.set()


async def release_due_sends(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, js: JetStreamContext, batch: int
) -> int:
    """One pass: claim due sends, publish the requested ones, commit. Returns how many were claimed.

    The publish happens before the commit on purpose: if the commit fails the rows stay
    `scheduled` and are published again with the same `send_id`, which JetStream and the
    dispatcher de-duplicate; a send can be repeated on the bus but never lost.
    """
    async with unit_of_work(sessions) as session:
        requested = await service.release_due(session, nc, batch)
        if requested:
            await bus.publish_many(
                js,
                [
                    (send_subject(s.workspace_id, s.channel), s.model_dump_json().encode(), s.send_id)
                    for s in requested
                ],
                correlation_ids=[s.trigger.correlation_id if s.trigger else None for s in requested],
            )
    return len(requested)


async def run_timer(
    sessions: async_sessionmaker[AsyncSession],
    nc: NATS,
    js: JetStreamContext,
    stop: asyncio.Event,
    due: asyncio.Event,
    poll_seconds: float,
    batch: int,
) -> None:
    """Release due sends until stopped; no state lives here, so a restart loses nothing.

    It looks every `poll_seconds`, and at once when `due` is set (set `due` after `stop` to end it
    without waiting out the poll).
    """
    while not stop.is_set():
        due.clear()
        try:
            released = await release_due_sends(sessions, nc, js, batch)
        except Exception as exc:
            log.warning("due_sends_failed", error=repr(exc))
            released = 0
        if released < batch:
            try:
                await asyncio.wait_for(due.wait(), timeout=poll_seconds)
            except TimeoutError:
                pass
