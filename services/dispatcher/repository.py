"""Dispatcher queries; they flush, the edge commits."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import SendRequested
from services.dispatcher.models import ChannelConfig, Delivery, PushAttempt, Suppression
from services.profiles.views import segment_devices, segment_profiles


async def lock_deliveries(
    session: AsyncSession, sends: list[SendRequested], give_up_at: dict[str, datetime]
) -> dict[str, Delivery]:
    """The delivery rows of these sends, created (with the request kept) if new, locked in send-id order."""
    await session.execute(
        insert(Delivery).on_conflict_do_nothing(),
        [
            {
                "send_id": send.send_id,
                "workspace_id": send.workspace_id,
                "campaign_id": send.campaign_id,
                "profile_id": send.profile_id,
                "user_id": send.user_id,
                "channel": send.channel,
                "status": "new",
                "attempts": 0,
                "request": send.model_dump(mode="json"),
                "give_up_at": give_up_at[send.send_id],
            }
            for send in sorted(sends, key=lambda s: s.send_id)
        ],
    )
    return await get_deliveries(session, [send.send_id for send in sends])


async def get_deliveries(session: AsyncSession, send_ids: list[str]) -> dict[str, Delivery]:
    """These delivery rows, locked in send-id order (so concurrent batches never deadlock)."""
    rows = await session.scalars(
        select(Delivery).where(Delivery.send_id.in_(send_ids)).order_by(Delivery.send_id).with_for_update()
    )
    return {row.send_id: row for row in rows}


async def claim_due_retries(session: AsyncSession, now: datetime, limit: int) -> list[Delivery]:
    """Retries whose time has come; rows another replica holds are skipped."""
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.status == "retrying", Delivery.next_attempt_at <= now, Delivery.request.is_not(None))
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def claim_interrupted(session: AsyncSession, started_before: datetime, limit: int) -> list[Delivery]:
    """Attempts begun before `started_before` and never recorded: their worker died mid-attempt."""
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.status == "sending", Delivery.updated_at < started_before)
        .order_by(Delivery.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def deliveries_of_sends(session: AsyncSession, workspace_id: str, send_ids: list[str]) -> list[Delivery]:
    if not send_ids:
        return []
    rows = await session.scalars(
        select(Delivery).where(Delivery.workspace_id == workspace_id, Delivery.send_id.in_(send_ids))
    )
    return list(rows)


async def save_channel(
    session: AsyncSession, workspace_id: str, kind: str, app_id: str, settings: dict[str, Any], secret: str
) -> ChannelConfig:
    """Create or replace one channel configuration; returns it as stored."""
    now = datetime.now(UTC)
    values = {"settings": settings, "secret": secret, "updated_at": now}
    row = await session.scalar(
        insert(ChannelConfig)
        .values(workspace_id=workspace_id, kind=kind, app_id=app_id, created_at=now, **values)
        .on_conflict_do_update(index_elements=["workspace_id", "kind", "app_id"], set_=values)
        .returning(ChannelConfig),
        execution_options={"populate_existing": True},
    )
    assert row is not None
    return row


async def channel(session: AsyncSession, workspace_id: str, kind: str, app_id: str) -> ChannelConfig | None:
    return await session.get(ChannelConfig, (workspace_id, kind, app_id))


async def channels_of(session: AsyncSession, workspace_id: str) -> list[ChannelConfig]:
    rows = await session.scalars(
        select(ChannelConfig).where(ChannelConfig.workspace_id == workspace_id).order_by(ChannelConfig.kind, ChannelConfig.app_id)
    )
    return list(rows)


async def channels_for(session: AsyncSession, keys: set[tuple[str, str]]) -> list[ChannelConfig]:
    """The configurations of these (workspace, app) pairs and of their workspaces' defaults (app "")."""
    if not keys:
        return []
    wanted = keys | {(workspace_id, "") for workspace_id, _ in keys}
    rows = await session.scalars(
        select(ChannelConfig).where(tuple_(ChannelConfig.workspace_id, ChannelConfig.app_id).in_(sorted(wanted)))
    )
    return list(rows)


