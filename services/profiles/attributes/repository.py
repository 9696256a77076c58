"""Catalogue queries; they flush, the edge commits."""

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.profiles.attributes.domain import EXAMPLES_KEPT, Sighting
from services.profiles.models import CatalogueEntry

# One statement for a batch's sightings: first seen is a min, last seen a max, the type the newest
# sighting's, and an example joins the few kept when it is new.
_UPSERT = text(
    "INSERT INTO profiles.attribute_catalogue AS c (workspace_id, name, type, first_seen, last_seen, examples) "
    "SELECT CAST(:ws AS text), u.* "
    "FROM unnest(CAST(:names AS text[]), CAST(:types AS text[]), CAST(:firsts AS timestamptz[]), "
    "CAST(:lasts AS timestamptz[]), CAST(CAST(:examples AS text[]) AS jsonb[])) AS u "
    "ON CONFLICT (workspace_id, name) DO UPDATE SET "
    "type = CASE WHEN EXCLUDED.last_seen >= c.last_seen THEN EXCLUDED.type ELSE c.type END, "
    "first_seen = least(c.first_seen, EXCLUDED.first_seen), last_seen = greatest(c.last_seen, EXCLUDED.last_seen), "
    f"examples = CASE WHEN jsonb_array_length(c.examples) >= {EXAMPLES_KEPT} OR c.examples @> EXCLUDED.examples "
    "THEN c.examples ELSE c.examples || EXCLUDED.examples END"
)


async def record(session: AsyncSession, workspace_id: str, seen: dict[str, Sighting]) -> None:
    """Upsert these attributes' catalogue rows (in name order, so concurrent batches never deadlock)."""
    if not seen:
        return
    names = sorted(seen)
    await session.execute(_UPSERT, {
        "ws": workspace_id, "names": names, "types": [seen[n].type for n in names], "firsts": [seen[n].first for n in names],
        "lasts": [seen[n].last for n in names],
        "examples": [orjson.dumps([] if seen[n].example is None else [seen[n].example]).decode() for n in names],
    })


async def catalogue(session: AsyncSession, workspace_id: str, after: str | None, limit: int) -> list[CatalogueEntry]:
    """Up to `limit` of the workspace's attributes by name, after the name `after`."""
    query = select(CatalogueEntry).where(CatalogueEntry.workspace_id == workspace_id)
    if after is not None:
        query = query.where(CatalogueEntry.name > after)
    rows = await session.scalars(query.order_by(CatalogueEntry.name).limit(limit))
    return list(rows)

