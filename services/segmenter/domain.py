"""Pure segment rules: parse a filter tree (with precise errors) and compile it to SQL.

A filter is a tree of `all` / `any` / `not` over conditions:

- trait conditions, `{"trait": "city", "op": "eq", "value": "Berlin"}`;
- behaviour, `{"event": "Order Completed", "count": {"gte": 3}, "within_days": 30,
  "where": [{"property": "total", "op": "gt", "value": 50}]}`.

Semantics, chosen to match what a marketer reads: a condition on a missing trait is false, so
`neq` and `not` include users who lack the trait; `gt`/`gte`/`lt`/`lte` compare numbers with
numbers and strings with strings (ISO dates compare correctly as strings); `contains` is a
case-insensitive substring on strings and membership on arrays; `in` takes a list.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    ColumnElement,
    Numeric,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import KeyedColumnElement

from kernel.contracts import CONDITION_MAX_NAME_LENGTH, CONDITION_OPS, ProfileChanged, PropertyCondition
from services.profiles.views import segment_events, segment_profiles

OPS = CONDITION_OPS
ORDERED = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
MAX_DEPTH = 12
MAX_CONDITIONS = 100  # nodes of the tree and `where` conditions
# What a filter may cost, in comparisons: every profile change evaluates every segment of its
# workspace in one query, and each compiled filter is held per process. One comparison is one
# condition or one value of an `in` list (measured: ~0.25 ms to compile, ~2 KB held, ~0.03 ms per
# evaluation); an event condition is a correlated subquery, about ten times one comparison. 500 keeps
# a filter's evaluation near 15 ms and its compiled form near 1 MB (a 20,000-value list took 1 s and 37 MB).
MAX_COST = 500
EVENT_COST = 10
MAX_EVENT_COUNT = 1_000_000_000
MAX_WITHIN_DAYS = 3650
KEYS = {
    "all": {"all"},
    "any": {"any"},
    "not": {"not"},
    "trait": {"trait", "op", "value"},
    "event": {"event", "count", "within_days", "where"},
    "property": {"property", "op", "value"},
}


class FilterError(ValueError):
    """A filter that cannot be compiled, with where in the tree and why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Compare:
    key: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Performed:
    event: str
    gte: int | None
    lte: int | None
    within_days: int | None
    where: tuple[Compare, ...]


@dataclass(frozen=True)
class AllOf:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    child: "Node"


Node = AllOf | AnyOf | Not | Compare | Performed


@dataclass
class Budget:
    """What is left of a filter's allowance of conditions and comparisons while it is parsed."""

    conditions: int = MAX_CONDITIONS
    cost: int = MAX_COST

    def take_condition(self, path: str) -> None:
        """Count one condition (a node or a `where` condition) at `path`."""
        self.conditions -= 1
        if self.conditions < 0:
            raise FilterError(path, f"more than {MAX_CONDITIONS} conditions")

    def spend(self, path: str, cost: int) -> None:
        """Count `cost` comparisons at `path`."""
        self.cost -= cost
        if self.cost < 0:
            raise FilterError(
                path,
                f"the filter compiles to more than {MAX_COST} comparisons (each condition and each `in` value"
                f" is one, an event condition {EVENT_COST}); split it into segments or shorten its lists",
            )


def cost_of(compare: Compare) -> int:
    """How many comparisons a trait or property condition compiles to."""
    return len(compare.value) if compare.op == "in" else 1