async def delete_channel(session: AsyncSession, workspace_id: str, kind: str, app_id: str) -> bool:
    result = await session.execute(
        delete(ChannelConfig).where(
            ChannelConfig.workspace_id == workspace_id, ChannelConfig.kind == kind, ChannelConfig.app_id == app_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def lock_channels(session: AsyncSession, limit: int, after: tuple[str, str, str] | None) -> list[ChannelConfig]:
    """A page of every workspace's channel configurations, locked, in key order (for re-encrypting secrets)."""
    query = select(ChannelConfig).order_by(ChannelConfig.workspace_id, ChannelConfig.kind, ChannelConfig.app_id)
    if after is not None:
        query = query.where(tuple_(ChannelConfig.workspace_id, ChannelConfig.kind, ChannelConfig.app_id) > after)
    rows = await session.scalars(query.limit(limit).with_for_update())
    return list(rows)


async def push_devices(session: AsyncSession, keys: set[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each profile's push-enabled devices with their tokens, from the profiles service's published view."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in keys}
    if not keys:
        return found
    d = segment_devices
    rows = await session.execute(
        select(d.c.workspace_id, d.c.profile_id, d.c.device_id, d.c.platform, d.c.app, d.c.push_token)
        .where(tuple_(d.c.workspace_id, d.c.profile_id).in_(sorted(keys)), d.c.push_enabled.is_(True),
               d.c.push_token.is_not(None))
        .order_by(d.c.device_id)
    )
    for row in rows.mappings():
        found[(row["workspace_id"], row["profile_id"])].append(dict(row))
    return found


async def push_attempts(session: AsyncSession, send_ids: list[str]) -> dict[str, list[PushAttempt]]:
    """The device attempts of these sends so far."""
    found: dict[str, list[PushAttempt]] = {send_id: [] for send_id in send_ids}
    if send_ids:
        rows = await session.scalars(
            select(PushAttempt).where(PushAttempt.send_id.in_(send_ids)).order_by(PushAttempt.send_id, PushAttempt.device_id)
        )
        for row in rows:
            found[row.send_id].append(row)
    return found


async def save_push_attempts(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert or update device attempts (one row per send and device)."""
    if not rows:
        return
    statement = insert(PushAttempt)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["send_id", "device_id"],
            set_={c: statement.excluded[c] for c in ("service", "platform", "status", "reason_code", "reason",
                                                     "provider_response", "updated_at", "sent_at")}
            | {"attempts": PushAttempt.attempts + 1},
        ),
        sorted(rows, key=lambda r: (r["send_id"], r["device_id"])),
    )


async def suppressions(session: AsyncSession, keys: set[tuple[str, str, str]]) -> list[Suppression]:
    """The suppressions among these (workspace, channel, address) keys."""
    if not keys:
        return []
    rows = await session.scalars(
        select(Suppression).where(tuple_(Suppression.workspace_id, Suppression.channel, Suppression.address).in_(sorted(keys)))
    )
    return list(rows)


async def suppress(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Suppress addresses (the first reason stays: an address suppressed again keeps why it was first)."""
    if rows:
        await session.execute(
            insert(Suppression).on_conflict_do_nothing(),
            sorted(rows, key=lambda r: (r["workspace_id"], r["channel"], r["address"])),
        )


async def unsuppress(session: AsyncSession, workspace_id: str, channel: str, address: str) -> bool:
    """Lift a suppression; whether there was one."""
    result = await session.execute(
        delete(Suppression).where(
            Suppression.workspace_id == workspace_id, Suppression.channel == channel, Suppression.address == address
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def last_user_texted(session: AsyncSession, workspace_id: str, number: str) -> str | None:
    """The user the workspace last texted at this number (its incoming texts come from them), if any."""
    return await session.scalar(
        select(Delivery.user_id)
        .where(Delivery.workspace_id == workspace_id, Delivery.channel == "sms", Delivery.recipient == number,
               Delivery.user_id.is_not(None))
        .order_by(Delivery.created_at.desc())
        .limit(1)
    )


async def profile_of_user(session: AsyncSession, workspace_id: str, user_id: str) -> str | None:
    """The profile id of a workspace's user, from the profiles service's published view (None when unknown)."""
    p = segment_profiles
    found: str | None = await session.scalar(
        select(p.c.profile_id).where(p.c.workspace_id == workspace_id, p.c.user_id == user_id).limit(1)
    )
    return found
