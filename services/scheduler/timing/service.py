"""Send-time optimization use cases: place a campaign's new sends at each user's best hour."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.delivery import repository as delivery
from services.scheduler.timing import repository

log = structlog.get_logger(__name__)

WORKSPACE_HOURS_TTL = timedelta(hours=6)  # a workspace's best hours drift slowly
WORKSPACE_SAMPLE = 20_000  # users whose sessions make up the workspace's hours


def uses_intelligent_timing(delivery_rules: dict[str, Any] | None) -> bool:
    """Whether a campaign's `delivery` asks for intelligent timing."""
    return bool((delivery_rules or {}).get("intelligent_timing"))


async def workspace_hours(session: AsyncSession, workspace_id: str, now: datetime) -> list[int]:
    """The workspace's hour-of-week scores, cached for WORKSPACE_HOURS_TTL."""
    cached = await repository.cached_workspace_hours(session, workspace_id, now - WORKSPACE_HOURS_TTL)
    if cached is not None:
        return cached
    return await repository.compute_workspace_hours(session, workspace_id, WORKSPACE_SAMPLE, now)


async def place_new_sends(session: AsyncSession, workspace_id: str, campaigns: Iterable[Any], now: datetime | None = None) -> int:
    """Move the sends decided in this transaction for those of `campaigns` (rows with `id` and `delivery`) that use
    intelligent timing to each user's best hour within the horizon (from when each was due); one statement for
    all of them, however many users. Call it after inserting the sends, in the same transaction."""
    chosen = [c.id for c in campaigns if uses_intelligent_timing(c.delivery)]
    if not chosen:
        return 0
    now = now or datetime.now(UTC)
    rules = await delivery.delivery_settings(session, workspace_id)
    moved = await repository.place_new_sends(
        session, workspace_id, chosen, rules.default_time_zone, await workspace_hours(session, workspace_id, now), now
    )
    log.info("sends_placed_at_best_hours", workspace_id=workspace_id, campaigns=len(chosen), moved=moved)
    return moved


async def place_batch(session: AsyncSession, workspace_ids: Iterable[str], now: datetime | None = None) -> int:
    """After a batch of triggers or segment entries: move the sends it decided for campaigns with intelligent
    timing (their delay, then the best hour within the horizon)."""
    moved = 0
    for workspace_id in sorted(set(workspace_ids)):
        moved += await place_new_sends(session, workspace_id, await repository.timed_campaigns(session, workspace_id), now)
    return moved
