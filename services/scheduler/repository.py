"""Scheduler queries."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, and_, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.pagination import like_pattern
from services.profiles.views import segment_events
from services.scheduler.models import Campaign, ScheduledSend
from services.segmenter.conditions import compile_comparison


async def add_campaign(session: AsyncSession, campaign: Campaign) -> None:
    session.add(campaign)
    await session.flush()


async def get_campaign(session: AsyncSession, workspace_id: str, campaign_id: str, lock: bool = False) -> Campaign | None:
    query = select(Campaign).where(Campaign.workspace_id == workspace_id, Campaign.id == campaign_id)
    return await session.scalar(query.with_for_update() if lock else query)


@dataclass(frozen=True)
class CampaignQuery:
    """Which campaigns a page lists: by status (none: all but archived), channel, a text in the name, a creation range."""

    statuses: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    name_contains: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


async def page_of_campaigns(
    session: AsyncSession, workspace_id: str, query: CampaignQuery, after: tuple[datetime, str] | None, limit: int
) -> list[Campaign]:
    """Up to `limit` campaigns newest first (by creation, then id), after the position `after`."""
    conditions: list[ColumnElement[bool]] = [Campaign.workspace_id == workspace_id]
    if query.statuses:
        conditions.append(Campaign.status.in_(query.statuses))
    else:
        conditions.append(Campaign.status != "archived")
    if query.channels:
        conditions.append(Campaign.channel.in_(query.channels))
    if query.name_contains is not None:
        conditions.append(Campaign.name.ilike(like_pattern(query.name_contains), escape="\\"))
    if query.created_after is not None:
        conditions.append(Campaign.created_at >= query.created_after)
    if query.created_before is not None:
        conditions.append(Campaign.created_at < query.created_before)
    if after is not None:
        conditions.append(tuple_(Campaign.created_at, Campaign.id) < tuple_(literal(after[0]), literal(after[1])))
    rows = await session.scalars(
        select(Campaign).where(*conditions).order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit)
    )
    return list(rows)


async def cancel_all_pending(session: AsyncSession, workspace_id: str, campaign_id: str, reason: str) -> int:
    """Cancel every send of the campaign still waiting to go out."""
    result = await session.execute(
        update(ScheduledSend)
        .where(
            ScheduledSend.workspace_id == workspace_id,
            ScheduledSend.campaign_id == campaign_id,
            ScheduledSend.status == "scheduled",
        )
        .values(status="cancelled", reason=reason, updated_at=func.now())
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def active_campaigns(session: AsyncSession, workspace_id: str) -> list[Campaign]:
    rows = await session.scalars(
        select(Campaign).where(Campaign.workspace_id == workspace_id, Campaign.status == "active")
    )
    return list(rows)


async def record_send(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Insert a send decision once (its id is deterministic); False if it already existed."""
    result = await session.execute(
        insert(ScheduledSend).values(row).on_conflict_do_nothing().returning(ScheduledSend.send_id)
    )
    return result.first() is not None


async def cancel_pending(
    session: AsyncSession, workspace_id: str, campaign_id: str, profile_id: str, performed_at: datetime, reason: str
) -> int:
    """Cancel this profile's pending sends of a campaign that were triggered before the exception."""
    result = await session.execute(
        update(ScheduledSend)
        .where(
            ScheduledSend.workspace_id == workspace_id,
            ScheduledSend.campaign_id == campaign_id,
            ScheduledSend.profile_id == profile_id,
            ScheduledSend.status == "scheduled",
            ScheduledSend.triggered_at <= performed_at,
        )
        .values(status="cancelled", reason=reason, updated_at=func.now())
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def claim_due(session: AsyncSession, limit: int) -> list[tuple[ScheduledSend, Campaign]]:
    """Claim due sends of active campaigns; other replicas skip the rows this one locked."""
    rows = await session.execute(
        select(ScheduledSend, Campaign)
        .join(Campaign, Campaign.id == ScheduledSend.campaign_id)
        .where(
            ScheduledSend.status == "scheduled",
            ScheduledSend.due_at <= func.now(),
            Campaign.status == "active",
        )
        .order_by(ScheduledSend.due_at)
        .limit(limit)
        .with_for_update(of=ScheduledSend, skip_locked=True)
    )
    return [(r[0], r[1]) for r in rows]


async def exception_performed(
    session: AsyncSession, send: ScheduledSend, exceptions: list[str | dict[str, Any]], until: datetime
) -> str | None:
    """The first exception event the profile performed between the trigger and `until`, if any.

    Reads the profiles service's published `segment_events` view, so an exception that was
    processed before its trigger (out-of-order delivery) still cancels the send. An exception with
    `where` conditions counts only an event whose properties satisfy them, compiled by the segments'
    one SQL reading of the grammar (relative dates as of `until`).
    """
    if not exceptions:
        return None
    e = segment_events.c
    now = literal(until, DateTime(timezone=True))
    plain = [x for x in exceptions if isinstance(x, str)]
    which: list[ColumnElement[bool]] = [e.name.in_(plain)] if plain else []
    for exception in exceptions:
        if isinstance(exception, dict):
            conditions = [
                compile_comparison(e.properties, w["property"], w["op"], w.get("value"), now)
                for w in exception.get("where", [])
            ]
            which.append(and_(e.name == exception["event"], *conditions))
    return await session.scalar(
        select(e.name)
        .where(
            e.workspace_id == send.workspace_id,
            e.profile_id == send.profile_id,
            or_(*which),
            and_(e.timestamp >= send.triggered_at, e.timestamp <= until),
        )
        .limit(1)
    )


async def stats(session: AsyncSession, workspace_id: str, campaign_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(ScheduledSend.status, func.count())
        .where(ScheduledSend.workspace_id == workspace_id, ScheduledSend.campaign_id == campaign_id)
        .group_by(ScheduledSend.status)
    )
    return {status: int(n) for status, n in rows}


async def sends_for_user(session: AsyncSession, workspace_id: str, user_id: str, limit: int) -> list[tuple[ScheduledSend, str | None]]:
    rows = await session.execute(
        select(ScheduledSend, Campaign.name)
        .outerjoin(Campaign, Campaign.id == ScheduledSend.campaign_id)
        .where(ScheduledSend.workspace_id == workspace_id, ScheduledSend.user_id == user_id)
        .order_by(ScheduledSend.created_at.desc())
        .limit(limit)
    )
    return [(r[0], r[1]) for r in rows]


