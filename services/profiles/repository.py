"""Profiles queries; they flush, the edge commits."""

from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.profiles.domain import Identity, KnownProfile
from services.profiles.models import EventCount, Profile, StoredEvent
from services.profiles.models import Identity as IdentityRow


async def lock_identities(session: AsyncSession, workspace_id: str, ids: list[Identity]) -> None:
    """Serialize work on these identities across replicas until the transaction ends."""
    keys = sorted(f"{workspace_id}\x1f{kind}\x1f{value}" for kind, value in ids)
    for key in keys:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


async def stored_event_profile(session: AsyncSession, workspace_id: str, message_id: str) -> str | None:
    return await session.scalar(
        select(StoredEvent.profile_id).where(
            StoredEvent.workspace_id == workspace_id, StoredEvent.message_id == message_id
        )
    )


async def find_identities(
    session: AsyncSession, workspace_id: str, ids: list[Identity]
) -> dict[Identity, KnownProfile]:
    if not ids:
        return {}
    rows = await session.execute(
        select(IdentityRow.kind, IdentityRow.value, Profile.profile_id, Profile.user_id, Profile.created_at)
        .join(
            Profile,
            (Profile.workspace_id == IdentityRow.workspace_id)
            & (Profile.profile_id == IdentityRow.profile_id),
        )
        .where(
            IdentityRow.workspace_id == workspace_id,
            tuple_(IdentityRow.kind, IdentityRow.value).in_(ids),
        )
    )
    return {(r.kind, r.value): KnownProfile(r.profile_id, r.user_id, r.created_at) for r in rows}


async def lock_profiles(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> dict[str, Profile]:
    rows = await session.scalars(
        select(Profile)
        .where(Profile.workspace_id == workspace_id, Profile.profile_id.in_(profile_ids))
        .order_by(Profile.profile_id)
        .with_for_update()
    )
    return {p.profile_id: p for p in rows}


def new_profile(workspace_id: str, profile_id: str, user_id: str | None, at: datetime) -> Profile:
    return Profile(
        workspace_id=workspace_id,
        profile_id=profile_id,
        user_id=user_id,
        traits={},
        trait_times={},
        first_seen=at,
        last_seen=at,
    )


async def link_identities(
    session: AsyncSession, workspace_id: str, profile_id: str, ids: list[Identity]
) -> None:
    if not ids:
        return
    stmt = insert(IdentityRow).values(
        [{"workspace_id": workspace_id, "kind": k, "value": v, "profile_id": profile_id} for k, v in ids]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace_id", "kind", "value"], set_={"profile_id": profile_id}
        )
    )


async def move_profile(session: AsyncSession, workspace_id: str, source: str, target: str) -> None:
    """Re-home everything of `source` on `target` (identities, events, counts), then delete it."""
    await session.execute(
        update(IdentityRow)
        .where(IdentityRow.workspace_id == workspace_id, IdentityRow.profile_id == source)
        .values(profile_id=target)
    )
    await session.execute(
        update(StoredEvent)
        .where(StoredEvent.workspace_id == workspace_id, StoredEvent.profile_id == source)
        .values(profile_id=target)
    )
    await session.execute(
        text(
            "INSERT INTO profiles.event_counts (workspace_id, profile_id, name, day, count) "
            "SELECT workspace_id, :target, name, day, count FROM profiles.event_counts "
            "WHERE workspace_id = :ws AND profile_id = :source "
            "ON CONFLICT (workspace_id, profile_id, name, day) "
            "DO UPDATE SET count = profiles.event_counts.count + EXCLUDED.count"
        ),
        {"ws": workspace_id, "source": source, "target": target},
    )
    await session.execute(
        delete(EventCount).where(EventCount.workspace_id == workspace_id, EventCount.profile_id == source)
    )
    await session.execute(
        delete(Profile).where(Profile.workspace_id == workspace_id, Profile.profile_id == source)
    )


async def insert_event(session: AsyncSession, row: dict[str, Any]) -> None:
    """Store an event; the primary key keeps a messageId to one row whatever happens."""
    await session.execute(insert(StoredEvent).values(row).on_conflict_do_nothing())


async def bump_count(session: AsyncSession, workspace_id: str, profile_id: str, name: str, day: date) -> None:
    stmt = insert(EventCount).values(
        workspace_id=workspace_id, profile_id=profile_id, name=name, day=day, count=1
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace_id", "profile_id", "name", "day"],
            set_={"count": EventCount.count + 1},
        )
    )


async def profile_for_identity(
    session: AsyncSession, workspace_id: str, kind: str, value: str
) -> Profile | None:
    return await session.scalar(
        select(Profile).join(
            IdentityRow,
            (Profile.workspace_id == IdentityRow.workspace_id)
            & (Profile.profile_id == IdentityRow.profile_id),
        ).where(IdentityRow.workspace_id == workspace_id, IdentityRow.kind == kind, IdentityRow.value == value)
    )


async def get_profile(session: AsyncSession, workspace_id: str, profile_id: str) -> Profile | None:
    return await session.get(Profile, (workspace_id, profile_id))


async def identities_of(session: AsyncSession, workspace_id: str, profile_id: str) -> list[Identity]:
    rows = await session.execute(
        select(IdentityRow.kind, IdentityRow.value)
        .where(IdentityRow.workspace_id == workspace_id, IdentityRow.profile_id == profile_id)
        .order_by(IdentityRow.created_at, IdentityRow.value)
    )
    return [(r.kind, r.value) for r in rows]


async def event_totals(session: AsyncSession, workspace_id: str, profile_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(EventCount.name, func.sum(EventCount.count))
        .where(EventCount.workspace_id == workspace_id, EventCount.profile_id == profile_id)
        .group_by(EventCount.name)
    )
    return {name: int(total) for name, total in rows}


async def events_of(
    session: AsyncSession, workspace_id: str, profile_id: str, limit: int
) -> list[StoredEvent]:
    rows = await session.scalars(
        select(StoredEvent)
        .where(StoredEvent.workspace_id == workspace_id, StoredEvent.profile_id == profile_id)
        .order_by(StoredEvent.timestamp.desc(), StoredEvent.message_id)
        .limit(limit)
    )
    return list(rows)
