"""A person's send decisions: pending ones cancelled and all kept only as anonymous counts when they are
erased; listed when they are exported."""

from sqlalchemy import delete, func, literal, update
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import (
    ERASED_PROFILE_ID,
    ConversionPage,
    ConversionRecord,
    ErasureRequested,
    PersonalDataQuery,
    SendPage,
    SendRecord,
)
from kernel.privacy import person_rows
from services.scheduler.delivery.models import CapLedger
from services.scheduler.models import ScheduledSend
from services.scheduler.results.models import Conversion

ERASED = "erased"  # the reason a send cancelled by an erasure gives


async def erase(session: AsyncSession, request: ErasureRequested) -> dict[str, int]:
    """Cancel the person's pending sends, strip every send and conversion of who it was for and what triggered
    it, and drop their frequency-cap counts.

    The rows stay (campaign, channel, status, variant, times) so that a campaign's counts do not change.
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
    capped = await session.execute(
        delete(CapLedger).where(CapLedger.workspace_id == request.workspace_id, CapLedger.profile_id.in_(request.profile_ids))
    )
    # A conversion still counts for its campaign; its key takes the send's id, unique per person and campaign.
    converted = await session.execute(
        update(Conversion)
        .where(Conversion.workspace_id == request.workspace_id, Conversion.profile_id.in_(request.profile_ids))
        .values(profile_id=literal(f"{ERASED_PROFILE_ID}:") + Conversion.send_id, user_id=None, message_id="")
    )
    return {
        "sends_cancelled": int(cancelled.rowcount or 0),  # type: ignore[attr-defined]
        "sends_anonymized": int(anonymized.rowcount or 0),  # type: ignore[attr-defined]
        "cap_counts": int(capped.rowcount or 0),  # type: ignore[attr-defined]
        "conversions_anonymized": int(converted.rowcount or 0),  # type: ignore[attr-defined]
    }


async def export(session: AsyncSession, query: PersonalDataQuery) -> SendPage | ConversionPage:
    """A page of the person's send decisions, by send id (part `conversions`: the goals they reached)."""
    if query.part == "conversions":
        return await _conversions(session, query)
    records, after = await person_rows(session, ScheduledSend, SendRecord, query)
    return SendPage(records=records, after=after)


async def _conversions(session: AsyncSession, query: PersonalDataQuery) -> ConversionPage:
    """A page of the person's conversions, by send id."""
    conversions, after = await person_rows(session, Conversion, ConversionRecord, query)
    return ConversionPage(records=conversions, after=after)
