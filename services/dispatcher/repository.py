"""Dispatcher queries."""

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import SendRequested
from services.dispatcher.models import Delivery


async def lock_delivery(session: AsyncSession, send: SendRequested) -> Delivery:
    """The delivery row of this send, created if new, locked for this transaction."""
    await session.execute(
        insert(Delivery)
        .values(
            send_id=send.send_id,
            workspace_id=send.workspace_id,
            campaign_id=send.campaign_id,
            profile_id=send.profile_id,
            user_id=send.user_id,
            channel=send.channel,
            status="new",
            attempts=0,
        )
        .on_conflict_do_nothing()
    )
    row = await session.scalar(
        select(Delivery).where(Delivery.send_id == send.send_id).with_for_update()
    )
    assert row is not None
    return row


async def get_delivery(session: AsyncSession, send_id: str) -> Delivery | None:
    return await session.get(Delivery, send_id, with_for_update=True)


async def deliveries_for_user(session: AsyncSession, workspace_id: str, user_id: str, limit: int) -> list[Delivery]:
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.workspace_id == workspace_id, Delivery.user_id == user_id)
        .order_by(Delivery.created_at.desc())
        .limit(limit)
    )
    return list(rows)
