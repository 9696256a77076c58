"""Gateway queries."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import ApiKey, App, RateCount, Workspace


async def add_workspace(session: AsyncSession, workspace: Workspace, app: App, key: ApiKey) -> None:
    session.add(workspace)
    await session.flush()
    session.add_all([app, key])
    await session.flush()


async def workspace_for_write_key(session: AsyncSession, write_key: str) -> str | None:
    return await session.scalar(select(App.workspace_id).where(App.write_key == write_key))


async def workspace_for_api_key_hash(session: AsyncSession, key_hash: str) -> str | None:
    return await session.scalar(
        select(ApiKey.workspace_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )


async def add_rate_counts(session: AsyncSession, replica: str, counts: Sequence[tuple[str, str, int, int]]) -> None:
    """Record this replica's admitted requests per (workspace, kind, window); counts are absolute, not deltas."""
    if not counts:
        return
    stmt = insert(RateCount)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace_id", "kind", "window", "replica"], set_={"count": stmt.excluded.count}
        ),
        [{"workspace_id": ws, "kind": kind, "window": window, "replica": replica, "count": n} for ws, kind, window, n in counts],
    )


async def other_rate_counts(session: AsyncSession, replica: str, since_window: int) -> dict[tuple[Any, Any, int], int]:
    """What the other replicas admitted per (workspace, kind, window) since `since_window`."""
    rows = await session.execute(
        select(RateCount.workspace_id, RateCount.kind, RateCount.window, func.sum(RateCount.count))
        .where(RateCount.replica != replica, RateCount.window >= since_window)
        .group_by(RateCount.workspace_id, RateCount.kind, RateCount.window)
    )
    return {(ws, kind, window): int(total) for ws, kind, window, total in rows}


async def prune_rate_counts(session: AsyncSession, before_window: int) -> None:
    """Forget windows no replica looks at any more."""
    await session.execute(delete(RateCount).where(RateCount.window < before_window))


async def workspace_rate_limits(session: AsyncSession) -> dict[str, Any]:
    """Each workspace's own limits, where it has any: {workspace: {"sdk": n, "api": n}}."""
    rows = await session.execute(select(Workspace.id, Workspace.rate_limits).where(Workspace.rate_limits.is_not(None)))
    return {ws: {k: int(v) for k, v in (limits or {}).items() if k in ("sdk", "api")} for ws, limits in rows}


async def set_workspace_rate_limits(session: AsyncSession, workspace_id: str, limits: dict[str, int] | None) -> bool:
    """Set (or, with None, clear) a workspace's own limits; False if there is no such workspace."""
    result = await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(rate_limits=limits))
    return bool(result.rowcount)  # type: ignore[attr-defined]
