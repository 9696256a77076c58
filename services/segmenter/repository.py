"""Segmenter queries."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.pagination import like_pattern
from services.profiles.views import segment_devices, segment_profiles, segment_subscriptions
from services.segmenter.conditions import NOW_PARAM
from services.segmenter.models import Membership, Segment


async def add_segment(session: AsyncSession, segment: Segment) -> None:
    session.add(segment)
    await session.flush()


async def get_segment(session: AsyncSession, workspace_id: str, segment_id: str) -> Segment | None:
    return await session.scalar(
        select(Segment).where(Segment.workspace_id == workspace_id, Segment.id == segment_id)
    )


async def list_segments(session: AsyncSession, workspace_id: str) -> list[Segment]:
    """The workspace's live segments (archived ones are evaluated for nobody), oldest first."""
    rows = await session.scalars(
        select(Segment)
        .where(Segment.workspace_id == workspace_id, Segment.archived_at.is_(None))
        .order_by(Segment.created_at)
    )
    return list(rows)


@dataclass(frozen=True)
class SegmentQuery:
    """Which segments a page lists: by status, archived or not, a text in the name, a creation range."""

    statuses: tuple[str, ...] = ()  # computing, ready (none: both)
    archived: str = "exclude"  # exclude, include, only
    name_contains: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


async def page_of_segments(
    session: AsyncSession, workspace_id: str, query: SegmentQuery, after: tuple[datetime, str] | None, limit: int
) -> list[Segment]:
    """Up to `limit` segments newest first (by creation, then id), after the position `after`."""
    conditions: list[ColumnElement[bool]] = [Segment.workspace_id == workspace_id]
    if query.archived == "exclude":
        conditions.append(Segment.archived_at.is_(None))
    elif query.archived == "only":
        conditions.append(Segment.archived_at.is_not(None))
    if query.statuses and set(query.statuses) != {"computing", "ready"}:
        conditions.append(Segment.ready_at.is_(None) if "computing" in query.statuses else Segment.ready_at.is_not(None))
    if query.name_contains is not None:
        conditions.append(Segment.name.ilike(like_pattern(query.name_contains), escape="\\"))
    if query.created_after is not None:
        conditions.append(Segment.created_at >= query.created_after)
    if query.created_before is not None:
        conditions.append(Segment.created_at < query.created_before)
    if after is not None:
        conditions.append(tuple_(Segment.created_at, Segment.id) < tuple_(literal(after[0]), literal(after[1])))
    rows = await session.scalars(
        select(Segment).where(*conditions).order_by(Segment.created_at.desc(), Segment.id.desc()).limit(limit)
    )
    return list(rows)


async def forget_members(session: AsyncSession, workspace_id: str, segment_id: str) -> None:
    """Remove every stored membership of a segment (it is archived, or its members are stored again)."""
    await session.execute(
        delete(Membership).where(Membership.workspace_id == workspace_id, Membership.segment_id == segment_id)
    )


def stored_member(workspace_id: str, segment_id: str) -> ColumnElement[bool]:
    """A condition on `segment_profiles`: the profile is stored as a member of the segment."""
    return segment_profiles.c.profile_id.in_(
        select(Membership.profile_id).where(Membership.workspace_id == workspace_id, Membership.segment_id == segment_id)
    )


def _not_unsubscribed(channel: str) -> ColumnElement[bool]:
    """The profile has not unsubscribed from the channel (as the dispatcher's send rule reads it)."""
    p, s = segment_profiles.c, segment_subscriptions.c
    return ~exists(
        select(1).where(
            s.workspace_id == p.workspace_id, s.profile_id == p.profile_id,
            s.channel == channel, s.group_id.is_(None), s.state == "unsubscribed",
        )
    )


def _reachable_by_email() -> ColumnElement[bool]:
    """An `email` trait that looks like an address (name@domain.tld), as the email channel will use it, and email
    not unsubscribed."""
    email = segment_profiles.c.traits["email"]
    return and_(
        func.jsonb_typeof(email) == "string",
        func.btrim(email.astext).op("~")(r"^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$"),
        _not_unsubscribed("email"),
    )


def _reachable_by_push() -> ColumnElement[bool]:
    """A push-enabled device with a token, as the push channel reads them, and push not unsubscribed."""
    p, d = segment_profiles.c, segment_devices.c
    return and_(exists(
        select(1).where(
            d.workspace_id == p.workspace_id, d.profile_id == p.profile_id,
            d.push_enabled.is_(True), d.push_token.is_not(None),
        )
    ), _not_unsubscribed("push"))


