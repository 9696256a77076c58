"""Scheduler bus handlers: resolved events from PROFILES, matched against active campaigns; segment entries from
SEGMENTS, entering users into campaigns entered that way."""

import asyncio

from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import MembershipChanged, ResolvedEvent
from kernel.db import unit_of_work
from services.scheduler import service
from services.scheduler.results import service as results
from services.scheduler.timing import service as timing


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
        await results.record(session, [m.payload for m in received])  # engagement and conversions, counted once
        await timing.place_batch(session, [m.payload.workspace_id for m in received])  # intelligent timing
    if due_now:
        due.set()


async def on_membership_changes(
    received: list[bus.Received[MembershipChanged]],
    sessions: async_sessionmaker[AsyncSession],
    due: asyncio.Event,
) -> None:
    """Enter the users of a batch of segment entries into the campaigns entered by them, in one transaction."""
    async with unit_of_work(sessions) as session:
        due_now = await service.on_membership_changes(session, [m.payload for m in received])
        await timing.place_batch(session, [m.payload.workspace_id for m in received])  # intelligent timing
    if due_now:
        due.set()
