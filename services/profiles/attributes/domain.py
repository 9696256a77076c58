"""Custom attributes as pure rules: Braze's operations on traits, their order, and each value's inferred type.

A trait sent as `{"inc": n}`, `{"add": [...]}` or `{"remove": [...]}` is an *operation* on the trait's
value; anything else (null included) *sets* it. The profile's rules hold for both, so profiles converge
whatever order events arrive in:

- A set is last-writer-wins on the event's timestamp, as before; `null` removes the trait (its time is
  kept, so an older set arriving late does not bring it back).
- An operation applies on top of the newest set that is not newer than it. A profile keeps, per trait,
  the set's value (`base`) and the operations since it (`ops`, each with its time and message id), and the
  trait's value is the base with the operations applied in (time, message id) order. So a late set
  drops the operations older than itself and keeps the newer ones, and `add` then `remove` of one
  element means the same in any arrival order. A redelivered event is never applied twice: the profiles
  service de-duplicates every event by its message id before applying it, so an `inc` counts once.
- At most MAX_OPS operations are kept per trait; older ones are folded into the base. An operation
  arriving later that is older than the folded ones is applied to the base (exact for `inc`, which
  commutes; an `add` or `remove` then acts as if it came just after them), and a set older than them
  is ignored as an older set is: the horizon of late sets is a trait's last MAX_OPS operations. A merge
  keeps both profiles' operations since the winning set; what the losing side had folded counts only
  through its base.
- Arrays (a set one or the result of `add`) hold at most ARRAY_CAP elements: a longer set keeps its first
  ARRAY_CAP, an `add` past the cap drops the oldest elements; either is reported as a warning.
- An operation of the wrong shape (`inc` of a non-number, `add` of a non-list, `inc` on a text trait,
  `add` on a number) is ignored and reported; the rest of the event still applies.
"""

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

OPERATIONS = ("inc", "add", "remove")
ARRAY_CAP = 100  # elements of an array trait (Braze's default is 25, configurable up to 100)
MAX_OPS = 16  # operations kept per trait for late sets
# Problem codes (the `reason` of a listed rejection and of the ignored-values counter).
WRONG_TYPE_OPERATION = "wrong_type_operation"
ARRAY_TRUNCATED = "array_truncated"

AttributeType = Literal["string", "number", "boolean", "date", "array", "object"]
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?")
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Problem:
    """A value an event carried that was left out or cut, and where."""

    reason: str
    trait: str
    message: str


@dataclass(slots=True)
class Outcome:
    """What applying an identify's traits did: the traits whose value changed, and what was left out."""

    changed: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def operation(value: Any) -> tuple[str, Any] | None:
    """The operation a trait's value asks for (`{"inc": 2}` -> ("inc", 2)), or None for a plain value."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind in OPERATIONS:
            return kind, arg
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shape_problem(kind: str, arg: Any, current: Any) -> str | None:
    """Why this operation cannot apply to this trait's current value (None: it can)."""
    if kind == "inc":
        if not _number(arg):
            return f"inc takes a number, not {type_name(arg)}"
        if current is not _ABSENT and current is not None and not _number(current):
            return f"inc on a {type_name(current)} trait"
        return None
    if not isinstance(arg, list):
        return f"{kind} takes an array, not {type_name(arg)}"
    if current is not _ABSENT and current is not None and not isinstance(current, list):
        return f"{kind} on a {type_name(current)} trait"
    return None


def type_name(value: Any) -> str:
    """A JSON value's type as the catalogue and problems name it."""
    return "null" if value is None else infer_type(value)


