"""A person's send decisions: pending ones cancelled and all kept only as anonymous counts when they are
erased; listed when they are exported."""

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import ERASED_PROFILE_ID, ErasureRequested, PersonalDataQuery, SendPage, SendRecord
from services.scheduler.models import ScheduledSend

ERASED = "erased"  # the reason a send cancelled by an erasure gives


async def erase(session: AsyncSession, request: ErasureRequested) -> dict[str, int]:
    """Cancel the person's pending sends, then strip every send of who it was for and what triggered it.

    The rows stay (campaign, channel, status, times) so that a campaign's counts do not change.
    """
    mine = (ScheduledSend.workspace_id == request.workspace_id) & ScheduledSend.profile_id.in_(request.profile_ids)
    cancelled = await session.execute(
        update(ScheduledSend)
        .where(mine, ScheduledSend.status == "scheduled")
        .values(status="cancelled", reason=ERASED, updated_at=func.now())
    )
    anonymized = await session.execute(
        update(ScheduledSend)
        .where(mine)
        .values(profile_id=ERASED_PROFILE_ID, user_id=None, trigger={}, updated_at=func.now())
    )
    return {
        "sends_cancelled": int(cancelled.rowcount or 0),  # type: ignore[attr-defined]
        "sends_anonymized": int(anonymized.rowcount or 0),  # type: ignore[attr-defined]
    }


async def export(session: AsyncSession, query: PersonalDataQuery) -> SendPage:
    """A page of the person's send decisions, by send id."""
    rows = await session.scalars(
        select(ScheduledSend)
        .where(ScheduledSend.workspace_id == query.workspace_id, ScheduledSend.profile_id.in_(query.profile_ids))
        .where(ScheduledSend.send_id > (query.after or ""))
        .order_by(ScheduledSend.send_id)
        .limit(query.limit + 1)
    )
    sends = list(rows)
    more = len(sends) > query.limit
    records = [SendRecord.model_validate(s, from_attributes=True) for s in sends[: query.limit]]
    return SendPage(records=records, after=records[-1].send_id if more else None)
