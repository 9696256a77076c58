"""The scheduler's due-send release on real PostgreSQL and NATS: each send decided on its own."""

import uuid
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.scheduler import domain, service
from services.scheduler.models import Campaign, ScheduledSend

NOW = datetime.now(UTC)


async def campaign(sessions: async_sessionmaker[AsyncSession], workspace_id: str, **fields: object) -> str:
    campaign_id = f"cmp_{uuid.uuid4().hex[:12]}"
    async with unit_of_work(sessions) as s:
        s.add(Campaign(**{
            "id": campaign_id, "workspace_id": workspace_id, "name": "c", "status": "active", "channel": "email",
            "trigger": {"event": "Bought", "where": []}, "audience": None, "delay_seconds": 0, "cancel_on": [],
            "message": {"subject": "Hi", "body": "Thanks"}, **fields,
        }))
    return campaign_id


async def due_send(sessions: async_sessionmaker[AsyncSession], workspace_id: str, campaign_id: str) -> str:
    profile_id = f"p_{uuid.uuid4().hex}"
    send_id = domain.send_id(campaign_id, uuid.uuid4().hex, profile_id)
    async with unit_of_work(sessions) as s:
        s.add(ScheduledSend(
            send_id=send_id, workspace_id=workspace_id, campaign_id=campaign_id, profile_id=profile_id,
            user_id=profile_id, channel="email", status="scheduled",
            trigger={"message_id": "m", "name": "Bought", "properties": {}, "timestamp": NOW.isoformat()},
            triggered_at=NOW, due_at=NOW - timedelta(seconds=1),
        ))
    return send_id


async def test_a_send_that_cannot_be_decided_or_built_never_holds_back_the_others(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    good = await due_send(sessions, workspace_id, await campaign(sessions, workspace_id))
    broken = await due_send(sessions, workspace_id, await campaign(sessions, workspace_id, message={"subject": ""}))
    # Nobody answers audience checks for this segment (the segmenter is down): that send waits.
    unchecked = await due_send(
        sessions, workspace_id, await campaign(sessions, workspace_id, audience={"segment_id": f"seg_{uuid.uuid4().hex}"})
    )
    async with unit_of_work(sessions) as s:
        requested = await service.release_due(s, nc, 1000, workspace_id=workspace_id)  # not other tests' backlog
    assert good in {r.send_id for r in requested}
    assert not {broken, unchecked} & {r.send_id for r in requested}
    async with sessions() as s:
        rows = {r.send_id: r for r in await s.scalars(select(ScheduledSend).where(ScheduledSend.workspace_id == workspace_id))}
    assert rows[good].status == "requested"
    assert rows[broken].status == "cancelled" and "does not fit its channel" in (rows[broken].reason or "")
    assert rows[unchecked].status == "scheduled" and rows[unchecked].due_at > datetime.now(UTC)
