"""Apply each service's Alembic migrations to its own PostgreSQL schema."""

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config

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
