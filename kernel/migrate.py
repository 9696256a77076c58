"""Apply each service's Alembic migrations to its own PostgreSQL schema."""

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from kernel.db import make_engine

# Owners of durable state, in dependency order: the segmenter reads the views profiles publishes.
SCHEMAS: dict[str, str] = {
    "gateway": "gateway",
    "profiles": "services.profiles",
    "segmenter": "services.segmenter",
    "scheduler": "services.scheduler",
    "dispatcher": "services.dispatcher",
}


def alembic_config(schema: str, database_url: str) -> Config:
    """An Alembic config for one service's schema and revisions."""
    package = importlib.import_module(SCHEMAS[schema])
    versions = Path(package.__file__).parent / "migrations"  # type: ignore[arg-type]
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["schema"] = schema
    cfg.attributes["url"] = database_url
    return cfg


def upgrade_all(database_url: str) -> list[str]:
    """Bring every schema to its newest revision (idempotent); returns the schemas migrated."""
    for schema in SCHEMAS:
        command.upgrade(alembic_config(schema, database_url), "head")
    return list(SCHEMAS)


async def pending_schemas(database_url: str) -> list[str]:
    """The schemas whose applied revision is not their newest one (all of them on an empty database)."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    behind: list[str] = []
    try:
        async with engine.connect() as conn:
            for schema in SCHEMAS:
                heads = set(ScriptDirectory.from_config(alembic_config(schema, database_url)).get_heads())
                try:
                    async with conn.begin_nested():
                        rows = await conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version'))
                        applied = {row[0] for row in rows}
                except ProgrammingError:  # no version table yet
                    applied = set()
                if applied != heads:
                    behind.append(schema)
    finally:
        await engine.dispose()
    return behind
