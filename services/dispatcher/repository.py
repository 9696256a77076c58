"""Dispatcher queries; they flush, the edge commits."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import SendRequested
from services.dispatcher.models import Delivery


async def lock_deliveries(
    session: AsyncSession, sends: list[SendRequested], give_up_at: dict[str, datetime]
) -> dict[str, Delivery]:
    """The delivery rows of these sends, created (with the request kept) if new, locked in send-id order."""
    await session.execute(
        insert(Delivery).on_conflict_do_nothing(),
        [
            {
                "send_id": send.send_id,
                "workspace_id": send.workspace_id,
                "campaign_id": send.campaign_id,
                "profile_id": send.profile_id,
                "user_id": send.user_id,
                "channel": send.channel,
                "status": "new",
                "attempts": 0,
                "request": send.model_dump(mode="json"),
                "give_up_at": give_up_at[send.send_id],
            }
            for send in sorted(sends, key=lambda s: s.send_id)
        ],
    )
    return await get_deliveries(session, [send.send_id for send in sends])


async def get_deliveries(session: AsyncSession, send_ids: list[str]) -> dict[str, Delivery]:
    """These delivery rows, locked in send-id order (so concurrent batches never deadlock)."""
    rows = await session.scalars(
        select(Delivery).where(Delivery.send_id.in_(send_ids)).order_by(Delivery.send_id).with_for_update()
    )
    return {row.send_id: row for row in rows}


async def claim_due_retries(session: AsyncSession, now: datetime, limit: int) -> list[Delivery]:
    """Retries whose time has come; rows another replica holds are skipped."""
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.status == "retrying", Delivery.next_attempt_at <= now, Delivery.request.is_not(None))
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def claim_interrupted(session: AsyncSession, started_before: datetime, limit: int) -> list[Delivery]:
    """Attempts begun before `started_before` and never recorded: their worker died mid-attempt."""
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.status == "sending", Delivery.updated_at < started_before)
        .order_by(Delivery.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def deliveries_of_sends(session: AsyncSession, workspace_id: str, send_ids: list[str]) -> list[Delivery]:
    if not send_ids:
        return []
    rows = await session.scalars(
        select(Delivery).where(Delivery.workspace_id == workspace_id, Delivery.send_id.in_(send_ids))
    )
    return list(rows)
