"""Profiles bus handlers: EVENTS in; PROFILES out, after commit."""

import structlog
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import (
    Event,
    ProfileLookup,
    ProfileQuery,
    ProfileSnapshot,
    Published,
    Rejection,
    TokenDeactivated,
    TokenDeactivation,
)
from kernel.db import unit_of_work
from services.profiles import service
from services.profiles.activity import Rules
from services.profiles.config import get_settings
from services.profiles.subscriptions.service import OUTBOX

log = structlog.get_logger(__name__)
REJECTION_PUBLISH_TIMEOUT = 2.0


async def on_events(
    received: list[bus.Received[Event]],
    sessions: async_sessionmaker[AsyncSession],
    js: JetStreamContext,
    rules: Rules | None = None,
) -> None:
    """Apply a batch of events in one transaction, commit, then publish each resolved event and change."""
    async with unit_of_work(sessions) as session:
        applied = await service.apply_events(session, [m.payload for m in received], rules or Rules())
    messages: list[Published] = []
    correlation_ids: list[str | None] = []
    for message, result in zip(received, applied, strict=True):
        if result.erased:
            continue  # a tombstone kept it out: the person was erased
        messages += [result.resolved, result.changed]
        correlation_ids += [message.correlation_id] * 2
    await bus.publish_contracts(js, messages, correlation_ids=correlation_ids, timeout=30.0)
    if rejections := [r for result in applied for r in result.rejections]:
        await _list_rejections(js, rejections)
    if staged := [i for result in applied for i in result.staged]:
        await OUTBOX.publish_after_commit(sessions, js, staged)  # the subscription changes the events made


async def _list_rejections(js: JetStreamContext, rejections: list[Rejection]) -> None:
    """List the values events carried that were left out (GET /api/v1/ingest/rejections), best effort.

    They are diagnostics, counted and logged whatever happens here: failing to list them never fails the
    batch, whose events are applied and committed.
    """
    try:
        await bus.publish_contracts(js, rejections, timeout=REJECTION_PUBLISH_TIMEOUT)
    except Exception:  # noqa: BLE001 - any failure to list them is logged, never raised
        log.warning("profile_rejections_not_listed", workspace_id=rejections[0].workspace_id, count=len(rejections),
                    exc_info=True)


async def on_profile_query(query: ProfileQuery, sessions: async_sessionmaker[AsyncSession]) -> ProfileSnapshot:
    """Answer a request for one profile's snapshot: the parts it asks for."""
    async with unit_of_work(sessions) as session:
        return await service.snapshot(
            session, query.workspace_id, query.profile_id, query.parts, get_settings().workspace_currency
        )


async def on_profile_lookup(query: ProfileLookup, sessions: async_sessionmaker[AsyncSession]) -> ProfileSnapshot:
    """Answer which profile a user id (or alias), else an anonymous id, is (an app fetching its user's messages)."""
    async with unit_of_work(sessions) as session:
        return await service.snapshot_of_identity(session, query.workspace_id, query.user_id, query.anonymous_id)


async def on_token_deactivation(
    request: TokenDeactivation, sessions: async_sessionmaker[AsyncSession]
) -> TokenDeactivated:
    """A provider called a push token dead (the dispatcher asks): stop pushing to it until it is registered again."""
    async with unit_of_work(sessions) as session:
        device = await service.deactivate_token(session, request.workspace_id, request.token)
    return TokenDeactivated(deactivated=device is not None, device_id=device["device_id"] if device else None)
