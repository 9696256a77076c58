"""Queries of the user's rights: tombstones, erasure jobs, and a person's rows in every profiles table."""

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Text, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.profiles.domain import Identity
from services.profiles.models import SCHEMA, StoredEvent
from services.profiles.models import Identity as IdentityRow
from services.profiles.privacy.models import Erasure, Tombstone

EXPORT_CHUNK = 500  # rows a server-side cursor fetches at a time


def _texts(values: list[str]) -> Any:
    return bindparam(None, values, type_=ARRAY(Text))


async def tombstoned(session: AsyncSession, workspace_id: str, digests: list[str]) -> dict[str, datetime]:
    """Of these identity digests, those of erased people, with when each was erased (one index lookup per batch)."""
    if not digests:
        return {}
    rows = await session.execute(
        select(Tombstone.digest, Tombstone.erased_at).where(
            Tombstone.workspace_id == workspace_id, Tombstone.digest == func.any(_texts(digests))
        )
    )
    return dict(rows.tuples().all())


async def any_tombstone(session: AsyncSession, workspace_id: str) -> bool:
    """Whether anyone in the workspace was ever erased (one index probe: most batches need look no further)."""
    return bool(await session.scalar(select(select(Tombstone.digest).where(Tombstone.workspace_id == workspace_id).exists())))


async def bury(session: AsyncSession, workspace_id: str, digests: list[str], at: datetime, erasure_id: str) -> None:
    """Keep these digests as erased at `at` (an identity erased again keeps the later time)."""
    if not digests:
        return
    stmt = insert(Tombstone).values(
        [{"workspace_id": workspace_id, "digest": d, "erased_at": at, "erasure_id": erasure_id} for d in sorted(set(digests))]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Tombstone.workspace_id, Tombstone.digest],
            set_={"erased_at": func.greatest(Tombstone.erased_at, stmt.excluded.erased_at),
                  "erasure_id": stmt.excluded.erasure_id},
        )
    )


async def identities_of(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> list[IdentityRow]:
    """Every user id, alias and anonymous id of these profiles, oldest first."""
    rows = await session.scalars(
        select(IdentityRow)
        .where(IdentityRow.workspace_id == workspace_id, IdentityRow.profile_id == func.any(_texts(profile_ids)))
        .order_by(IdentityRow.created_at, IdentityRow.kind, IdentityRow.value)
    )
    return list(rows)


def keys_of(identities: list[IdentityRow]) -> list[Identity]:
    return sorted({(i.kind, i.value) for i in identities})


async def merged_into(session: AsyncSession, workspace_id: str, profile_id: str) -> list[str]:
    """The profiles that were merged into this one (each merge is recorded on the event that caused it)."""
    rows = await session.scalars(
        select(func.jsonb_array_elements_text(StoredEvent.merged_profile_ids)).where(
            StoredEvent.workspace_id == workspace_id, StoredEvent.profile_id == profile_id,
            StoredEvent.merged_profile_ids.is_not(None),
        )
    )
    return sorted(set(rows))


async def person_tables(session: AsyncSession) -> list[str]:
    """Every table of the profiles schema with a person's rows in it (keyed by workspace and profile id),
    `profiles` itself last: what an erasure deletes, whichever part of the service added the table."""
    rows = await session.scalars(
        text(
            "SELECT c.table_name FROM information_schema.columns AS c "
            "JOIN information_schema.tables AS t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = :schema AND t.table_type = 'BASE TABLE' AND c.column_name IN ('workspace_id', 'profile_id') "
            "GROUP BY c.table_name HAVING count(*) = 2 ORDER BY c.table_name = 'profiles', c.table_name"
        ),
        {"schema": SCHEMA},
    )
    return list(rows)


def _table(name: str) -> str:
    return f'{SCHEMA}."{name}"'


async def delete_rows(session: AsyncSession, table: str, workspace_id: str, profile_ids: list[str]) -> int:
    """Delete these profiles' rows from one table of the schema; how many."""
    result = await session.execute(
        text(f"DELETE FROM {_table(table)} WHERE workspace_id = :ws AND profile_id = ANY(:ids)"),
        {"ws": workspace_id, "ids": profile_ids},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def stream_rows(
    session: AsyncSession, table: str, workspace_id: str, profile_ids: list[str], order_by: str = "",
    columns: str = "to_jsonb(r) - 'workspace_id'",
) -> AsyncIterator[list[Any]]:
    """These profiles' rows of one table as JSON documents, a chunk at a time through a server-side cursor."""
    order = f" ORDER BY {order_by}" if order_by else ""
    result = await session.stream(
        text(f"SELECT {columns} FROM {_table(table)} AS r WHERE workspace_id = :ws AND profile_id = ANY(:ids){order}"),
        {"ws": workspace_id, "ids": profile_ids},
    )
    async for chunk in result.scalars().partitions(EXPORT_CHUNK):
        yield list(chunk)


async def add_erasure(session: AsyncSession, workspace_id: str, erasure_id: str, profile_ids: list[str]) -> Erasure:
    erasure = Erasure(workspace_id=workspace_id, erasure_id=erasure_id, profile_ids=profile_ids, progress={})
    session.add(erasure)
    await session.flush()
    await session.refresh(erasure)
    return erasure


async def get_erasure(session: AsyncSession, workspace_id: str, erasure_id: str, lock: bool = False) -> Erasure | None:
    query = select(Erasure).where(Erasure.workspace_id == workspace_id, Erasure.erasure_id == erasure_id)
    return await session.scalar(query.with_for_update() if lock else query)