def _brief(value: Any) -> str:
    """A client's value, short enough to quote in an error message."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:39] + "…"


def parse(obj: Any, path: str = "filter", depth: int = 0, budget: Budget | None = None) -> Node:
    """Parse and check a filter tree; raises FilterError naming the first problem."""
    budget = budget if budget is not None else Budget()
    if depth > MAX_DEPTH:
        raise FilterError(path, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(obj, dict):
        raise FilterError(path, "must be an object")
    budget.take_condition(path)
    kinds = [k for k in ("all", "any", "not", "trait", "event") if k in obj]
    if len(kinds) != 1:
        raise FilterError(path, "needs exactly one of `all`, `any`, `not`, `trait`, `event`")
    kind = kinds[0]
    _known_keys(obj, kind, path)
    if kind in ("all", "any"):
        items = obj[kind]
        if not isinstance(items, list) or not items:
            raise FilterError(f"{path}.{kind}", "must be a non-empty list")
        children = tuple(parse(c, f"{path}.{kind}[{i}]", depth + 1, budget) for i, c in enumerate(items))
        return AllOf(children) if kind == "all" else AnyOf(children)
    if kind == "not":
        return Not(parse(obj["not"], f"{path}.not", depth + 1, budget))
    if kind == "trait":
        compare = _parse_compare(obj, "trait", path)
        budget.spend(path, cost_of(compare))
        return compare
    return _parse_performed(obj, path, budget)


def _known_keys(obj: dict[str, Any], kind: str, path: str) -> None:
    """Refuse keys a condition does not take (a typo such as `within_day` would otherwise mean "ever")."""
    unknown = [k for k in obj if k not in KEYS[kind]]
    if unknown:
        raise FilterError(
            path, f"unknown key {_brief(unknown[0])}; a `{kind}` condition takes {', '.join(sorted(KEYS[kind]))}"
        )


def _parse_compare(obj: dict[str, Any], key_name: str, path: str) -> Compare:
    """A trait or property comparison, checked by the one condition grammar in the contracts."""
    key = obj.get(key_name)
    if not isinstance(key, str) or not key:
        raise FilterError(f"{path}.{key_name}", "must be a non-empty string")
    op = obj.get("op")
    if op not in OPS:
        raise FilterError(f"{path}.op", f"unknown operator {_brief(op)}; one of {', '.join(OPS)}")
    given = {"property": key, "op": op, **({"value": obj["value"]} if "value" in obj else {})}
    try:
        condition = PropertyCondition.model_validate(given)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = key_name if error["loc"] == ("property",) else "value"
        raise FilterError(f"{path}.{where}", error["msg"].removeprefix("Value error, ")) from exc
    return Compare(key, condition.op, condition.value)


def _count_bound(count: dict[str, Any], path: str) -> tuple[int | None, int | None]:
    allowed = {"gte", "gt", "lte", "lt", "eq"}
    unknown = set(count) - allowed
    if unknown or not count:
        shown = _brief(sorted(unknown)) if unknown else "nothing"
        raise FilterError(path, f"use gte, gt, lte, lt or eq (got {shown})")
    for k, v in count.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_EVENT_COUNT:
            raise FilterError(f"{path}.{k}", f"must be a whole number ≥ 0 and ≤ {MAX_EVENT_COUNT:,}")
    lows = [count["gte"]] if "gte" in count else []
    lows += [count["gt"] + 1] if "gt" in count else []
    highs = [count["lte"]] if "lte" in count else []
    highs += [count["lt"] - 1] if "lt" in count else []
    if "eq" in count:
        lows.append(count["eq"])
        highs.append(count["eq"])
    low, high = (max(lows) if lows else None), (min(highs) if highs else None)
    if low is not None and high is not None and low > high:
        raise FilterError(path, "no count satisfies these bounds")
    return low, high


def _parse_performed(obj: dict[str, Any], path: str, budget: Budget) -> Performed:
    event = obj.get("event")
    if not isinstance(event, str) or not event:
        raise FilterError(f"{path}.event", "must be a non-empty event name")
    if len(event) > CONDITION_MAX_NAME_LENGTH or "\x00" in event:
        raise FilterError(f"{path}.event", f"must be at most {CONDITION_MAX_NAME_LENGTH} characters, without NUL")
    budget.spend(path, EVENT_COST)
    count = obj.get("count", {"gte": 1})
    if not isinstance(count, dict):
        raise FilterError(f"{path}.count", "must be an object such as {\"gte\": 3}")
    low, high = _count_bound(count, f"{path}.count")
    within = obj.get("within_days")
    if within is not None and (
        isinstance(within, bool) or not isinstance(within, int) or not 1 <= within <= MAX_WITHIN_DAYS
    ):
        raise FilterError(
            f"{path}.within_days",
            f"must be a whole number of days ≥ 1 and ≤ {MAX_WITHIN_DAYS} (ten years); leave it out for all time",
        )
    where = obj.get("where", [])
    if not isinstance(where, list):
        raise FilterError(f"{path}.where", "must be a list of property conditions")
    parsed = []
    for i, w in enumerate(where):
        item = f"{path}.where[{i}]"
        budget.take_condition(item)
        if not isinstance(w, dict):
            raise FilterError(item, "must be an object")
        _known_keys(w, "property", item)
        compare = _parse_compare(w, "property", item)
        budget.spend(item, cost_of(compare))
        parsed.append(compare)
    return Performed(event, low, high, within, tuple(parsed))


# --- compilation ----------------------------------------------------------------------------


def _leaf(expr: ColumnElement[Any]) -> ColumnElement[bool]:
    # Two-valued logic: a missing or mistyped value makes a condition false, never NULL.
    return func.coalesce(expr, false())


def compare(doc: KeyedColumnElement[Any], c: Compare) -> ColumnElement[bool]:
    """One comparison on a JSONB document (traits or event properties)."""
    field = doc[c.key]
    kind = func.jsonb_typeof(field)
    if c.op == "exists":
        return _leaf(kind != "null")
    if c.op == "not_exists":
        return not_(_leaf(kind != "null"))
    if c.op == "eq":
        return _leaf(doc.contains({c.key: c.value}))
    if c.op == "neq":
        return not_(_leaf(doc.contains({c.key: c.value})))
    if c.op == "in":
        return or_(*(_leaf(doc.contains({c.key: v})) for v in c.value))
    if c.op == "contains":
        text_match = case(
            (kind == "string", field.astext.ilike(f"%{_escape_like(str(c.value))}%", escape="\\")),
            else_=None,
        )
        array_match = case((kind == "array", field.contains([c.value])), else_=None)
        return or_(_leaf(text_match), _leaf(array_match))
    method = ORDERED[c.op]
    if isinstance(c.value, str):
        typed = case((kind == "string", field.astext), else_=None)
        return _leaf(getattr(typed, method)(literal(c.value)))
    number = case((kind == "number", field.astext.cast(Numeric)), else_=None)
    return _leaf(getattr(number, method)(literal(c.value, Numeric)))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def compile_filter(node: Node, now: ColumnElement[Any] | None = None) -> ColumnElement[bool]:
    """The filter as a boolean SQL expression over `profiles.segment_profiles`."""
    now = now if now is not None else func.now()
    p = segment_profiles.c
    if isinstance(node, AllOf):
        return and_(true(), *(compile_filter(c, now) for c in node.children))
    if isinstance(node, AnyOf):
        return or_(false(), *(compile_filter(c, now) for c in node.children))
    if isinstance(node, Not):
        return not_(compile_filter(node.child, now))
    if isinstance(node, Compare):
        return compare(p.traits, node)
    e = segment_events.alias("e")
    conditions = [
        e.c.workspace_id == p.workspace_id,
        e.c.profile_id == p.profile_id,
        e.c.name == node.event,
        *(compare(e.c.properties, w) for w in node.where),
    ]
    if node.within_days:
        conditions.append(e.c.timestamp >= now - func.make_interval(0, 0, 0, node.within_days))
    matching = select(1).where(*conditions).correlate(segment_profiles)
    if node.gte in (None, 0, 1) and node.lte is None:
        return exists(matching) if node.gte == 1 else true()
    if node.lte == 0 and node.gte in (None, 0):
        return not_(exists(matching))
    counted = (
        select(func.count()).where(*conditions).correlate(segment_profiles).scalar_subquery()
    )
    bounds = []
    if node.gte is not None:
        bounds.append(counted >= node.gte)
    if node.lte is not None:
        bounds.append(counted <= node.lte)
    return and_(*bounds)


@dataclass(frozen=True)
class Reads:
    """What a filter's verdict depends on: the traits it reads and the events it counts."""

    traits: frozenset[str]
    events: frozenset[str]


def reads(node: Node) -> Reads:
    traits: set[str] = set()
    events: set[str] = set()
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Compare):
            traits.add(n.key)
        elif isinstance(n, Performed):
            events.add(n.event)
        elif isinstance(n, Not):
            stack.append(n.child)
        else:
            stack.extend(n.children)
    return Reads(frozenset(traits), frozenset(events))


def may_affect(filter_reads: Reads, change: ProfileChanged) -> bool:
    """Whether a profile change can change a filter's verdict for that profile.

    A new profile, a merge, or a change whose cause is not known may change anything; otherwise only a
    trait the filter reads, or an event it counts. (A count within a window also changes as time
    passes, with no change to the profile; that is not a change, and is not looked for here.)
    """
    if change.created or change.merged_profile_ids or change.event_name is None:
        return True
    return change.event_name in filter_reads.events or not filter_reads.traits.isdisjoint(change.changed_traits)