def infer_type(value: Any) -> AttributeType:
    """The type of a (non-null) trait value: boolean, number, date (ISO 8601 text), string, array or object."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "date" if _DATE.fullmatch(value) and _is_date(value) else "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _apply_one(value: Any, kind: str, arg: Any) -> tuple[Any, bool]:
    """An operation applied to a value (_ABSENT: none yet); (the new value, whether an array was cut)."""
    if kind == "inc":
        return (value if _number(value) else 0) + arg, False
    items = list(value) if isinstance(value, list) else []
    if kind == "add":
        for element in arg:
            if element not in items:
                items.append(element)
        if len(items) > ARRAY_CAP:
            return items[-ARRAY_CAP:], True  # the oldest elements go first
        return items, False
    return [element for element in items if element not in arg], False


def _fold(base: Any, ops: list[list[Any]]) -> Any:
    """The value of a trait: its base with the operations applied in order (_ABSENT if none)."""
    value = base
    for _at, _id, kind, arg in ops:
        if _shape_problem(kind, arg, value) is None:
            value, _ = _apply_one(value, kind, arg)
    return value


def _cut(name: str, value: Any, problems: list[Problem]) -> Any:
    if isinstance(value, list) and len(value) > ARRAY_CAP:
        problems.append(Problem(ARRAY_TRUNCATED, name, f"an array of {len(value)} elements keeps its first {ARRAY_CAP}"))
        return value[:ARRAY_CAP]
    return value


def apply(
    traits: dict[str, Any],
    times: dict[str, str],
    pending: dict[str, dict[str, Any]],
    incoming: dict[str, Any],
    at: datetime,
    message_id: str,
) -> Outcome:
    """Apply an identify's traits (sets and operations) in place; see the module's rules.

    `times` holds each trait's set time (ISO text); `pending` the base and operations of traits that
    have operations since their last set.
    """
    stamp = at.isoformat()
    out = Outcome()
    for name, value in incoming.items():
        op = operation(value)
        before = traits.get(name, _ABSENT)
        if op is None:
            value = _cut(name, value, out.problems)
            previous = times.get(name)
            if previous is not None and (
                previous > stamp or (previous == stamp and repr(_base(traits, pending, name)) >= repr(value))
            ):
                continue
            if stamp <= pending.get(name, {}).get("folded", ""):
                continue  # older than operations already folded into the base: past the horizon, like an older set
            times[name] = stamp
            state = pending.pop(name, None)
            later = [o for o in state["ops"] if o[0] >= stamp] if state else []
            if later:
                pending[name] = _state(_ABSENT if value is None else value, later)
            _settle(traits, name, _fold(_ABSENT if value is None else value, later))
        else:
            kind, arg = op
            previous = times.get(name)
            if previous is not None and stamp < previous:
                continue  # older than the trait's newest set: that set already decided the value
            state = pending.get(name)
            base = _from_state(state) if state else before
            ops = list(state["ops"]) if state else []
            folded = state.get("folded", "") if state else ""
            current = _fold(base, ops)
            if (why := _shape_problem(kind, arg, current)) is not None:
                out.problems.append(Problem(WRONG_TYPE_OPERATION, name, why))
                continue
            if stamp < folded:  # older than operations folded into the base: applied to it (exact for inc)
                base = _fold(base, [[stamp, message_id, kind, arg]])
            else:
                ops.append([stamp, message_id, kind, arg])
                ops.sort(key=lambda o: (o[0], o[1]))
            while len(ops) > MAX_OPS:  # fold the oldest into the base
                oldest = ops.pop(0)
                base = _fold(base, [oldest])
                folded = max(folded, oldest[0])
            pending[name] = _state(base, ops, folded)
            value = _fold(base, ops)
            if _apply_one(current, kind, arg)[1]:
                out.problems.append(Problem(ARRAY_TRUNCATED, name, f"adding passed {ARRAY_CAP} elements: the oldest were dropped"))
            _settle(traits, name, value)
        if traits.get(name, _ABSENT) != before or (name in traits) != (before is not _ABSENT):
            out.changed.append(name)
    return out


def _state(base: Any, ops: list[list[Any]], folded: str = "") -> dict[str, Any]:
    """A trait's pending state: its base (absent: none), the operations since, and the time of the newest
    operation folded into the base (late sets older than it are ignored; late operations apply to the base)."""
    state: dict[str, Any] = {"ops": ops} if base is _ABSENT else {"base": base, "ops": ops}
    if folded:
        state["folded"] = folded
    return state


def _from_state(state: dict[str, Any]) -> Any:
    return state.get("base", _ABSENT)


def _base(traits: dict[str, Any], pending: dict[str, dict[str, Any]], name: str) -> Any:
    """The value of a trait's newest set (what a tie between two sets compares)."""
    if name in pending:
        base = _from_state(pending[name])
        return None if base is _ABSENT else base
    return traits.get(name)


def _settle(traits: dict[str, Any], name: str, value: Any) -> None:
    if value is _ABSENT or value is None:
        traits.pop(name, None)
    else:
        traits[name] = value


