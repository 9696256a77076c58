"""A person's segment memberships: removed when they are erased, listed when they are exported."""

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import ErasureRequested, MembershipPage, MembershipRecord, PersonalDataQuery
from services.segmenter.models import Membership, Segment


async def erase(session: AsyncSession, request: ErasureRequested) -> dict[str, int]:
    """Remove the person's memberships (nothing announces their exit: the person is gone)."""
    removed = await session.execute(
        delete(Membership).where(
            Membership.workspace_id == request.workspace_id, Membership.profile_id.in_(request.profile_ids)
        )
    )
    return {"memberships": int(removed.rowcount or 0)}  # type: ignore[attr-defined]


async def export(session: AsyncSession, query: PersonalDataQuery) -> MembershipPage:
    """The segments the person is in (a person is in few: one page, by segment id)."""
    rows = await session.execute(
        select(Membership.segment_id, Segment.name, Membership.entered_at)
        .join(Segment, Segment.id == Membership.segment_id, isouter=True)
        .where(Membership.workspace_id == query.workspace_id, Membership.profile_id.in_(query.profile_ids))
        .where(Membership.segment_id > (query.after or ""))
        .order_by(Membership.segment_id)
        .limit(query.limit + 1)
    )
    records = [MembershipRecord(segment_id=s, segment_name=n, entered_at=at) for s, n, at in rows]
    more = len(records) > query.limit
    records = records[: query.limit]
    return MembershipPage(records=records, after=records[-1].segment_id if more else None)