async def reach(session: AsyncSession, workspace_id: str, condition: ColumnElement[bool]) -> dict[str, int]:
    """How many profiles match, and how many of them each channel can reach, in one pass."""
    p = segment_profiles.c
    row = (
        await session.execute(
            select(
                func.count().label("size"),
                func.count().filter(_reachable_by_email()).label("email"),
                func.count().filter(_reachable_by_push()).label("push"),
            ).where(p.workspace_id == workspace_id, condition)
        )
    ).one()
    return {"size": int(row.size), "email": int(row.email), "push": int(row.push)}


async def first_matching_users(
    session: AsyncSession, workspace_id: str, condition: ColumnElement[bool], limit: int
) -> list[str]:
    """The first `limit` user ids (in code point order) among the profiles matching the condition; anonymous
    profiles have none to list."""
    p = segment_profiles.c
    rows = await session.scalars(
        select(p.user_id)
        .where(p.workspace_id == workspace_id, p.user_id.is_not(None), condition)
        .order_by(p.user_id.collate("C"))
        .limit(limit)
    )
    return list(rows)


async def profile_of_user(session: AsyncSession, workspace_id: str, user_id: str) -> str | None:
    """The profile id of a user id, from the profiles service's published view."""
    p = segment_profiles.c
    return await session.scalar(
        select(p.profile_id).where(p.workspace_id == workspace_id, p.user_id == user_id).limit(1)
    )


async def entered_at(session: AsyncSession, workspace_id: str, profile_id: str) -> dict[str, datetime]:
    """When the profile was stored as a member of each segment it is stored in."""
    rows = await session.execute(
        select(Membership.segment_id, Membership.entered_at).where(
            Membership.workspace_id == workspace_id, Membership.profile_id == profile_id
        )
    )
    return {segment_id: at for segment_id, at in rows}


async def count_matching(
    session: AsyncSession, workspace_id: str, condition: ColumnElement[bool], now: datetime | None = None
) -> int:
    p = segment_profiles.c
    total = await session.scalar(
        select(func.count()).select_from(segment_profiles).where(p.workspace_id == workspace_id, condition), _at(now)
    )
    return int(total or 0)


async def count_members(session: AsyncSession, workspace_id: str, segment_id: str) -> int:
    """How many profiles are stored as members of the segment."""
    total = await session.scalar(
        select(func.count()).where(Membership.workspace_id == workspace_id, Membership.segment_id == segment_id)
    )
    return int(total or 0)


async def is_member(session: AsyncSession, workspace_id: str, segment_id: str, profile_id: str) -> bool:
    """Whether the profile is stored as a member of the segment."""
    found = await session.scalar(
        select(Membership.profile_id).where(
            Membership.workspace_id == workspace_id,
            Membership.segment_id == segment_id,
            Membership.profile_id == profile_id,
        )
    )
    return found is not None


async def backfill_chunk(
    session: AsyncSession, segment: Segment, condition: ColumnElement[bool], size: int
) -> str | None:
    """Store the members among the next `size` profiles (in id order) after `segment.backfilled_through`.

    Each profile of the chunk is locked first, as a re-evaluation locks it, so a concurrent change
    is applied either before this chunk reads it or after: never a membership from a stale read.
    Returns the chunk's last profile id, or None when no profile is left after this chunk.
    """
    p = segment_profiles.c
    ws = segment.workspace_id
    after = segment.backfilled_through
    chunk = select(p.profile_id).where(p.workspace_id == ws).order_by(p.profile_id).limit(size)
    ids = list(await session.scalars(chunk.where(p.profile_id > after) if after is not None else chunk))
    if not ids:
        return None
    await lock_profiles(session, ws, ids)
    members = select(literal(ws), literal(segment.id), p.profile_id, p.user_id).where(
        p.workspace_id == ws, p.profile_id.in_(ids), condition
    )
    await session.execute(
        pg_insert(Membership)
        .from_select(["workspace_id", "segment_id", "profile_id", "user_id"], members)
        .on_conflict_do_nothing()
    )
    return ids[-1] if len(ids) == size else None


