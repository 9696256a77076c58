"""Gateway queries."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import ApiKey, App, Workspace


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
