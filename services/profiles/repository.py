"""Profiles queries; they flush, the edge commits."""

from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.profiles.activity import Purchases, Sessions
from services.profiles.devices import DeviceState
from services.profiles.domain import Identity, KnownProfile, ProfileState
from services.profiles.models import Device, EventCount, Profile, StoredEvent
from services.profiles.models import Identity as IdentityRow


async def lock_identities(session: AsyncSession, keys: list[tuple[str, str, str]]) -> None:
    """Serialize work on these (workspace, kind, value) identities across replicas until commit.

    One statement takes every lock in hash order, so two batches never wait on each other in a cycle.
    """
    if not keys:
        return
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM "
            "(SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS o"
        ),
        {"keys": [f"{ws}\x1f{kind}\x1f{value}" for ws, kind, value in keys]},
    )


async def stored_event_profiles(
    session: AsyncSession, workspace_id: str, message_ids: list[str]
) -> dict[str, tuple[str, list[str]]]:
    """The profile each of these already-stored events is on, and the profiles it merged away."""
    rows = await session.execute(
        select(StoredEvent.message_id, StoredEvent.profile_id, StoredEvent.merged_profile_ids).where(
            StoredEvent.workspace_id == workspace_id, StoredEvent.message_id.in_(message_ids)
        )
    )
    return {r.message_id: (r.profile_id, list(r.merged_profile_ids or [])) for r in rows}


