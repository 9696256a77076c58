"""A transactional outbox: messages written in the same transaction as the state they announce.

A consumer that commits and then fails to publish (NATS down, the process killed between the two)
would otherwise lose the message for good: its redelivery finds the state already applied and
has nothing left to say. Staging the messages as rows in the same transaction makes them as
durable as the state; they are published after the commit, and any left behind (a failed
publish, a crash) are published by the service's drain loop. Each row keeps the message's
deterministic de-duplication id, so a row published twice is stored once by JetStream.

Each service that needs one owns an `outbox` table in its own schema (created by its migration).
"""

import asyncio
from collections.abc import Sequence

import structlog
from nats.js import JetStreamContext
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import Published
from kernel.db import Base, unit_of_work

log = structlog.get_logger(__name__)


def outbox_table(schema: str, metadata: MetaData = Base.metadata) -> Table:
    """The outbox table of one service's schema."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("subject", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("dedupe_id", Text, nullable=False),
        Column("correlation_id", Text),
        Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
        schema=schema,
    )


class Outbox:
    """Stage messages in a transaction; publish them after it commits; drain what was left behind."""

    def __init__(self, table: Table, publish_timeout: float = 30.0) -> None:
        self.table = table
        self.publish_timeout = publish_timeout

    async def stage(
        self, session: AsyncSession, messages: Sequence[Published], correlation_ids: Sequence[str | None] | None = None
    ) -> list[int]:
        """Write these messages in the caller's transaction; returns their row ids for `publish`."""
        if not messages:
            return []
        correlations = list(correlation_ids) if correlation_ids is not None else [None] * len(messages)
        rows = [
            {
                "subject": m.subject,
                "payload": m.model_dump_json().encode(),
                "dedupe_id": m.dedupe_id,
                "correlation_id": c,
            }
            for m, c in zip(messages, correlations, strict=True)
        ]
        result = await session.execute(insert(self.table).returning(self.table.c.id), rows)
        return [row[0] for row in result]

    async def publish(
        self, sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, ids: Sequence[int] | None = None,
        limit: int = 500,
    ) -> int:
        """Publish staged rows (these ids, or the oldest `limit` of any) and delete them; returns how many.

        Rows another replica is publishing are skipped. If the publish fails the rows stay, for the
        drain loop; if it succeeds but the delete does not commit, they are published again under
        the same de-duplication id.
        """
        if ids is not None and not ids:
            return 0
        t = self.table
        async with unit_of_work(sessions) as session:
            query = select(t.c.id, t.c.subject, t.c.payload, t.c.dedupe_id, t.c.correlation_id).order_by(t.c.id)
            query = query.where(t.c.id.in_(ids)) if ids is not None else query.limit(limit)
            rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            await bus.publish_many(
                js,
                [(r.subject, r.payload, r.dedupe_id) for r in rows],
                timeout=self.publish_timeout,
                correlation_ids=[r.correlation_id for r in rows],
            )
            await session.execute(delete(t).where(t.c.id.in_([r.id for r in rows])))
        return len(rows)

    async def publish_after_commit(
        self, sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, ids: Sequence[int]
    ) -> None:
        """Publish what a committed transaction staged; on failure leave it to the drain loop, logged once."""
        try:
            await self.publish(sessions, js, ids)
        except Exception as exc:
            log.warning("outbox_publish_deferred", table=str(self.table), rows=len(ids), error=repr(exc))

    async def drain(
        self, sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, stop: asyncio.Event,
        interval: float = 1.0,
    ) -> None:
        """Until stopped: publish rows left behind, every `interval` seconds (at once while a backlog remains)."""
        failing = False
        while not stop.is_set():
            try:
                published = await self.publish(sessions, js)
                if failing:
                    log.info("outbox_recovered", table=str(self.table))
                failing = False
            except Exception as exc:
                if not failing:  # once per outage, not once per try
                    log.warning("outbox_drain_failed", table=str(self.table), error=repr(exc))
                failing, published = True, 0
            if published:
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
