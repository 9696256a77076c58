"""Delivery-policy queries: the workspace's rules, what profiles publish about a user, the cap ledger, rate slots."""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, bindparam, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.profiles.views import segment_devices, segment_profiles
from services.scheduler.delivery import domain
from services.scheduler.delivery.models import CapLedger, DeliverySettings, RateSlot


def rules_of(row: DeliverySettings | None) -> domain.Rules:
    """A stored settings row as the policy's rules (no row: no caps, no holdout, UTC)."""
    if row is None:
        return domain.Rules()
    return domain.Rules(
        frequency_caps=tuple(domain.Cap(c["channel"], int(c["max"]), int(c["per_days"])) for c in row.frequency_caps),
        global_control_percent=row.global_control_percent,
        default_time_zone=row.default_time_zone,
        quiet_hours_attribute=row.quiet_hours_attribute,
    )


async def settings_row(session: AsyncSession, workspace_id: str) -> DeliverySettings | None:
    """The workspace's stored delivery rules, if it ever set them."""
    return await session.get(DeliverySettings, workspace_id)


async def delivery_settings(session: AsyncSession, workspace_id: str) -> domain.Rules:
    """The workspace's delivery rules: frequency_caps, global_control_percent, default_time_zone ("UTC" by default),
    quiet_hours_attribute (contract C2)."""
    return rules_of(await settings_row(session, workspace_id))


async def save_settings(session: AsyncSession, workspace_id: str, values: dict[str, Any]) -> DeliverySettings:
    """Replace the workspace's delivery rules."""
    statement = insert(DeliverySettings).values(workspace_id=workspace_id, **values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[DeliverySettings.workspace_id], set_={**values, "updated_at": func.now()}
        )
    )
    row = await session.get(DeliverySettings, workspace_id, populate_existing=True)
    assert row is not None
    return row


async def lock_profiles(session: AsyncSession, keys: Iterable[int]) -> None:
    """Take each (workspace, profile) cap lock until the transaction ends, in one order on every replica (no deadlock).

    A replica reads a user's ledger only under the lock and writes its sends to the ledger before it
    commits, so a second replica releasing to the same user waits and then counts them.
    """
    ordered = sorted(set(keys))
    if ordered:
        # unnest scans the array in order, so the locks are taken in ascending key order.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"), {"keys": ordered}
        )


@dataclass(frozen=True)
class Seen:
    """What profiles publish about a user that the policy reads."""

    time_zone: str | None
    language: str | None
    device_locale: str | None
    quiet_hours: Any


async def recipients(
    session: AsyncSession, workspace_id: str, profile_ids: Sequence[str], quiet_hours_attribute: str | None
) -> dict[str, Seen]:
    """Time zone, language, newest device locale and quiet hours of these profiles, in one query over the views."""
    p, d = segment_profiles.c, segment_devices.c
    newest_locale = (
        select(d.locale)
        .where(d.workspace_id == p.workspace_id, d.profile_id == p.profile_id, d.locale.is_not(None))
        .order_by(d.last_seen.desc().nulls_last())
        .limit(1)
        .scalar_subquery()
    )
    quiet = (
        func.coalesce(p.traits[quiet_hours_attribute], p.attributes[quiet_hours_attribute])
        if quiet_hours_attribute
        else literal_column("NULL")
    )
    rows = await session.execute(
        select(
            p.profile_id, p.attributes["time_zone"].astext, p.attributes["language"].astext, newest_locale, quiet
        ).where(p.workspace_id == workspace_id, p.profile_id == func.any(bindparam("ids", list(profile_ids), ARRAY(String))))
    )
    return {r[0]: Seen(r[1], r[2], r[3], r[4]) for r in rows}


async def history(
    session: AsyncSession, workspace_id: str, profile_ids: Sequence[str], since: datetime
) -> dict[str, list[domain.Sent]]:
    """The capped sends each profile was sent after `since`, from the ledger."""
    rows = await session.execute(
        select(CapLedger.profile_id, CapLedger.channel, CapLedger.sent_at).where(
            CapLedger.workspace_id == workspace_id,
            CapLedger.profile_id == func.any(bindparam("ids", list(profile_ids), ARRAY(String))),
            CapLedger.sent_at > since,
        )
    )
    found: dict[str, list[domain.Sent]] = defaultdict(list)
    for profile_id, channel, at in rows:
        found[profile_id].append(domain.Sent(channel, at))
    return found


async def record_sent(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Count these sends toward caps (once each: the send id is the key)."""
    if rows:
        # executemany (SQLAlchemy batches it into a few multi-row INSERTs): one statement with a VALUES list per
        # batch is compiled afresh every time, which cost more than the insert.
        await session.execute(insert(CapLedger).on_conflict_do_nothing(), rows)


async def reserve_rate(session: AsyncSession, campaign_id: str, minute: datetime, wanted: int) -> int:
    """Reserve up to `wanted` sends in this minute's slot; returns how many it already held before.

    The upsert locks the slot's row until commit, so replicas releasing the same campaign take turns.
    """
    used = await session.scalar(
        insert(RateSlot)
        .values(campaign_id=campaign_id, minute=minute, used=wanted)
        .on_conflict_do_update(index_elements=[RateSlot.campaign_id, RateSlot.minute], set_={"used": RateSlot.used + wanted})
        .returning(RateSlot.used)
    )
    return int(used or 0) - wanted


async def return_rate(session: AsyncSession, campaign_id: str, minute: datetime, unused: int) -> None:
    """Give back reservations of this minute that were not used (their sends were suppressed or held)."""
    if unused:
        await session.execute(
            update(RateSlot)
            .where(RateSlot.campaign_id == campaign_id, RateSlot.minute == minute)
            .values(used=func.greatest(RateSlot.used - unused, literal_column("0", Integer)))
        )


async def forget_old_slots(session: AsyncSession, campaign_ids: Sequence[str], before: datetime) -> None:
    """Drop the rate slots of past minutes (nothing reads them again)."""
    await session.execute(
        RateSlot.__table__.delete().where(  # type: ignore[attr-defined]
            RateSlot.campaign_id == func.any(bindparam("cids", list(campaign_ids), ARRAY(String))),
            RateSlot.minute < before,
        )
    )