async def find_identities(
    session: AsyncSession, workspace_id: str, ids: list[Identity]
) -> dict[Identity, KnownProfile]:
    if not ids:
        return {}
    rows = await session.execute(
        select(IdentityRow.kind, IdentityRow.value, Profile.profile_id, Profile.user_id)
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
    return {(r.kind, r.value): KnownProfile(r.profile_id, r.user_id) for r in rows}


PROFILE_COLUMNS = ("profile_id", "user_id", "traits", "trait_times", "first_seen", "last_seen", "attributes", "attribute_times")
SESSION_COLUMNS = ("session_count", "first_session", "last_session", "session_hours", "session_state")
PURCHASE_COLUMNS = ("purchase_count", "revenue", "first_purchase", "last_purchase")
# Written with the whole row: what activity.py keeps (sessions, purchases) and whether the user was seen.
ACTIVITY_COLUMNS = (*SESSION_COLUMNS, *PURCHASE_COLUMNS, "user_seen")
_profiles = cast(Table, Profile.__table__)


async def lock_profiles(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> dict[str, ProfileState]:
    """The profiles, locked until commit (in id order, so concurrent batches never deadlock)."""
    if not profile_ids:
        return {}
    rows = await session.execute(
        select(*(_profiles.c[name] for name in (*PROFILE_COLUMNS, *ACTIVITY_COLUMNS)))
        .where(_profiles.c.workspace_id == workspace_id, _profiles.c.profile_id.in_(profile_ids))
        .order_by(_profiles.c.profile_id)
        .with_for_update()
    )
    return {
        r.profile_id: ProfileState(
            r.profile_id, r.user_id, r.traits, r.trait_times, r.first_seen, r.last_seen, r.attributes, r.attribute_times,
            Sessions(r.session_count, r.first_session, r.last_session, r.session_hours, r.session_state),
            Purchases(r.purchase_count, r.revenue, r.first_purchase, r.last_purchase),
            r.user_seen,
        )
        for r in rows
    }


def _activity_values(p: ProfileState) -> dict[str, Any]:
    """A profile's ACTIVITY_COLUMNS."""
    s, b = p.sessions, p.purchases
    return {"session_count": s.count, "first_session": s.first, "last_session": s.last, "session_hours": s.hours,
            "session_state": s.state, "purchase_count": b.count, "revenue": b.revenue, "first_purchase": b.first,
            "last_purchase": b.last, "user_seen": p.user_seen}


async def insert_profiles(session: AsyncSession, workspace_id: str, profiles: list[ProfileState]) -> None:
    """Store new profiles (Core rows: no ORM unit of work on the event path)."""
    if profiles:
        now = datetime.now(UTC)
        await session.execute(
            _profiles.insert(),
            [
                {"workspace_id": workspace_id, "created_at": now, **{c: getattr(p, c) for c in PROFILE_COLUMNS},
                 **_activity_values(p)}
                for p in profiles
            ],
        )


_SEEN = (
    update(_profiles)
    .where(_profiles.c.workspace_id == bindparam("ws"), _profiles.c.profile_id == bindparam("pid"))
    .values(first_seen=bindparam("first"), last_seen=bindparam("last"))
)
_WHOLE = _SEEN.values(
    user_id=bindparam("uid"), traits=bindparam("traits"), trait_times=bindparam("times"),
    attributes=bindparam("attrs"), attribute_times=bindparam("attr_times"),
    **{name: bindparam(name) for name in ACTIVITY_COLUMNS},
)


async def update_profiles(session: AsyncSession, workspace_id: str, seen: list[ProfileState], whole: list[ProfileState]) -> None:
    """Write changed profiles: `seen` changed only first/last seen, `whole` more (traits, attributes, user id)."""
    if seen:
        await session.execute(
            _SEEN, [{"ws": workspace_id, "pid": p.profile_id, "first": p.first_seen, "last": p.last_seen} for p in seen]
        )
    if whole:
        await session.execute(
            _WHOLE,
            [
                {"ws": workspace_id, "pid": p.profile_id, "first": p.first_seen, "last": p.last_seen, "uid": p.user_id,
                 "traits": p.traits, "times": p.trait_times, "attrs": p.attributes, "attr_times": p.attribute_times,
                 **_activity_values(p)}
                for p in whole
            ],
        )


async def link_identities(session: AsyncSession, workspace_id: str, links: dict[Identity, str]) -> None:
    """Point each identity at its profile, whoever it pointed at before."""
    if not links:
        return
    stmt = insert(IdentityRow).values(
        [{"workspace_id": workspace_id, "kind": k, "value": v, "profile_id": p} for (k, v), p in links.items()]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace_id", "kind", "value"], set_={"profile_id": stmt.excluded.profile_id}
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
        update(Device).where(Device.workspace_id == workspace_id, Device.profile_id == source).values(profile_id=target)
    )
    await session.execute(
        delete(Profile).where(Profile.workspace_id == workspace_id, Profile.profile_id == source)
    )


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Store events; the primary key keeps a messageId to one row whatever happens."""
    if rows:
        await session.execute(insert(StoredEvent).on_conflict_do_nothing(), rows)


async def bump_counts(session: AsyncSession, workspace_id: str, counts: dict[tuple[str, str, date], int]) -> None:
    """Add to the per-day counters, keyed (profile id, event name, day)."""
    if not counts:
        return
    stmt = insert(EventCount)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace_id", "profile_id", "name", "day"],
            set_={"count": EventCount.count + stmt.excluded.count},
        ),
        [
            {"workspace_id": workspace_id, "profile_id": p, "name": name, "day": day, "count": n}
            for (p, name, day), n in sorted(counts.items())
        ],
    )


_devices = cast(Table, Device.__table__)
DEVICE_COLUMNS = ("device_id", "profile_id", "last_seen", "platform", "app", "app_version", "os_version", "model",
                  "locale", "time_zone", "push_token", "dead_token", "times")


async def load_devices(
    session: AsyncSession, workspace_id: str, device_ids: list[str], tokens: list[str]
) -> list[DeviceState]:
    """The devices with these ids, and those holding these tokens (their callers hold the advisory locks)."""
    if not device_ids and not tokens:
        return []
    d = _devices.c
    rows = await session.execute(
        select(*(d[name] for name in DEVICE_COLUMNS)).where(
            d.workspace_id == workspace_id, d.device_id.in_(device_ids) | d.push_token.in_(tokens)
        )
    )
    return [DeviceState(*r) for r in rows]


async def save_devices(session: AsyncSession, workspace_id: str, devices: list[DeviceState]) -> None:
    """Insert or overwrite these devices whole (the batch computed every field under the locks)."""
    if not devices:
        return
    stmt = insert(_devices)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace_id", "device_id"],
            set_={name: stmt.excluded[name] for name in (*DEVICE_COLUMNS[1:], "push_enabled")},
        ),
        [
            {"workspace_id": workspace_id, "push_enabled": d.push_enabled, **{c: getattr(d, c) for c in DEVICE_COLUMNS}}
            for d in sorted(devices, key=lambda d: d.device_id)
        ],
    )


async def devices_of(session: AsyncSession, workspace_id: str, profile_id: str) -> list[Device]:
    """A profile's devices, the most recently seen first."""
    rows = await session.scalars(
        select(Device)
        .where(Device.workspace_id == workspace_id, Device.profile_id == profile_id)
        .order_by(Device.last_seen.desc(), Device.device_id)
    )
    return list(rows)


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
