"""What Herald accepts into its data, defined once: limits every stored value meets, and their checker.

An SDK call is answered 200 only if every stage after ingest can store and read it back: the bus
contract (pydantic and orjson on both ends), PostgreSQL `jsonb` and `text`, Python readers and
JavaScript readers of the API. Each limit below comes from one of those readers:

- Nesting: pydantic's JSON parser refuses documents nested 200 deep, orjson 255 deep; the bus adds
  two levels around an event's properties. `MAX_DEPTH` leaves a wide margin and keeps the walk short.
- Strings: PostgreSQL refuses U+0000 in `text` and `jsonb`; orjson refuses lone surrogates. Both are
  replaced with U+FFFD, as a UTF-8 decoder would, so the call is kept (Segment keeps it too).
- Numbers: `jsonb` keeps any number, but gives a float like 1e20 back as the integer
  100000000000000000000, which orjson (int64/uint64 only) cannot write; JavaScript (`JSON.parse`)
  reads integers beyond 2^53 - 1 rounded. So a number is kept only within +-(2^53 - 1), where every
  reader sees the same value; beyond it, its JSON text is kept as a string (an integer keeps every
  digit). NaN and infinities are not JSON; orjson refuses them on parse.
- Timestamps: within [EARLIEST, LATEST) after clock-skew correction; Python's datetime overflows at
  years 1 and 9999 once a +-14:00 offset is applied.

The checker is pure and cheap (a few microseconds for a typical 1 KB event): it copies nothing
unless it has to change something.
"""

import math
import re
from datetime import UTC, datetime
from typing import Any

MAX_DEPTH = 32  # objects and arrays nested in one field, the field's own value counting as 1
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
REPLACEMENT = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_PATH_KEY_CHARS = 64


Loc = tuple[str | int, ...]


class LimitExceeded(ValueError):
    """A value Herald cannot store; `loc` and `path` name where it is (`properties.a.b[3]`)."""

    def __init__(self, problem: str, loc: Loc = ()) -> None:
        self.problem, self.loc, self.path = problem, loc, join_path(loc)
        super().__init__(f"{self.path}: {problem}" if loc else problem)


class _Refused(Exception):
    """Raised deep in the walk; collects the path on its way out (no cost when nothing is refused)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.steps: list[str | int] = []


def storable(value: Any, loc: Loc = ()) -> Any:
    """`value` as Herald stores it (NUL and lone surrogates replaced, big numbers as text), or LimitExceeded.

    `loc` names `value` in error messages (`("batch", 2, "context")`); nesting is counted from `value`
    itself. The same object is returned when nothing needed changing.
    """
    try:
        return _walk(value, 1)
    except _Refused as refused:
        raise LimitExceeded(refused.problem, (*loc, *reversed(refused.steps))) from None
    except RecursionError:
        # Only reachable for Python objects built deeper than the interpreter's stack (JSON parsers stop earlier).
        raise LimitExceeded(f"nested more than {MAX_DEPTH} levels deep", loc) from None


def refuse_nul(text: str, what: str) -> str:
    """`text` unchanged, or ValueError (a 422 where a schema calls it): PostgreSQL cannot store U+0000.

    Nor a lone surrogate, which no UTF-8 encoder (orjson, asyncpg) writes: JSON carries one as `"\\ud800"`,
    Python's parser (FastAPI's) reads it, and only values pydantic types as `str` are refused on the way in.
    """
    if "\x00" in text:
        raise ValueError(f"{what} must not contain NUL (\\u0000)")
    if not text.isascii() and _SURROGATE.search(text):
        raise ValueError(f"{what} must not contain a lone UTF-16 surrogate, which is not Unicode")
    return text


def storable_string(value: str) -> str:
    """A string PostgreSQL and orjson accept: U+0000 and lone surrogates become U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = _SURROGATE.sub(REPLACEMENT, value)
    return value


def _number(value: int | float) -> int | float | str:
    """A number every reader sees alike: itself within +-(2^53 - 1), else its JSON text; NaN and infinities refused."""
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused("not a finite number")
        return repr(value)
    return str(value)


