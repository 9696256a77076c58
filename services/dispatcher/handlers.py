"""Dispatcher bus handler: SENDS in; deliveries out; engagement events back onto EVENTS."""

import asyncio
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
from kernel.logging import bind_correlation_id
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


async def on_sends(received: list[bus.Received[SendRequested]], deps: Deps) -> list[Exception | None]:
    """Deliver a batch of sends, each at most once: claimed in one transaction, rendered and
    delivered concurrently, recorded in one transaction. Returns each send's failure (None: done);
    a transient one is redelivered with backoff."""
    sends = [m.payload for m in received]
    failures: list[Exception | None] = [None] * len(sends)
    async with unit_of_work(deps.sessions) as session:
        claims = await service.begin_many(session, sends, deps.in_flight_seconds)
    finished: list[tuple[Delivery, str | None]] = []  # with the correlation id its send travelled with
    todo: list[tuple[int, Delivery]] = []
    for i, claim in enumerate(claims):
        if isinstance(claim, Exception):
            failures[i] = claim
        elif claim.status in service.FINAL:
            finished.append((claim, received[i].correlation_id))  # already decided: publish its outcome again, send nothing
        else:
            todo.append((i, claim))
    if todo:
        profiles = await _profiles(deps, {(sends[i].workspace_id, sends[i].profile_id) for i, _ in todo})
        results = await asyncio.gather(
            *(_attempt(deps, received[i], claim, profiles) for i, claim in todo)
        )
        async with unit_of_work(deps.sessions) as session:
            recorded = await service.record_many(
                session, {sends[i].send_id: result for (i, _), result in zip(todo, results, strict=True)}
            )
        for (i, _), result, delivery in zip(todo, results, recorded, strict=True):
            bind_correlation_id(received[i].correlation_id)
            log.info("send_attempted", send_id=delivery.send_id, status=delivery.status, reason=delivery.reason)
            if result.status == "retry":
                failures[i] = TransientError(result.reason or "retry")
            else:
                finished.append((delivery, received[i].correlation_id))
    await _publish_outcomes(deps, finished)
    return failures


async def _profiles(deps: Deps, keys: set[tuple[str, str]]) -> dict[tuple[str, str], ProfileSnapshot | Exception]:
    """Each profile's snapshot from the profiles service, asked concurrently, or why it could not be had."""

    async def one(workspace_id: str, profile_id: str) -> ProfileSnapshot | Exception:
        try:
            return await bus.request(
                deps.nc,
                PROFILE_QUERY_SUBJECT,
                ProfileQuery(workspace_id=workspace_id, profile_id=profile_id),
                ProfileSnapshot,
            )
        except Exception as exc:
            return exc

    ordered = sorted(keys)
    return dict(zip(ordered, await asyncio.gather(*(one(*key) for key in ordered)), strict=True))


async def _attempt(
    deps: Deps,
    message: bus.Received[SendRequested],
    claim: Delivery,
    profiles: dict[tuple[str, str], ProfileSnapshot | Exception],
) -> service.Result:
    bind_correlation_id(message.correlation_id)  # its own task: the binding stays with this send
    send = message.payload
    profile = profiles[(send.workspace_id, send.profile_id)]
    if isinstance(profile, Exception):
        result = service.Result("retry", f"profile lookup failed: {profile!r}")
    else:
        result = await service.attempt(send, profile, deps.providers)
    if result.status == "retry" and claim.attempts >= deps.max_attempts:
        result = service.Result("failed", f"gave up after {claim.attempts} attempts: {result.reason}")
    return result


async def _publish_outcomes(deps: Deps, finished: list[tuple[Delivery, str | None]]) -> None:
    """The engagement events of final outcomes, onto EVENTS, pipelined."""
    items, correlation_ids = [], []
    for delivery, correlation_id in finished:
        event = service.outcome_event(delivery)
        if event is not None:
            subject = event_subject(event.workspace_id, event.type)
            items.append((subject, event.model_dump_json().encode(), f"{event.workspace_id}:{event.message_id}"))
            correlation_ids.append(correlation_id)
    if items:
        await bus.publish_many(deps.js, items, timeout=30.0, correlation_ids=correlation_ids)