def merge(
    traits: dict[str, Any],
    times: dict[str, str],
    pending: dict[str, dict[str, Any]],
    other_traits: dict[str, Any],
    other_times: dict[str, str],
    other_pending: dict[str, dict[str, Any]],
) -> list[str]:
    """Fold the operations of another profile's traits into this one's (after their sets were merged by time).

    For every trait either profile has operations on, the value is the winning set's base with the
    operations of both newer than it applied in order; returns the traits whose value changed.
    """
    changed = []
    for name in sorted(set(pending) | set(other_pending)):
        mine, theirs = pending.get(name), other_pending.get(name)
        stamp = times.get(name, "")
        # merge_traits already chose the newer set: its base is whichever profile's set time won.
        if other_times.get(name, "") == stamp and name in other_times:
            base = _from_state(theirs) if theirs else other_traits.get(name, _ABSENT)
        else:
            base = _from_state(mine) if mine else traits.get(name, _ABSENT)
        seen: set[str] = set()
        ops = []
        for op in sorted([*(mine or {}).get("ops", []), *(theirs or {}).get("ops", [])], key=lambda o: (o[0], o[1])):
            if op[0] >= stamp and op[1] not in seen:
                seen.add(op[1])
                ops.append(op)
        folded = max((mine or {}).get("folded", ""), (theirs or {}).get("folded", ""))
        while len(ops) > MAX_OPS:
            oldest = ops.pop(0)
            base = _fold(base, [oldest])
            folded = max(folded, oldest[0])
        before = traits.get(name, _ABSENT)
        pending[name] = _state(base, ops, folded)
        _settle(traits, name, _fold(base, ops))
        if traits.get(name, _ABSENT) != before:
            changed.append(name)
    return changed


# --- the catalogue ------------------------------------------------------------------------------

EXAMPLES_KEPT = 3  # example values per attribute
MAX_EXAMPLE_CHARS = 200  # an example longer than this, as JSON, is cut (text) or left out (arrays, objects)
REFRESH_SECONDS = 600.0  # an attribute seen again is written again at most this often per replica
MAX_REMEMBERED = 100_000  # attributes a replica remembers having written (then it forgets them all)


@dataclass(frozen=True, slots=True)
class Sighting:
    """An attribute as events showed it: its (newest) type, the first and last event's times, an example (None: none)."""

    type: AttributeType
    first: datetime
    last: datetime
    example: Any

    def with_(self, other: "Sighting") -> "Sighting":
        """Both sightings as one: the newer's type and example, the earlier first and the later last time."""
        newer = other if other.last >= self.last else self
        return Sighting(newer.type, min(self.first, other.first), max(self.last, other.last),
                        newer.example if newer.example is not None else (self.example if newer is other else other.example))


def sightings(incoming: dict[str, Any], at: datetime) -> dict[str, Sighting]:
    """What an identify's traits show of each attribute (null, a removal, shows none)."""
    seen = {}
    for name, value in incoming.items():
        if value is None:
            continue
        op = operation(value)
        if op is not None:
            kind, arg = op
            if kind == "inc" and _number(arg):
                seen[name] = Sighting("number", at, at, None)
            elif kind != "inc" and isinstance(arg, list):
                seen[name] = Sighting("array", at, at, None)
            continue
        seen[name] = Sighting(infer_type(value), at, at, _example(value))
    return seen


def _example(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_EXAMPLE_CHARS]
    if isinstance(value, (list, dict)) and len(repr(value)) > MAX_EXAMPLE_CHARS:
        return None
    return value


class Remembered:
    """Which attributes this replica wrote to the catalogue, of which type and when, so that an attribute
    seen on every event is written on first sight, on a type change, and then at most every REFRESH_SECONDS."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], tuple[AttributeType, float]] = {}

    def due(self, workspace_id: str, name: str, kind: AttributeType, now: float) -> bool:
        """Whether this sighting should be written (and, if so, remember it as written now)."""
        key = (workspace_id, name)
        known = self.written.get(key)
        if known is not None and known[0] == kind and now - known[1] < REFRESH_SECONDS:
            return False
        if len(self.written) >= MAX_REMEMBERED:
            self.written.clear()
        self.written[key] = (kind, now)
        return True

    def forget(self, workspace_id: str, names: list[str]) -> None:
        """Forget these (their write was rolled back): the next sighting writes them."""
        for name in names:
            self.written.pop((workspace_id, name), None)
