"""Dispatcher queries."""

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import SendRequested
from services.dispatcher.models import Delivery


async def lock_deliveries(session: AsyncSession, sends: list[SendRequested]) -> dict[str, Delivery]:
    """The delivery rows of these sends, created if new, locked in send-id order for this transaction."""
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


async def deliveries_for_user(session: AsyncSession, workspace_id: str, user_id: str, limit: int) -> list[Delivery]:
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.workspace_id == workspace_id, Delivery.user_id == user_id)
        .order_by(Delivery.created_at.desc())
        .limit(limit)
    )
    return list(rows)