def readable(value: Any) -> Any:
    """A value already stored, made safe for every reader: numbers beyond +-(2^53 - 1) become their text.

    For rows written before the limits existed (a trait of 1e20 reads back from `jsonb` as an integer
    orjson cannot write). Does not refuse anything: what was stored is shown.
    """
    kind = type(value)
    if kind is dict:
        changed = {k: readable(v) for k, v in value.items()}
        return changed if any(changed[k] is not v for k, v in value.items()) else value
    if kind is list:
        items = [readable(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if kind is int or kind is float:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER or value != value:
            return value
        return repr(value) if kind is float else str(value)
    return value


def check_timestamp(value: datetime, loc: Loc) -> datetime:
    """`value` if it lies in [EARLIEST, LATEST), else LimitExceeded naming `loc`."""
    if not EARLIEST <= value < LATEST:
        window = f"{EARLIEST.date().isoformat()} to {LATEST.date().isoformat()}"
        raise LimitExceeded(f"{value.isoformat()} is outside {window}", loc)
    return value


def join_path(loc: Loc) -> str:
    """A location as a path: keys as `.key` (or `["odd key"]`), list indexes as `[3]`."""
    parts: list[str] = []
    for step in loc:
        if isinstance(step, int):
            parts.append(f"[{step}]")
            continue
        shown = step if len(step) <= _PATH_KEY_CHARS else step[:_PATH_KEY_CHARS] + "…"
        if _IDENTIFIER.fullmatch(shown):
            parts.append(f".{shown}" if parts else shown)
        else:
            parts.append("[" + _quoted(shown) + "]")
    return "".join(parts)


def _quoted(text: str) -> str:
    """`text` as a JSON string literal, with control characters escaped (safe in an error message)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def _walk(value: Any, depth: int) -> Any:
    """One value of a parsed JSON document, checked and (only where needed) normalized."""
    kind = type(value)
    if kind is dict:
        return _walk_object(value, depth)
    if kind is list:
        return _walk_array(value, depth)
    if _leaf_is_fine(value, kind):
        return value
    return _leaf(value, kind)


def _leaf_is_fine(value: Any, kind: type) -> bool:
    """Whether a scalar is stored as it is (the common case; the loops below inline this test)."""
    if kind is str:
        return "\x00" not in value and value.isascii()
    if kind is int or kind is float:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    return value is None or kind is bool


def _leaf(value: Any, kind: type) -> Any:
    """A scalar that may need changing: a non-ASCII or NUL-bearing string, a big number, or no JSON value."""
    if kind is str:
        return storable_string(value)
    if kind is int or kind is float:
        return _number(value)
    raise _Refused(f"not a JSON value ({kind.__name__})")


def _walk_object(value: dict[str, Any], depth: int) -> dict[str, Any]:
    """An object's members, copied only if one of its keys or values changes.

    The common scalars are tested inline: a function call per value would double the cost.
    """
    if depth > MAX_DEPTH:
        raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
    copy: dict[str, Any] | None = None
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            fine = item.isascii() and "\x00" not in item
        elif kind is int or kind is float:
            fine = -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER
        else:
            fine = item is None or kind is bool
        if fine and copy is None and key.__class__ is str and key.isascii() and "\x00" not in key:
            continue
        try:
            if type(key) is not str:
                raise _Refused("object keys must be strings")
            new_key = key if key.isascii() and "\x00" not in key else storable_string(key)
            new_item: Any
            if fine:
                new_item = item
            elif kind is dict:
                new_item = _walk_object(item, depth + 1)
            elif kind is list:
                new_item = _walk_array(item, depth + 1)
            else:
                new_item = _leaf(item, kind)
        except _Refused as refused:
            refused.steps.append(str(key))
            raise
        if copy is None:
            if new_item is item and new_key is key:
                continue
            copy = {}
            for done_key, done_item in value.items():
                if done_key is key:
                    break
                copy[done_key] = done_item
        if new_key in copy:
            raise _Refused(f"two keys are the same once U+0000 is replaced: {_quoted(new_key)}")
        copy[new_key] = new_item
    return value if copy is None else copy


def _walk_array(value: list[Any], depth: int) -> list[Any]:
    """An array's items, copied only if one of them changes (scalars tested inline, as above)."""
    if depth > MAX_DEPTH:
        raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
    copy: list[Any] | None = None
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str:
            fine = "\x00" not in item and item.isascii()
        elif kind is int or kind is float:
            fine = -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER
        else:
            fine = item is None or kind is bool
        if fine:
            if copy is not None:
                copy.append(item)
            continue
        new_item: Any
        try:
            if kind is dict:
                new_item = _walk_object(item, depth + 1)
            elif kind is list:
                new_item = _walk_array(item, depth + 1)
            else:
                new_item = _leaf(item, kind)
        except _Refused as refused:
            refused.steps.append(index)
            raise
        if copy is None and new_item is not item:
            copy = value[:index]
        if copy is not None:
            copy.append(new_item)
    return value if copy is None else copy
