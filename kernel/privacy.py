"""The plumbing every service that holds personal data shares for the user's rights (services/*/privacy).

Each such service erases its own part of a person when an `ErasureRequested` reaches its durable
consumer, commits, and only then reports an `ErasureReport` (and acks); and answers pages of what
it holds on a person over request/reply, for the export the profiles service streams.
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import (
    ERASURE_CONSUMERS,
    EXPORT_SUBJECTS,
    ErasingService,
    ErasureReport,
    ErasureRequested,
    PersonalDataQuery,
)
from kernel.db import unit_of_work

log = structlog.get_logger(__name__)

Erase = Callable[[AsyncSession, ErasureRequested], Awaitable[dict[str, int]]]
Page = Callable[[AsyncSession, PersonalDataQuery], Awaitable[BaseModel]]
ERASURE_BATCH = 16
Record = TypeVar("Record", bound=BaseModel)


async def person_rows(
    session: AsyncSession, model: Any, record: type[Record], query: PersonalDataQuery, key: str = "send_id"
) -> tuple[list[Record], str | None]:
    """One page of the person's rows of `model` (workspace_id, profile_id and a text `key` column), in `key` order
    after `query.after`, as `record`s; with the key to ask the next page after, None on the last page."""
    column = getattr(model, key)
    rows = list(await session.scalars(
        select(model)
        .where(model.workspace_id == query.workspace_id, model.profile_id.in_(query.profile_ids))
        .where(column > (query.after or ""))
        .order_by(column)
        .limit(query.limit + 1)
    ))
    records = [record.model_validate(row, from_attributes=True) for row in rows[: query.limit]]
    return records, (str(getattr(records[-1], key)) if len(rows) > query.limit else None)


def erasure_consumer(
    service: ErasingService, erase: Erase, sessions: async_sessionmaker[AsyncSession], js: JetStreamContext,
    settings: Any,
) -> bus.ConsumerSpec:
    """The service's durable consumer of erasure requests: erase in one transaction, commit, report, ack."""
    stream, durable, subject = ERASURE_CONSUMERS[service]

    async def on_erasure(request: ErasureRequested) -> None:
        async with unit_of_work(sessions) as session:
            erased = await erase(session, request)
        report = ErasureReport(
            erasure_id=request.erasure_id, workspace_id=request.workspace_id, service=service, erased=erased,
            at=datetime.now(UTC),
        )
        # Reported after commit: a report lost here is sent again when the request is redelivered (the
        # erasure finds nothing left, and the report's de-duplication id keeps the first one).
        await bus.publish_contracts(js, [report], timeout=30.0)
        log.info("erasure_part_done", service=service, workspace_id=request.workspace_id,
                 erasure_id=request.erasure_id, erased=erased)

    return bus.ConsumerSpec(
        stream=stream, durable=durable, subject=subject, model=ErasureRequested, handler=on_erasure,
        batch=ERASURE_BATCH, concurrency=1, ack_wait=settings.ack_wait_seconds,
    )


async def serve_export(
    nc: NATS, service: str, page: Page, sessions: async_sessionmaker[AsyncSession]
) -> bus.Responder:
    """Answer pages of what this service holds on a person (`EXPORT_SUBJECTS[service]`) until stopped."""

    async def on_query(query: PersonalDataQuery) -> BaseModel:
        async with unit_of_work(sessions) as session:
            return await page(session, query)

    return await bus.serve_requests(nc, EXPORT_SUBJECTS[service], PersonalDataQuery, on_query, concurrency=4)
