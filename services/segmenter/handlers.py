"""Segmenter bus handlers: PROFILES changes in; SEGMENTS memberships out, through the outbox."""

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import AudienceAnswer, AudienceQuery, ProfileChanged
from kernel.db import unit_of_work
from kernel.outbox import Outbox
from services.segmenter import service


async def on_profile_changes(
    received: list[bus.Received[ProfileChanged]],
    sessions: async_sessionmaker[AsyncSession],
    js: JetStreamContext,
    outbox: Outbox,
) -> None:
    """Re-evaluate a batch of changed profiles; who entered or exited which segment is staged in the
    same transaction and published after commit (a redelivery would find nothing left to announce)."""
    async with unit_of_work(sessions) as session:
        changes = await service.reevaluate_many(session, [m.payload for m in received])
        staged = await outbox.stage(session, changes)
    await outbox.publish_after_commit(sessions, js, staged)


async def on_audience_query(query: AudienceQuery, sessions: async_sessionmaker[AsyncSession]) -> AudienceAnswer:
    """Answer whether a profile is in a segment now."""
    async with unit_of_work(sessions) as session:
        return await service.check_member(session, query)
