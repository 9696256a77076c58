"""Custom-attribute use cases: keep the workspace's attribute catalogue, cheaply; list it."""

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kernel import pagination
from services.profiles.attributes import domain, repository

# What this replica wrote to the catalogue lately: most events show attributes already written.
REMEMBERED = domain.Remembered()


async def record_sightings(session: AsyncSession, workspace_id: str, seen: dict[str, domain.Sighting]) -> None:
    """Write the sightings the catalogue needs: first sight, a type change, or one not written for a while."""
    now = time.monotonic()
    due = {name: s for name, s in seen.items() if REMEMBERED.due(workspace_id, name, s.type, now)}
    try:
        await repository.record(session, workspace_id, due)
    except BaseException:
        REMEMBERED.forget(workspace_id, list(due))
        raise


async def list_attributes(
    session: AsyncSession, workspace_id: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the workspace's custom attributes by name, and the next page's cursor (None: the last)."""
    after = pagination.decode(cursor, (str,))[0] if cursor is not None else None
    rows = await repository.catalogue(session, workspace_id, after, limit + 1)
    next_cursor = pagination.encode(rows[limit - 1].name) if len(rows) > limit else None
    entries = [
        {"name": r.name, "type": r.type, "first_seen": r.first_seen, "last_seen": r.last_seen, "examples": r.examples}
        for r in rows[:limit]
    ]
    return entries, next_cursor
