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


async def use_api_key(session: AsyncSession, key_hash: str) -> Any:
    """The live key with this hash (its workspace, id and scopes), recording that it was used; None if none."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        .values(last_used_at=func.now())
        .returning(ApiKey.workspace_id, ApiKey.id, ApiKey.scopes)
    )
    return result.first()


async def add_api_key(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)
    await session.flush()


async def api_keys_of(session: AsyncSession, workspace_id: str) -> Sequence[ApiKey]:
    """The workspace's keys, live and revoked, newest first."""
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    return rows.all()


async def api_key(session: AsyncSession, workspace_id: str, key_id: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.workspace_id == workspace_id, ApiKey.id == key_id))


async def lock_live_api_keys(session: AsyncSession, workspace_id: str) -> Sequence[ApiKey]:
    """The workspace's live keys, locked: revocations of one workspace's keys happen one at a time."""
    rows = await session.scalars(
        select(ApiKey)
        .where(ApiKey.workspace_id == workspace_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
        .with_for_update()
    )
    return rows.all()


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
