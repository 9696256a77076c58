"""Profiles queries; they flush, the edge commits."""

import json
from datetime import date
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import Any, Literal, cast

import orjson
from sqlalchemy import (
    ARRAY,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.ext.asyncio import AsyncSession

from services.profiles.activity import Purchases, Sessions
from services.profiles.devices import DeviceState
from services.profiles.domain import Identity, KnownProfile, ProfileState
from services.profiles.models import Device, EventCount, Profile, StoredEvent
from services.profiles.models import Identity as IdentityRow


def _texts(values: list[str]) -> Any:
    """A list as one array parameter (`= ANY(:p)`): IN (...) would render, cast and bind each value anew per batch."""
    return bindparam(None, values, type_=ARRAY(Text))


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
            StoredEvent.workspace_id == workspace_id, StoredEvent.message_id == any_(_texts(message_ids))
        )
    )
    return {message_id: (profile_id, list(merged or [])) for message_id, profile_id, merged in rows}


async def find_identities(
    session: AsyncSession, workspace_id: str, ids: list[Identity]
) -> dict[Identity, KnownProfile]:
    if not ids:
        return {}
    kinds, values = zip(*ids, strict=True)
    rows = await session.execute(_FIND_IDENTITIES, {"ws": workspace_id, "kinds": list(kinds), "values": list(values)})
    return {(kind, value): KnownProfile(profile_id, user_id) for kind, value, profile_id, user_id in rows}


# The identities as two arrays (a tuple IN rendered, cast and bound every pair anew per batch).
_FIND_IDENTITIES = text(
    "SELECT i.kind, i.value, p.profile_id, p.user_id "
    "FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[])) AS k(kind, value) "
    "JOIN profiles.identities AS i ON i.workspace_id = CAST(:ws AS text) AND i.kind = k.kind AND i.value = k.value "
    "JOIN profiles.profiles AS p ON p.workspace_id = i.workspace_id AND p.profile_id = i.profile_id"
)


