"""Alembic environment shared by every service; each runs with its own schema and version table."""

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from kernel.db import asyncpg_url

config = context.config
SCHEMA: str = config.attributes["schema"]
URL: str = config.attributes["url"]


def _run(connection: Connection) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
    context.configure(
        connection=connection,
        version_table_schema=SCHEMA,
        include_schemas=False,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        # Serialize concurrent `migrate` runs (two replicas of a Job, say) on one lock per schema.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": SCHEMA})
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(asyncpg_url(URL))
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Herald's migrations run online only: `herald migrate`")
asyncio.run(_main())
