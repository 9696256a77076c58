"""Inbox queries; they flush, the edge commits."""

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.inbox.models import InboxMessage


async def store(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Put rendered messages in their users' feeds, once per send id whatever the redeliveries."""
    if rows:
        await session.execute(insert(InboxMessage).on_conflict_do_nothing(index_elements=["send_id"]), rows)


async def feed(
    session: AsyncSession, workspace_id: str, profile_id: str, now: datetime, channels: tuple[str, ...], limit: int
) -> list[InboxMessage]:
    """A user's feed: not expired, not dismissed, an in-app message only until it was seen; pinned first, then newest."""
    rows = await session.scalars(
        select(InboxMessage)
        .where(
            InboxMessage.workspace_id == workspace_id,
            InboxMessage.profile_id == profile_id,
            InboxMessage.channel.in_(channels),
            InboxMessage.expires_at > now,
            InboxMessage.dismissed_at.is_(None),
            (InboxMessage.channel != "in_app") | InboxMessage.viewed_at.is_(None),
        )
        .order_by(InboxMessage.pinned.desc(), InboxMessage.sent_at.desc(), InboxMessage.send_id)
        .limit(limit)
    )
    return list(rows)


async def lock_message(session: AsyncSession, workspace_id: str, profile_id: str, send_id: str) -> InboxMessage | None:
    """One message of this user's, locked until commit; None when it is not theirs (or not this workspace's)."""
    return await session.scalar(
        select(InboxMessage)
        .where(
            InboxMessage.send_id == send_id,
            InboxMessage.workspace_id == workspace_id,
            InboxMessage.profile_id == profile_id,
        )
        .with_for_update()
    )


async def erase_profiles(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> int:
    """Delete these profiles' messages (rendered with their data) for an erasure; returns how many went."""
    if not profile_ids:
        return 0
    result = await session.execute(
        delete(InboxMessage).where(InboxMessage.workspace_id == workspace_id, InboxMessage.profile_id.in_(profile_ids))
    )
    return int(getattr(result, "rowcount", 0) or 0)
