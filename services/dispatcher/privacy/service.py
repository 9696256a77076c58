"""A person's delivery log: kept only as anonymous counts when they are erased (no user, recipient,
rendered content or provider answer), listed when they are exported."""

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import (
    ERASED_PROFILE_ID,
    FINAL_DELIVERY_STATUSES,
    DeliveryPage,
    DeliveryRecord,
    ErasureRequested,
    InboxPage,
    InboxRecord,
    PersonalDataQuery,
)
from kernel.privacy import person_rows
from services.dispatcher.inbox.models import InboxMessage
from services.dispatcher.models import Delivery, PushAttempt

ERASED = "erased"  # the reason code of a delivery an erasure stopped


async def erase(session: AsyncSession, request: ErasureRequested) -> dict[str, int]:
    """Stop the person's unfinished deliveries, drop their per-device attempts and inbox messages (rendered for
    them), and anonymize every delivery.

    What stays of a delivery is its send id, campaign, channel, status, reason code, attempts and
    times: enough for a campaign's counts, nothing that says who it was for or what it said.
    """
    mine = (Delivery.workspace_id == request.workspace_id) & Delivery.profile_id.in_(request.profile_ids)
    send_ids = list(await session.scalars(select(Delivery.send_id).where(mine)))
    stopped = await session.execute(
        update(Delivery)
        .where(mine, Delivery.status.not_in(FINAL_DELIVERY_STATUSES))
        .values(status="skipped", reason_code=ERASED, next_attempt_at=None, updated_at=func.now())
    )
    attempts = await session.execute(delete(PushAttempt).where(PushAttempt.send_id.in_(send_ids)))
    anonymized = await session.execute(
        update(Delivery)
        .where(mine)
        .values(
            profile_id=ERASED_PROFILE_ID, user_id=None, recipient=None, subject=None, request=None,
            provider_response=None, reason=None, updated_at=func.now(),
        )
    )
    inbox = await session.execute(
        delete(InboxMessage).where(
            InboxMessage.workspace_id == request.workspace_id, InboxMessage.profile_id.in_(request.profile_ids)
        )
    )
    return {
        "inbox_messages": int(inbox.rowcount or 0),  # type: ignore[attr-defined]
        "deliveries_stopped": int(stopped.rowcount or 0),  # type: ignore[attr-defined]
        "push_attempts": int(attempts.rowcount or 0),  # type: ignore[attr-defined]
        "deliveries_anonymized": int(anonymized.rowcount or 0),  # type: ignore[attr-defined]
    }


async def export(session: AsyncSession, query: PersonalDataQuery) -> DeliveryPage | InboxPage:
    """A page of the person's delivery log, by send id (part `inbox`: their in-app messages and cards)."""
    if query.part == "inbox":
        return await _inbox(session, query)
    records, after = await person_rows(session, Delivery, DeliveryRecord, query)
    return DeliveryPage(records=records, after=after)


async def _inbox(session: AsyncSession, query: PersonalDataQuery) -> InboxPage:
    """A page of the person's inbox messages, by send id."""
    messages, after = await person_rows(session, InboxMessage, InboxRecord, query)
    return InboxPage(records=messages, after=after)
