"""Opaque cursors for keyset pagination, the same in every service's lists, and the query parameters
every list takes.

A cursor is the position of the last item of a page (its sort key and id), encoded so that clients
treat it as a token: base64url of a small JSON array, behind a version prefix. A page after it is
`WHERE (sort key, id) < (cursor's)` for a newest-first list, stable whatever is added meanwhile: an
item created after the first page was read appears on no later page, and none is shown twice.
"""

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Query
from pydantic import AfterValidator

from kernel.errors import Unprocessable
from kernel.limits import refuse_nul

VERSION = "c1."
MAX_CURSOR_CHARS = 2048
DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def encode(*position: Any) -> str:
    """A cursor for a position: datetimes as ISO 8601 text, everything else as JSON."""
    values = [value.isoformat() if isinstance(value, datetime) else value for value in position]
    return VERSION + base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode(cursor: str, shape: tuple[type, ...]) -> tuple[Any, ...]:
    """The position a cursor holds, typed as `shape` (datetime or str, in order); a 422 naming `cursor` when it
    is not one this API gave out."""
    try:
        if not cursor.startswith(VERSION) or len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("no prefix")
        body = cursor[len(VERSION):]
        values = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if not isinstance(values, list) or len(values) != len(shape):
            raise ValueError("wrong length")
        typed: list[Any] = []
        for value, kind in zip(values, shape, strict=True):
            if not isinstance(value, str):
                raise ValueError("not text")
            refuse_nul(value, "a cursor")
            typed.append(_instant(value) if kind is datetime else value)
        return tuple(typed)
    except (ValueError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise Unprocessable(
            [{"loc": ["query", "cursor"], "msg": "not a cursor this list gave out: pass `next_cursor` from the previous page as it is"}]
        ) from None


T = TypeVar("T")


def newest_first_position(cursor: str | None) -> tuple[datetime, str] | None:
    """Where a newest-first list resumes: the (created at, id) its cursor holds; None for the first page."""
    if cursor is None:
        return None
    created_at, item_id = decode(cursor, (datetime, str))
    return created_at, item_id


def next_page(rows: list[T], limit: int, position: Callable[[T], tuple[datetime, str]]) -> tuple[list[T], str | None]:
    """A page from the `limit + 1` rows read: the first `limit`, and the cursor after them (None: the last page)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode(*position(rows[-1]))


def _instant(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError("no time zone")
    return at.astimezone(UTC)


def utc(value: datetime | None, name: str) -> datetime | None:
    """A time from the query parameter `name` in UTC (UTC when it names no zone); a 422 naming it when it cannot
    be one (a year-1 time with a positive offset is before the first UTC instant)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise Unprocessable([{"loc": ["query", name], "msg": "not a time that can be expressed in UTC"}]) from None


def like_pattern(text: str, contains: bool = True) -> str:
    """A LIKE pattern matching `text` literally (`%`, `_` and `\\` escaped), anywhere in a value or at its start."""
    escaped = re.sub(r"([\\%_])", r"\\\1", text)
    return f"%{escaped}%" if contains else f"{escaped}%"


def _searchable(text: str) -> str:
    return refuse_nul(text, "the search text")


Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_CHARS, description="`next_cursor` of the previous page, as it was given (opaque)"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
MAX_SEARCH_CHARS = 200
# Text to search for; a route adds its own `Query(min_length=1, max_length=MAX_SEARCH_CHARS, description=...)`.
Search = Annotated[str | None, AfterValidator(lambda t: t if t is None else _searchable(t))]
CreatedAfter = Annotated[datetime | None, Query(description="only items created at or after this time (ISO 8601; UTC without a zone)")]
CreatedBefore = Annotated[datetime | None, Query(description="only items created before this time (ISO 8601; UTC without a zone)")]
