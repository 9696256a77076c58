"""Subscription, group and consent queries; they flush, the edge commits. Every query names its workspace."""

from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import SubscriptionEntry
from services.profiles.subscriptions.models import Consent, Subscription, SubscriptionGroup


def _entry(row: Subscription) -> SubscriptionEntry:
    return SubscriptionEntry(state=row.state, at=row.at, source=row.source)  # type: ignore[arg-type]


async def states_of(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> dict[str, dict[str, SubscriptionEntry]]:
    """Each profile's entries by key (channel name or group id)."""
    if not profile_ids:
        return {}
    rows = await session.scalars(
        select(Subscription).where(Subscription.workspace_id == workspace_id, Subscription.profile_id.in_(profile_ids))
    )
    found: dict[str, dict[str, SubscriptionEntry]] = {}
    for row in rows:
        found.setdefault(row.profile_id, {})[row.key] = _entry(row)
    return found


async def save_states(session: AsyncSession, workspace_id: str, rows: list[tuple[str, str, SubscriptionEntry]]) -> None:
    """Write (profile id, key, entry) rows, each replacing the one held (the caller decided it wins)."""
    if not rows:
        return
    statement = pg_insert(Subscription).values([
        {"workspace_id": workspace_id, "profile_id": p, "key": k, "state": e.state, "at": e.at, "source": e.source}
        for p, k, e in rows
    ])
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["workspace_id", "profile_id", "key"],
            set_={"state": statement.excluded.state, "at": statement.excluded.at, "source": statement.excluded.source},
        )
    )


# The newest wins on a merge too (domain.order_key, spelled in SQL).
_RANK = "CASE {t}.state WHEN 'unsubscribed' THEN 2 WHEN 'subscribed' THEN 1 ELSE 0 END"
_MOVE_STATES = text(
    "INSERT INTO profiles.subscriptions AS held (workspace_id, profile_id, key, state, at, source) "
    "SELECT workspace_id, :target, key, state, at, source FROM profiles.subscriptions "
    "WHERE workspace_id = :ws AND profile_id = :source "
    "ON CONFLICT (workspace_id, profile_id, key) DO UPDATE "
    "SET state = EXCLUDED.state, at = EXCLUDED.at, source = EXCLUDED.source "
    f"WHERE (EXCLUDED.at, {_RANK.format(t='EXCLUDED')}, EXCLUDED.source) > (held.at, {_RANK.format(t='held')}, held.source)"
)


async def move_profile(session: AsyncSession, workspace_id: str, source: str, target: str) -> None:
    """A merge: `source`'s states join `target`'s (the newest of each wins) and its consent history becomes
    `target`'s (a record both hold stays once)."""
    params = {"ws": workspace_id, "source": source, "target": target}
    await session.execute(_MOVE_STATES, params)
    await session.execute(
        delete(Subscription).where(Subscription.workspace_id == workspace_id, Subscription.profile_id == source)
    )
    held = Consent.__table__.alias("held")
    same = (
        (held.c.workspace_id == Consent.workspace_id) & (held.c.profile_id == target)
        & (held.c.purpose == Consent.purpose) & (held.c.status == Consent.status)
        & (held.c.policy_version == Consent.policy_version) & (held.c.source == Consent.source) & (held.c.at == Consent.at)
    )
    await session.execute(
        delete(Consent).where(Consent.workspace_id == workspace_id, Consent.profile_id == source, exists().where(same))
    )
    await session.execute(
        update(Consent).where(Consent.workspace_id == workspace_id, Consent.profile_id == source).values(profile_id=target)
    )


async def member_count(session: AsyncSession, workspace_id: str, group_id: str) -> int:
    """How many profiles have a state in this group (in or out: they were members once)."""
    return await session.scalar(
        select(func.count()).select_from(Subscription).where(
            Subscription.workspace_id == workspace_id, Subscription.key == group_id
        )
    ) or 0


async def subscribed_counts(session: AsyncSession, workspace_id: str, group_ids: list[str]) -> dict[str, int]:
    """How many profiles are subscribed to each of these groups now."""
    if not group_ids:
        return {}
    rows = await session.execute(
        select(Subscription.key, func.count())
        .where(Subscription.workspace_id == workspace_id, Subscription.key.in_(group_ids), Subscription.state == "subscribed")
        .group_by(Subscription.key)
    )
    return {key: n for key, n in rows.tuples()}


async def get_group(session: AsyncSession, workspace_id: str, group_id: str, lock: bool = False) -> SubscriptionGroup | None:
    """One of the workspace's subscription groups (locked until commit when asked)."""
    query = select(SubscriptionGroup).where(
        SubscriptionGroup.workspace_id == workspace_id, SubscriptionGroup.group_id == group_id
    )
    return await session.scalar(query.with_for_update() if lock else query)


async def groups_by_id(session: AsyncSession, workspace_id: str, group_ids: list[str]) -> dict[str, SubscriptionGroup]:
    """These of the workspace's groups that exist."""
    if not group_ids:
        return {}
    rows = await session.scalars(
        select(SubscriptionGroup).where(
            SubscriptionGroup.workspace_id == workspace_id, SubscriptionGroup.group_id.in_(group_ids)
        )
    )
    return {g.group_id: g for g in rows}


async def add_group(session: AsyncSession, group: SubscriptionGroup) -> SubscriptionGroup:
    """Store a new group."""
    session.add(group)
    await session.flush()
    await session.refresh(group)
    return group


async def delete_group(session: AsyncSession, group: SubscriptionGroup) -> None:
    """Remove a group that never had members."""
    await session.delete(group)
    await session.flush()


async def page_of_groups(
    session: AsyncSession,
    workspace_id: str,
    channel: str | None,
    archived: str,
    position: tuple[datetime, str] | None,
    limit: int,
) -> list[SubscriptionGroup]:
    """Up to `limit` groups newest first after `position`, filtered by channel and archived (exclude, include, only)."""
    g = SubscriptionGroup
    query = select(g).where(g.workspace_id == workspace_id)
    if channel is not None:
        query = query.where(g.channel == channel)
    if archived == "exclude":
        query = query.where(g.archived_at.is_(None))
    elif archived == "only":
        query = query.where(g.archived_at.is_not(None))
    if position is not None:
        query = query.where(tuple_(g.created_at, g.group_id) < tuple_(*position))
    return list(await session.scalars(query.order_by(g.created_at.desc(), g.group_id.desc()).limit(limit)))


async def consents_of(session: AsyncSession, workspace_id: str, profile_id: str, purpose: str | None = None) -> list[Consent]:
    """A profile's consent records, newest first (one purpose's when named)."""
    query = select(Consent).where(Consent.workspace_id == workspace_id, Consent.profile_id == profile_id)
    if purpose is not None:
        query = query.where(Consent.purpose == purpose)
    return list(await session.scalars(query.order_by(Consent.at.desc(), Consent.seq.desc())))


async def add_consent(session: AsyncSession, record: dict[str, Any]) -> Consent | None:
    """Store a consent record; None when the same record is already held (a replay)."""
    row = await session.scalar(
        pg_insert(Consent).values(**record).on_conflict_do_nothing(constraint="consents_record").returning(Consent)
    )
    return row


async def same_consent(session: AsyncSession, record: dict[str, Any]) -> Consent | None:
    """The stored record equal to this one (what a replay answers with)."""
    return await session.scalar(
        select(Consent).where(*(getattr(Consent, k) == record[k] for k in (
            "workspace_id", "profile_id", "purpose", "status", "policy_version", "source", "at"
        )))
    )