def _dumps(value: Any) -> str | None:
    """JSON text for a jsonb column, by orjson (the standard library's json cost about 15 µs per event)."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a number orjson cannot write (rows stored before ingest's limits): the slow way
        return json.dumps(value)


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _unnest(columns: tuple[str, ...], types: dict[str, str]) -> str:
    """`unnest(...)` over one array parameter per column (jsonb travels as text, by orjson).

    The event path writes a batch's rows this way, in one statement with one parameter set: SQLAlchemy's
    executemany builds and processes a parameter set per row (with a phone's context on every event, about
    a quarter of the profiles service's CPU went there, measured), where asyncpg encodes each array in C.
    """
    arrays = [
        f'CAST(CAST(:{c} AS text[]) AS jsonb[])' if types[c] == "jsonb" else f'CAST(:{c} AS {types[c]}[])' for c in columns
    ]
    return f"unnest({', '.join(arrays)}) AS u({', '.join(_quoted(columns))})"


def _quoted(columns: tuple[str, ...]) -> list[str]:
    return [f'"{c}"' for c in columns]


def _arrays(rows: list[tuple[Any, ...]], columns: tuple[str, ...], types: dict[str, str]) -> dict[str, list[Any]]:
    """Rows (tuples in `columns` order) as one list per column, jsonb ones as JSON text."""
    out: dict[str, list[Any]] = {}
    for c, values in zip(columns, zip(*rows, strict=True), strict=True):
        out[c] = [_dumps(v) for v in values] if types[c] == "jsonb" else list(values)
    return out


PROFILE_COLUMNS = ("profile_id", "user_id", "traits", "trait_times", "first_seen", "last_seen", "attributes", "attribute_times",
                   "trait_ops")
SESSION_COLUMNS = ("session_count", "first_session", "last_session", "session_hours", "session_state")
PURCHASE_COLUMNS = ("purchase_count", "revenue", "first_purchase", "last_purchase")
# What activity.py keeps (sessions, purchases) and whether the user was seen.
ACTIVITY_COLUMNS = (*SESSION_COLUMNS, *PURCHASE_COLUMNS, "user_seen")
PROFILE_TYPES = {
    "profile_id": "text", "user_id": "text", "traits": "jsonb", "trait_times": "jsonb", "first_seen": "timestamptz",
    "last_seen": "timestamptz", "attributes": "jsonb", "attribute_times": "jsonb", "session_count": "integer",
    "first_session": "timestamptz", "last_session": "timestamptz", "session_hours": "jsonb", "session_state": "jsonb",
    "purchase_count": "integer", "revenue": "numeric", "first_purchase": "timestamptz", "last_purchase": "timestamptz",
    "user_seen": "boolean", "trait_ops": "jsonb",
}
_profiles = cast(Table, Profile.__table__)

# A changed profile writes first/last seen and the groups of columns that changed with them: most events with a
# phone's context change the attributes' times alone, and need not rewrite traits, sessions and purchases.
Group = Literal["traits", "attributes", "activity"]
GROUPS: dict[Group, tuple[str, ...]] = {
    "traits": ("user_id", "traits", "trait_times", "trait_ops"),
    "attributes": ("attributes", "attribute_times"),
    "activity": ACTIVITY_COLUMNS,
}


async def lock_profiles(session: AsyncSession, workspace_id: str, profile_ids: list[str]) -> dict[str, ProfileState]:
    """The profiles, locked until commit (in id order, so concurrent batches never deadlock)."""
    if not profile_ids:
        return {}
    c = _profiles.c
    rows = await session.execute(
        select(*(cast_(c[n], Text) if PROFILE_TYPES[n] == "jsonb" else c[n] for n in (*PROFILE_COLUMNS, *ACTIVITY_COLUMNS)))
        .where(c.workspace_id == workspace_id, c.profile_id == any_(_texts(profile_ids)))
        .order_by(c.profile_id)
        .with_for_update()
    )
    # Rows unpacked by position (reading twenty columns by name cost more than decoding them); jsonb read as
    # text and decoded by orjson.
    return {
        pid: ProfileState(
            pid, uid, orjson.loads(traits), orjson.loads(trait_times), first, last, orjson.loads(attrs),
            orjson.loads(attr_times), Sessions(s_count, s_first, s_last, _loads(s_hours), _loads(s_state)),
            Purchases(p_count, revenue, p_first, p_last), user_seen, orjson.loads(trait_ops),
        )
        for (pid, uid, traits, trait_times, first, last, attrs, attr_times, trait_ops, s_count, s_first, s_last, s_hours, s_state,
             p_count, revenue, p_first, p_last, user_seen) in rows
    }


# Where each column's value is on a ProfileState.
_READ = {
    **{name: attrgetter(name) for name in (*PROFILE_COLUMNS, "user_seen")},
    **{name: attrgetter(f"sessions.{field}") for name, field in zip(SESSION_COLUMNS, ("count", "first", "last", "hours", "state"), strict=True)},
    **{name: attrgetter(f"purchases.{field}") for name, field in zip(PURCHASE_COLUMNS, ("count", "revenue", "first", "last"), strict=True)},
}
_ALL = (*PROFILE_COLUMNS, *ACTIVITY_COLUMNS)
_INSERT = text(
    f"INSERT INTO profiles.profiles (workspace_id, {', '.join(_quoted(_ALL))}) "
    f"SELECT CAST(:ws AS text), u.* FROM {_unnest(_ALL, PROFILE_TYPES)}"
)


def _rows(profiles: list[ProfileState], names: tuple[str, ...]) -> list[tuple[Any, ...]]:
    getters = [_READ[name] for name in names]
    return [tuple(get(p) for get in getters) for p in profiles]


async def insert_profiles(session: AsyncSession, workspace_id: str, profiles: list[ProfileState]) -> None:
    """Store new profiles (Core rows: no ORM unit of work on the event path)."""
    if profiles:
        await session.execute(_INSERT, {"ws": workspace_id, **_arrays(_rows(profiles, _ALL), _ALL, PROFILE_TYPES)})


@lru_cache(maxsize=16)
def _update(groups: frozenset[Group]) -> tuple[Any, tuple[str, ...]]:
    """The UPDATE of first/last seen and these groups of columns, and the columns it sets (built once per set)."""
    names = ("first_seen", "last_seen", *(name for group in sorted(groups) for name in GROUPS[group]))
    columns = ("profile_id", *names)
    stmt = text(
        f"UPDATE profiles.profiles AS p SET {', '.join(f'{c} = u.{c}' for c in _quoted(names))} "
        f"FROM {_unnest(columns, PROFILE_TYPES)} "
        f'WHERE p.workspace_id = CAST(:ws AS text) AND p.profile_id = u."profile_id"'
    )
    return stmt, columns


async def update_profiles(
    session: AsyncSession, workspace_id: str, changed: list[tuple[ProfileState, frozenset[Group]]]
) -> None:
    """Write changed profiles: first/last seen and the groups that changed, one statement per set of groups."""
    by_groups: dict[frozenset[Group], list[ProfileState]] = {}
    for profile, groups in changed:
        by_groups.setdefault(groups, []).append(profile)
    for groups, profiles in sorted(by_groups.items(), key=lambda item: sorted(item[0])):
        stmt, columns = _update(groups)
        await session.execute(stmt, {"ws": workspace_id, **_arrays(_rows(profiles, columns), columns, PROFILE_TYPES)})


async def link_identities(session: AsyncSession, workspace_id: str, links: dict[Identity, str]) -> None:
    """Point each identity at its profile, whoever it pointed at before."""
    if not links:
        return
    ordered = sorted(links.items())
    await session.execute(_LINK, {
        "ws": workspace_id, "kinds": [k for (k, _), _ in ordered], "values": [v for (_, v), _ in ordered],
        "profiles": [p for _, p in ordered],
    })


# One statement of any size (a multi-row VALUES was a new statement, compiled anew, for every count of rows).
_LINK = text(
    "INSERT INTO profiles.identities (workspace_id, kind, value, profile_id) "
    "SELECT CAST(:ws AS text), u.* FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[]), "
    "CAST(:profiles AS text[])) AS u ON CONFLICT (workspace_id, kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id"
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
        text(
            "WITH moved AS (DELETE FROM profiles.activity_days WHERE workspace_id = :ws AND profile_id = :source "
            "RETURNING day, sessions, purchases, revenue) "
            "INSERT INTO profiles.activity_days AS a (workspace_id, profile_id, day, sessions, purchases, revenue) "
            "SELECT :ws, :target, day, sessions, purchases, revenue FROM moved "
            "ON CONFLICT (workspace_id, profile_id, day) DO UPDATE SET sessions = a.sessions + EXCLUDED.sessions, "
            "purchases = a.purchases + EXCLUDED.purchases, revenue = a.revenue + EXCLUDED.revenue"
        ),
        {"ws": workspace_id, "source": source, "target": target},
    )
    await session.execute(
        update(Device).where(Device.workspace_id == workspace_id, Device.profile_id == source).values(profile_id=target)
    )
    await session.execute(
        delete(Profile).where(Profile.workspace_id == workspace_id, Profile.profile_id == source)
    )


EVENT_TYPES = {
    "message_id": "text", "profile_id": "text", "type": "text", "name": "text", "user_id": "text",
    "anonymous_id": "text", "properties": "jsonb", "traits": "jsonb", "context": "jsonb", "timestamp": "timestamptz",
    "received_at": "timestamptz", "merged_profile_ids": "jsonb",
}
_EVENT_COLUMNS = tuple(EVENT_TYPES)
_INSERT_EVENTS = text(
    f"INSERT INTO profiles.events (workspace_id, {', '.join(_quoted(_EVENT_COLUMNS))}) "
    f"SELECT CAST(:ws AS text), u.* FROM {_unnest(_EVENT_COLUMNS, EVENT_TYPES)} ON CONFLICT DO NOTHING"
)


async def insert_events(session: AsyncSession, workspace_id: str, rows: list[dict[str, Any]]) -> None:
    """Store events; the primary key keeps a messageId to one row whatever happens."""
    if rows:
        tuples = [tuple(row[c] for c in _EVENT_COLUMNS) for row in rows]
        await session.execute(_INSERT_EVENTS, {"ws": workspace_id, **_arrays(tuples, _EVENT_COLUMNS, EVENT_TYPES)})


async def bump_counts(session: AsyncSession, workspace_id: str, counts: dict[tuple[str, str, date], int]) -> None:
    """Add to the per-day counters, keyed (profile id, event name, day)."""
    if not counts:
        return
    ordered = sorted(counts.items())
    await session.execute(_BUMP, {
        "ws": workspace_id, "profiles": [p for (p, _, _), _ in ordered], "names": [name for (_, name, _), _ in ordered],
        "days": [day for (_, _, day), _ in ordered], "counts": [n for _, n in ordered],
    })


_BUMP = text(
    "INSERT INTO profiles.event_counts (workspace_id, profile_id, name, day, count) "
    "SELECT CAST(:ws AS text), u.* FROM unnest(CAST(:profiles AS text[]), CAST(:names AS text[]), "
    "CAST(:days AS date[]), CAST(:counts AS integer[])) AS u "
    "ON CONFLICT (workspace_id, profile_id, name, day) DO UPDATE SET count = profiles.event_counts.count + EXCLUDED.count"
)


async def bump_days(
    session: AsyncSession, workspace_id: str, days: dict[tuple[str, date], tuple[int, int, Decimal]]
) -> None:
    """Add to the per-day activity rows (profile, UTC day): sessions started, purchases and revenue."""
    if not days:
        return
    ordered = sorted(days.items())
    await session.execute(_BUMP_DAYS, {
        "ws": workspace_id, "profiles": [p for (p, _), _ in ordered], "days": [d for (_, d), _ in ordered],
        "sessions": [v[0] for _, v in ordered], "purchases": [v[1] for _, v in ordered],
        "revenue": [v[2] for _, v in ordered],
    })


_BUMP_DAYS = text(
    "INSERT INTO profiles.activity_days AS a (workspace_id, profile_id, day, sessions, purchases, revenue) "
    "SELECT CAST(:ws AS text), u.* FROM unnest(CAST(:profiles AS text[]), CAST(:days AS date[]), "
    "CAST(:sessions AS integer[]), CAST(:purchases AS integer[]), CAST(:revenue AS numeric[])) AS u "
    "ON CONFLICT (workspace_id, profile_id, day) DO UPDATE SET sessions = a.sessions + EXCLUDED.sessions, "
    "purchases = a.purchases + EXCLUDED.purchases, revenue = a.revenue + EXCLUDED.revenue"
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
        select(*(cast_(d.times, Text) if name == "times" else d[name] for name in DEVICE_COLUMNS)).where(
            d.workspace_id == workspace_id,
            (d.device_id == any_(_texts(device_ids))) | (d.push_token == any_(_texts(tokens))),
        )
    )
    return [
        DeviceState(device_id, profile_id, last_seen, platform, app, app_version, os_version, model, locale, time_zone,
                    push_token, dead_token, orjson.loads(times))
        for (device_id, profile_id, last_seen, platform, app, app_version, os_version, model, locale, time_zone,
             push_token, dead_token, times) in rows
    ]


DEVICE_TYPES = {
    "device_id": "text", "profile_id": "text", "last_seen": "timestamptz", "platform": "text", "app": "text",
    "app_version": "text", "os_version": "text", "model": "text", "locale": "text", "time_zone": "text",
    "push_token": "text", "dead_token": "text", "times": "jsonb", "push_enabled": "boolean",
}
_WRITTEN = (*DEVICE_COLUMNS, "push_enabled")
_SAVE_DEVICES = text(
    f"INSERT INTO profiles.devices (workspace_id, {', '.join(_quoted(_WRITTEN))}) "
    f"SELECT CAST(:ws AS text), u.* FROM {_unnest(_WRITTEN, DEVICE_TYPES)} "
    f"ON CONFLICT (workspace_id, device_id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in _quoted(_WRITTEN[1:]))}"
)
_DEVICE_VALUES = attrgetter(*_WRITTEN)


async def save_devices(session: AsyncSession, workspace_id: str, devices: list[DeviceState]) -> None:
    """Insert or overwrite these devices whole (the batch computed every field under the locks)."""
    if devices:
        rows = [_DEVICE_VALUES(d) for d in sorted(devices, key=lambda d: d.device_id)]
        await session.execute(_SAVE_DEVICES, {"ws": workspace_id, **_arrays(rows, _WRITTEN, DEVICE_TYPES)})


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


# The last code point: every text starting with a prefix sorts (byte-wise) between the prefix and the
# prefix followed by this one, so a prefix search is a range of the text_pattern_ops indexes.
_LAST_CODE_POINT = "\U0010ffff"


def _prefixed(column: Any, prefix: Any) -> Any:
    """`column` starts with `prefix`, as an index range (`~>=~`, `~<=~`: byte-wise, whatever the collation)."""
    return and_(
        column.op("~>=~", is_comparison=True)(prefix),
        column.op("~<=~", is_comparison=True)(prefix.concat(_LAST_CODE_POINT).self_group()),
        func.starts_with(column, prefix),
    )


async def page_of_profiles(
    session: AsyncSession, workspace_id: str, search: str | None, after: tuple[Any, str] | None, limit: int
) -> list[Profile]:
    """Up to `limit` profiles newest first (by creation, then id) after the position `after`; with `search`,
    only those with a user id, alias or anonymous id starting with it, or an `email` trait starting with it
    in any case."""
    query = select(Profile).where(Profile.workspace_id == workspace_id)
    if search is not None:
        text_ = bindparam("search", search, type_=Text)
        by_identity = select(IdentityRow.profile_id).where(
            IdentityRow.workspace_id == workspace_id, _prefixed(IdentityRow.value, text_)
        )
        # The key as a literal, as in the index's expression (a parameter would not match it in a generic plan).
        email = func.lower(Profile.traits.op("->>")(literal_column("'email'")))
        by_email = select(Profile.profile_id).where(
            Profile.workspace_id == workspace_id, _prefixed(email, func.lower(text_))
        )
        query = query.where(Profile.profile_id.in_(by_identity.union(by_email)))
    if after is not None:
        query = query.where(tuple_(Profile.created_at, Profile.profile_id) < tuple_(literal(after[0]), literal(after[1])))
    rows = await session.scalars(query.order_by(Profile.created_at.desc(), Profile.profile_id.desc()).limit(limit))
    return list(rows)


async def identities_of_many(session: AsyncSession, workspace_id: str, profile_ids: list[str], kind: str) -> dict[str, list[str]]:
    """The identities of one kind of each of these profiles, oldest first."""
    rows = await session.execute(
        select(IdentityRow.profile_id, IdentityRow.value)
        .where(IdentityRow.workspace_id == workspace_id, IdentityRow.kind == kind,
               IdentityRow.profile_id == any_(_texts(profile_ids)))
        .order_by(IdentityRow.created_at, IdentityRow.value)
    )
    found: dict[str, list[str]] = {}
    for profile_id, value in rows:
        found.setdefault(profile_id, []).append(value)
    return found
