"""Segmenter bus handlers: PROFILES changes in; SEGMENTS memberships out, after commit."""

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import AudienceAnswer, AudienceQuery, ProfileChanged, membership_subject
from kernel.db import unit_of_work
from services.segmenter import service


async def on_profile_changes(
    received: list[bus.Received[ProfileChanged]], sessions: async_sessionmaker[AsyncSession], js: JetStreamContext
) -> None:
    """Re-evaluate a batch of changed profiles; after commit, publish who entered or exited which segment."""
    async with unit_of_work(sessions) as session:
        changes = await service.reevaluate_many(session, [m.payload for m in received])
    if changes:
        await bus.publish_many(
            js,
            [
                (
                    membership_subject(c.workspace_id),
                    c.model_dump_json().encode(),
                    f"{c.workspace_id}:{c.segment_id}:{c.profile_id}:{c.change}:{c.cause_message_id}",
                )
                for c in changes
            ],
            timeout=30.0,
        )


async def on_audience_query(query: AudienceQuery, sessions: async_sessionmaker[AsyncSession]) -> AudienceAnswer:
    """Answer whether a profile is in a segment now."""
    async with unit_of_work(sessions) as session:
        return await service.check_member(session, query)
