"""Profiles bus handlers: EVENTS in; PROFILES out, after commit."""

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import (
    Event,
    ProfileQuery,
    ProfileSnapshot,
    profile_changed_subject,
    profile_event_subject,
)
from kernel.db import unit_of_work
from services.profiles import service


async def on_event(event: Event, sessions: async_sessionmaker[AsyncSession], js: JetStreamContext) -> None:
    """Apply one event to its profile, commit, then publish the resolved event and the change."""
    async with unit_of_work(sessions) as session:
        applied = await service.apply_event(session, event)
    ws = event.workspace_id
    await bus.publish_many(
        js,
        [
            (
                profile_event_subject(ws),
                applied.resolved.model_dump_json().encode(),
                f"{ws}:event:{event.message_id}",
            ),
            (
                profile_changed_subject(ws),
                applied.changed.model_dump_json().encode(),
                f"{ws}:changed:{event.message_id}",
            ),
        ],
    )


async def on_profile_query(query: ProfileQuery, sessions: async_sessionmaker[AsyncSession]) -> ProfileSnapshot:
    """Answer a request for one profile's traits."""
    async with unit_of_work(sessions) as session:
        return await service.snapshot(session, query.workspace_id, query.profile_id)
