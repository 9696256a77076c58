"""Dispatcher bus handler: SENDS in; deliveries out; engagement events back onto EVENTS."""

from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import (
    PROFILE_QUERY_SUBJECT,
    ProfileQuery,
    ProfileSnapshot,
    SendRequested,
    event_subject,
)
from kernel.db import unit_of_work
from kernel.errors import TransientError
from services.dispatcher import service
from services.dispatcher.models import Delivery

log = structlog.get_logger(__name__)


@dataclass
class Deps:
    sessions: async_sessionmaker[AsyncSession]
    nc: NATS
    js: JetStreamContext
    providers: service.Providers
    max_attempts: int
    # A `sending` row younger than this is another worker's attempt in progress (the ack wait).
    in_flight_seconds: float = 30.0


async def on_send_requested(send: SendRequested, deps: Deps) -> None:
    """Deliver one send at most once; transient failures are retried with backoff (nak)."""
    async with unit_of_work(deps.sessions) as session:
        delivery = await service.begin(session, send, deps.in_flight_seconds)
    if delivery.status in service.FINAL:
        await _publish_outcome(deps, delivery)
        return
    try:
        profile = await bus.request(
            deps.nc,
            PROFILE_QUERY_SUBJECT,
            ProfileQuery(workspace_id=send.workspace_id, profile_id=send.profile_id),
            ProfileSnapshot,
        )
    except Exception as exc:
        result = service.Result("retry", f"profile lookup failed: {exc!r}")
    else:
        result = await service.attempt(send, profile, deps.providers)
    if result.status == "retry" and delivery.attempts >= deps.max_attempts:
        result = service.Result("failed", f"gave up after {delivery.attempts} attempts: {result.reason}")
    async with unit_of_work(deps.sessions) as session:
        delivery = await service.record(session, send.send_id, result)
    log.info("send_attempted", send_id=send.send_id, status=delivery.status, reason=delivery.reason)
    if result.status == "retry":
        raise TransientError(result.reason)
    await _publish_outcome(deps, delivery)


async def _publish_outcome(deps: Deps, delivery: Delivery) -> None:
    event = service.outcome_event(delivery)
    if event is None:
        return
    await bus.publish(
        deps.js,
        event_subject(event.workspace_id, event.type),
        event,
        f"{event.workspace_id}:{event.message_id}",
    )