async def claim_computing(session: AsyncSession) -> Segment | None:
    """The oldest segment whose members are still being stored, locked for this transaction (others skip it)."""
    return await session.scalar(
        select(Segment)
        .where(Segment.ready_at.is_(None), Segment.archived_at.is_(None))
        .order_by(Segment.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


def _at(now: datetime | None) -> dict[str, Any]:
    """The parameters that set "now" for compiled conditions (none: the clock when the statement runs)."""
    return {NOW_PARAM: now} if now is not None else {}


async def evaluate_for_profile(
    session: AsyncSession, workspace_id: str, profile_id: str, conditions: dict[str, ColumnElement[bool]],
    now: datetime | None = None,
) -> dict[str, bool] | None:
    """Every segment's verdict for one profile in one query; None if the profile is gone."""
    return (await evaluate_for_profiles(session, workspace_id, [profile_id], conditions, now)).get(profile_id)


async def evaluate_for_profiles(
    session: AsyncSession, workspace_id: str, profile_ids: list[str], conditions: dict[str, ColumnElement[bool]],
    now: datetime | None = None,
) -> dict[str, dict[str, bool]]:
    """Every segment's verdict for each of these profiles, in one query, as of `now` (default: the clock);
    a profile that is gone is left out."""
    if not profile_ids:
        return {}
    p = segment_profiles.c
    labelled = [cond.label(f"s{i}") for i, cond in enumerate(conditions.values())]
    rows = await session.execute(
        select(p.profile_id, *labelled).where(p.workspace_id == workspace_id, p.profile_id.in_(profile_ids)), _at(now)
    )
    return {row[0]: {segment_id: bool(row[i + 1]) for i, segment_id in enumerate(conditions)} for row in rows}


async def memberships_of_many(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> dict[str, set[str]]:
    """The segments each of these profiles is stored in (rows locked for this transaction)."""
    rows = await session.execute(
        select(Membership.profile_id, Membership.segment_id)
        .where(Membership.workspace_id == workspace_id, Membership.profile_id.in_(profile_ids))
        .with_for_update()
    )
    found: dict[str, set[str]] = {}
    for profile_id, segment_id in rows:
        found.setdefault(profile_id, set()).add(segment_id)
    return found


async def enter_many(session: AsyncSession, workspace_id: str, entered: list[tuple[str, str, str | None]]) -> None:
    """Store memberships, given as (profile id, segment id, user id)."""
    if not entered:
        return
    rows: list[dict[str, Any]] = [
        {"workspace_id": workspace_id, "segment_id": s, "profile_id": p, "user_id": u} for p, s, u in entered
    ]
    await session.execute(pg_insert(Membership).values(rows).on_conflict_do_nothing())


async def leave_many(session: AsyncSession, workspace_id: str, exited: list[tuple[str, str]]) -> None:
    """Remove memberships, given as (profile id, segment id)."""
    if not exited:
        return
    await session.execute(
        delete(Membership).where(
            Membership.workspace_id == workspace_id,
            tuple_(Membership.profile_id, Membership.segment_id).in_(exited),
        )
    )


async def lock_profiles(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> None:
    """Serialize work on these profiles until commit (re-evaluations and a new segment's backfill), each
    batch taking its locks in code point order, so that two never deadlock."""
    keys = [f"{workspace_id}\x1f{profile_id}" for profile_id in sorted(profile_ids)]
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(k, 1)) FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, i) ORDER BY i"),
        {"keys": keys},
    )




async def claim_due_sweep(session: AsyncSession, now: datetime) -> Segment | None:
    """The ready segment whose sweep is most overdue, locked for this transaction (other replicas skip it)."""
    return await session.scalar(
        select(Segment)
        .where(Segment.sweep_due_at <= now, Segment.ready_at.is_not(None), Segment.archived_at.is_(None))
        .order_by(Segment.sweep_due_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


async def postpone_sweep(session: AsyncSession, segment_id: str, due_at: datetime) -> None:
    """Make a segment's next sweep (or the rest of this one) due at `due_at`."""
    await session.execute(update(Segment).where(Segment.id == segment_id).values(sweep_due_at=due_at))


async def profiles_after(session: AsyncSession, workspace_id: str, after: str | None, size: int) -> list[str]:
    """The next `size` profile ids of the workspace after `after`, in id order."""
    p = segment_profiles.c
    query = select(p.profile_id).where(p.workspace_id == workspace_id).order_by(p.profile_id).limit(size)
    return list(await session.scalars(query.where(p.profile_id > after) if after is not None else query))


async def matching_among(
    session: AsyncSession, workspace_id: str, profile_ids: list[str], condition: ColumnElement[bool], now: datetime
) -> dict[str, str | None]:
    """Which of these profiles match the condition as of `now`, each with its user id."""
    p = segment_profiles.c
    rows = await session.execute(
        select(p.profile_id, p.user_id).where(p.workspace_id == workspace_id, p.profile_id.in_(profile_ids), condition),
        _at(now),
    )
    return {profile_id: user_id for profile_id, user_id in rows}


async def members_among(
    session: AsyncSession, workspace_id: str, segment_id: str, profile_ids: list[str]
) -> dict[str, str | None]:
    """Which of these profiles are stored members of the segment, each with its user id (rows locked for this transaction)."""
    rows = await session.execute(
        select(Membership.profile_id, Membership.user_id)
        .where(Membership.workspace_id == workspace_id, Membership.segment_id == segment_id,
               Membership.profile_id.in_(profile_ids))
        .with_for_update()
    )
    return {profile_id: user_id for profile_id, user_id in rows}
