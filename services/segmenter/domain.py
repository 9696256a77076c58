"""Pure segment rules: parse a filter tree (with precise errors), compile it to SQL, say what it reads.

A filter is a tree of `all` / `any` / `not` over conditions, each told apart by its key (the grammar
is kernel.contracts', docs/segments.md shows every shape):

- `{"trait": "city", "op": "eq", "value": "Berlin"}`, on traits, nested paths included
  (`address.city`, `products[].category`);
- `{"attribute": "country", "op": "eq", "value": "DE"}`, on the standard attributes;
- `{"computed": "last_seen", "op": "more_than_days_ago", "value": 30}`, on what the profile computes
  (first and last seen, sessions, purchases);
- `{"event": "Order Completed", "count": {"gte": 3}, "within_days": 30, "where": [...]}`, behaviour;
- `{"device": "ios", "where": [{"property": "push_enabled", "op": "eq", "value": true}]}`, devices;
- `{"near": {"lat": 52.52, "lon": 13.405, "km": 25}}`, the last known location;
- `{"active": {"days": ["sat", "sun"], "hours": {"from": 18, "to": 23}}}`, time of use.

Semantics, chosen to match what a marketer reads: a condition on a missing value is false, so `neq`
and `not` include users who lack it; comparisons mean the same here as in campaign triggers
(services/segmenter/conditions.py compiles and evaluates them both ways).
"""

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    ColumnElement,
    Date,
    Float,
    Numeric,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH

from kernel.contracts import (
    COMPUTED_FIELDS,
    CONDITION_KINDS,
    CONDITION_MAX_COUNT,
    CONDITION_MAX_WITHIN_DAYS,
    CONDITION_OPS,
    EARTH_RADIUS_KM,
    NEGATED_OPS,
    RELATIVE_DATE_OPS,
    SEGMENT_CONDITION,
    ActiveCondition,
    AttributeCondition,
    Comparison,
    ComputedCondition,
    DeviceCondition,
    EventCondition,
    NearCondition,
    ProfileChanged,
    SumBounds,
    TraitCondition,
    split_path,
)
from services.profiles.views import segment_activity_days, segment_devices, segment_events, segment_profiles
from services.segmenter.conditions import compile_comparison, json_text, key_of, leaf, now_param, time_sql

OPS = CONDITION_OPS
MAX_DEPTH = 12
MAX_CONDITIONS = 100  # nodes of the tree and `where` conditions
# What a filter may cost, in comparisons: every profile change evaluates every segment of its
# workspace in one query, and each compiled filter is held per process. One comparison is one
# condition or one value of an `in` list (measured: ~0.25 ms to compile, ~2 KB held, ~0.03 ms per
# evaluation); an event condition is a correlated subquery, about ten times one comparison. 500 keeps
# a filter's evaluation near 15 ms and its compiled form near 1 MB (a 20,000-value list took 1 s and 37 MB).
MAX_COST = 500
EVENT_COST = 10  # a correlated subquery: events, devices, the hour-of-week histogram
NEAR_COST = 2
MAX_EVENT_COUNT = CONDITION_MAX_COUNT
MAX_WITHIN_DAYS = CONDITION_MAX_WITHIN_DAYS
TREE_KEYS = ("all", "any", "not")
KINDS = (*TREE_KEYS, *CONDITION_KINDS)


class FilterError(ValueError):
    """A filter that cannot be compiled, with where in the tree and why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Compare:
    """A comparison on a document of the profile: `traits` or `attributes` (or an event's properties, in `where`)."""

    key: str
    op: str
    value: Any = None
    doc: str = "traits"


@dataclass(frozen=True)
class Performed:
    event: str
    gte: int | None
    lte: int | None
    within_days: int | None
    where: tuple[Compare, ...]
    total: SumBounds | None = None


@dataclass(frozen=True)
class AllOf:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    child: "Node"


# The other conditions are their contract models, which compile as they are.
Node = AllOf | AnyOf | Not | Compare | Performed | ComputedCondition | DeviceCondition | NearCondition | ActiveCondition


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


def cost_of(compare: Compare | Comparison | ComputedCondition) -> int:
    """How many comparisons a comparison compiles to."""
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
    kinds = [k for k in KINDS if k in obj]
    if len(kinds) != 1:
        raise FilterError(path, f"needs exactly one of {', '.join(f'`{k}`' for k in KINDS)}")
    kind = kinds[0]
    if kind in TREE_KEYS:
        unknown = [k for k in obj if k != kind]
        if unknown:
            raise FilterError(path, f"unknown key {_brief(unknown[0])}; an `{kind}` node takes only `{kind}`")
    if kind in ("all", "any"):
        items = obj[kind]
        if not isinstance(items, list) or not items:
            raise FilterError(f"{path}.{kind}", "must be a non-empty list")
        children = tuple(parse(c, f"{path}.{kind}[{i}]", depth + 1, budget) for i, c in enumerate(items))
        return AllOf(children) if kind == "all" else AnyOf(children)
    if kind == "not":
        return Not(parse(obj["not"], f"{path}.not", depth + 1, budget))
    where = obj.get("where")
    if isinstance(where, list):  # counted before they are validated: a list of thousands stops at the limit
        for i in range(len(where)):
            budget.take_condition(f"{path}.where[{i}]")
        budget.conditions += len(where)
    condition = _validated(obj, path)
    return _node(condition, path, budget)


def _validated(obj: dict[str, Any], path: str) -> Any:
    """The condition as its contract model; FilterError at the first field it refuses."""
    try:
        return SEGMENT_CONDITION.validate_python(obj)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = error["loc"][1:]  # the first is the condition's kind
        where = path + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
        raise FilterError(where, error["msg"].removeprefix("Value error, ")) from None


def _node(condition: Any, path: str, budget: Budget) -> Node:
    """The compiled form of a validated condition, its cost counted."""
    if isinstance(condition, (TraitCondition, AttributeCondition)):
        doc = "traits" if isinstance(condition, TraitCondition) else "attributes"
        compare = Compare(condition.name, condition.op, condition.value, doc)
        budget.spend(path, cost_of(compare))
        return compare
    if isinstance(condition, ComputedCondition):
        budget.spend(path, cost_of(condition))
        if condition.within_days is not None:  # a subquery over the days, like an event condition's
            budget.spend(path, EVENT_COST)
        return condition
    if isinstance(condition, EventCondition):
        budget.spend(path, EVENT_COST)
        where = []
        for i, w in enumerate(condition.where):
            budget.take_condition(f"{path}.where[{i}]")
            compare = Compare(w.name, w.op, w.value)
            budget.spend(f"{path}.where[{i}]", cost_of(compare))
            where.append(compare)
        counted = condition.sum is None or "count" in condition.model_fields_set
        low, high = (condition.count.low, condition.count.high) if counted else (None, None)
        if condition.sum is not None:
            budget.spend(path, EVENT_COST)
        return Performed(condition.event, low, high, condition.within_days, tuple(where), condition.sum)
    if isinstance(condition, DeviceCondition):
        budget.spend(path, EVENT_COST)
        for i, w in enumerate(condition.where):
            budget.take_condition(f"{path}.where[{i}]")
            budget.spend(f"{path}.where[{i}]", cost_of(w))
        return condition
    if isinstance(condition, NearCondition):
        budget.spend(path, NEAR_COST)
        return condition
    assert isinstance(condition, ActiveCondition)
    budget.spend(path, EVENT_COST)
    return condition


# --- compilation ----------------------------------------------------------------------------

COMPUTED_COLUMNS = {
    "first_seen": segment_profiles.c.first_seen,
    "last_seen": segment_profiles.c.last_seen,
    "sessions.count": segment_profiles.c.session_count,
    "sessions.first": segment_profiles.c.first_session,
    "sessions.last": segment_profiles.c.last_session,
    "purchases.count": segment_profiles.c.purchase_count,
    "purchases.revenue": segment_profiles.c.revenue,
    "purchases.first": segment_profiles.c.first_purchase,
    "purchases.last": segment_profiles.c.last_purchase,
}


def compile_filter(node: Node, now: ColumnElement[Any] | None = None) -> ColumnElement[bool]:
    """The filter as a boolean SQL expression over `profiles.segment_profiles`.

    "Now" is `conditions.now_param()` unless given: the clock when the statement runs, or the time
    passed with it as `conditions.NOW_PARAM`.
    """
    now = now if now is not None else now_param()
    p = segment_profiles.c
    if isinstance(node, AllOf):
        return and_(true(), *(compile_filter(c, now) for c in node.children))
    if isinstance(node, AnyOf):
        return or_(false(), *(compile_filter(c, now) for c in node.children))
    if isinstance(node, Not):
        return not_(compile_filter(node.child, now))
    if isinstance(node, Compare):
        return compile_comparison(p.traits if node.doc == "traits" else p.attributes, node.key, node.op, node.value, now)
    if isinstance(node, ComputedCondition):
        return _computed(node, now)
    if isinstance(node, DeviceCondition):
        return _device(node, now)
    if isinstance(node, NearCondition):
        return _near(node)
    if isinstance(node, ActiveCondition):
        return _active(node)
    e = segment_events.alias("e")
    where = [
        e.c.workspace_id == p.workspace_id,
        e.c.profile_id == p.profile_id,
        e.c.name == node.event,
        *(compile_comparison(e.c.properties, w.key, w.op, w.value, now) for w in node.where),
    ]
    if node.within_days:
        where.append(e.c.timestamp >= now - func.make_interval(0, 0, 0, node.within_days))
    counted = _counted(where, node.gte, node.lte)
    if node.total is None:
        return counted
    return and_(counted, _summed(e, where, node.total))


def _summed(e: Any, where: list[ColumnElement[bool]], bounds: SumBounds) -> ColumnElement[bool]:
    """A property added up over the matching events (numbers only; none is 0), within its bounds."""
    field = e.c.properties
    for step in split_path(bounds.property):
        field = key_of(field, step.key)
    if len(split_path(bounds.property)) > 1:  # a key of exactly that name first, as comparisons read it
        field = case(
            (e.c.properties.has_key(bounds.property), key_of(e.c.properties, bounds.property)), else_=field
        )
    number = case((func.jsonb_typeof(field) == "number", cast(json_text(field), Numeric)), else_=None)
    total = select(func.coalesce(func.sum(number), 0)).where(*where).correlate(segment_profiles).scalar_subquery()
    checks = [
        getattr(total, method)(literal(bound, Numeric))
        for method, bound in (("__ge__", bounds.gte), ("__gt__", bounds.gt), ("__le__", bounds.lte), ("__lt__", bounds.lt))
        if bound is not None
    ]
    return and_(*checks)


def _counted(where: list[ColumnElement[bool]], low: int | None, high: int | None) -> ColumnElement[bool]:
    """How many rows of a correlated subquery match, within [low, high] (EXISTS where that is all it asks)."""
    matching = select(1).where(*where).correlate(segment_profiles)
    if low in (None, 0, 1) and high is None:
        return exists(matching) if low == 1 else true()
    if high == 0 and low in (None, 0):
        return not_(exists(matching))
    counted = select(func.count()).where(*where).correlate(segment_profiles).scalar_subquery()
    bounds = []
    if low is not None:
        bounds.append(counted >= low)
    if high is not None:
        bounds.append(counted <= high)
    return and_(*bounds)


def _computed(node: ComputedCondition, now: ColumnElement[Any]) -> ColumnElement[bool]:
    """A comparison on a typed column of the profile (a time or a number), or on a count over the last days."""
    positive = NEGATED_OPS.get(node.op)
    if positive is not None:
        return not_(_computed_holds(node.computed, positive, node.value, now, node.within_days))
    return _computed_holds(node.computed, node.op, node.value, now, node.within_days)


# What a windowed count adds up, per day (profiles' `segment_activity_days`).
WINDOWED_COLUMNS = {
    "sessions.count": segment_activity_days.c.sessions,
    "purchases.count": segment_activity_days.c.purchases,
    "purchases.revenue": segment_activity_days.c.revenue,
}


def _windowed(name: str, days: int, now: ColumnElement[Any]) -> ColumnElement[Any]:
    """The sum of a per-day count over the last `days` UTC calendar days, today included (0 without activity)."""
    a = segment_activity_days
    today = cast(func.timezone("UTC", now), Date)
    total = select(func.coalesce(func.sum(WINDOWED_COLUMNS[name]), 0)).where(
        a.c.workspace_id == segment_profiles.c.workspace_id, a.c.profile_id == segment_profiles.c.profile_id,
        a.c.day > today - days,
    )
    return total.correlate(segment_profiles).scalar_subquery()


def _computed_holds(
    name: str, op: str, value: Any, now: ColumnElement[Any], within_days: int | None = None
) -> ColumnElement[bool]:
    column_: ColumnElement[Any] = COMPUTED_COLUMNS[name] if within_days is None else _windowed(name, within_days, now)
    if op == "exists":
        return column_.is_not(None)
    if COMPUTED_FIELDS[name] == "time":
        return leaf(time_sql(column_, op, value, now))
    number = cast(column_, Numeric)
    if op == "in":
        return leaf(or_(false(), *(number == literal(v, Numeric) for v in value if v is not None)))
    method = {"eq": "__eq__", "gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}[op]
    return leaf(getattr(number, method)(literal(value, Numeric)))


def _device(node: DeviceCondition, now: ColumnElement[Any]) -> ColumnElement[bool]:
    """How many of the profile's devices are of the platform, seen in the window, with the fields asked."""
    p = segment_profiles.c
    d = segment_devices.alias("d")
    where = [d.c.workspace_id == p.workspace_id, d.c.profile_id == p.profile_id]
    if node.device != "any":
        where.append(d.c.platform == node.device)
    if node.within_days:
        where.append(d.c.last_seen >= now - func.make_interval(0, 0, 0, node.within_days))
    for w in node.where:
        # The field as a one-key document, so that a device's fields compare as every other value does.
        doc = func.jsonb_build_object(w.name, d.c[w.name], type_=JSONB)
        where.append(compile_comparison(doc, w.name, w.op, w.value, now))
    return _counted(where, node.count.low, node.count.high)


def _degrees(doc: ColumnElement[Any], key: str) -> ColumnElement[Any]:
    field = doc[key]
    return case((func.jsonb_typeof(field) == "number", cast(field.astext, Float)), else_=None)


def _near(node: NearCondition) -> ColumnElement[bool]:
    """The great-circle (haversine) distance from the `location` attribute to the point, within the radius."""
    location = segment_profiles.c.attributes["location"]
    lat_degrees, lon_degrees = _degrees(location, "lat"), _degrees(location, "lon")
    lat, lon = func.radians(lat_degrees), func.radians(lon_degrees)
    lat0, lon0 = func.radians(literal(node.near.lat, Float)), func.radians(literal(node.near.lon, Float))
    half = func.power(func.sin((lat - lat0) / 2), 2) + func.cos(lat) * func.cos(lat0) * func.power(func.sin((lon - lon0) / 2), 2)
    # least() keeps asin's argument in its domain against rounding (and would skip a NULL: hence the case).
    distance = 2 * EARTH_RADIUS_KM * func.asin(func.least(1.0, func.sqrt(half)))
    # No point further in latitude than the radius can be within it. One jsonpath test rules out most
    # profiles by that, and profiles with no usable location, before the location is read out for the
    # trigonometry (each read of a JSON value costs about as much as that test).
    band = node.near.km / (EARTH_RADIUS_KM * math.pi / 180) + 1e-9
    low, high = node.near.lat - band, node.near.lat + band
    in_band = segment_profiles.c.attributes.op("@?")(cast(literal(
        f'strict $.location ? (@.lat >= {low:.9f} && @.lat <= {high:.9f} && @.lon.type() == "number")'
    ), JSONPATH))
    return leaf(case((in_band, distance <= node.near.km), else_=None))


HOURS_OF_WEEK = 168


def _runs(cells: tuple[int, ...]) -> str:
    """Cells as jsonpath array subscripts, consecutive ones as ranges: `138 to 142, 162 to 166`."""
    runs: list[list[int]] = []
    for cell in cells:
        if runs and cell == runs[-1][1] + 1:
            runs[-1][1] = cell
        else:
            runs.append([cell, cell])
    return ", ".join(f"{a} to {b}" if a != b else str(a) for a, b in runs)


def _cells_sum(hours: ColumnElement[Any], cells: tuple[int, ...]) -> ColumnElement[Any]:
    """The session starts in these cells of the histogram; NULL if it has none or it is not an array of numbers."""
    # One jsonpath expression adding the cells: the histogram is decompressed once per profile (one `->`
    # per cell decompresses it each time, three times slower); errors (a cell missing or not a number)
    # are silenced into NULL.
    path = "strict " + " + ".join(f"$[{cell}]" for cell in cells)
    found = func.jsonb_path_query_first(hours, cast(literal(path), JSONPATH), cast(literal("{}"), JSONB), true())
    return cast(found, Numeric)


def _active(node: ActiveCondition) -> ColumnElement[bool]:
    """Session starts in the chosen hours of the week, from the profile's histogram (each in the time zone of
    its session). The histogram adds up to the session count (the profiles service keeps them together),
    so a share divides by `session_count`, and a choice of more than half the week adds the other cells
    and subtracts: at most 84 cells are added per profile."""
    p = segment_profiles.c
    when = node.active
    cells = when.cells
    if when.share is None:
        low = 1 if when.sessions is None else when.sessions.low
        high = None if when.sessions is None else when.sessions.high
        if low in (None, 0) and high is None:
            return true()
        # "Any session in these hours" (the default) or "none": one existence test, cost independent of the hours.
        started = leaf(p.session_hours.op("@?")(cast(literal(f"strict $[{_runs(cells)}] ? (@ > 0)"), JSONPATH)))
        if low == 1 and high is None:
            return started
        if high == 0:
            return not_(started)
    if len(cells) == HOURS_OF_WEEK:
        chosen: ColumnElement[Any] = cast(p.session_count, Numeric)
    elif len(cells) <= HOURS_OF_WEEK // 2:
        chosen = func.coalesce(_cells_sum(p.session_hours, cells), 0)
    else:
        others = tuple(c for c in range(HOURS_OF_WEEK) if c not in set(cells))
        chosen = p.session_count - func.coalesce(_cells_sum(p.session_hours, others), 0)
    bounds: list[ColumnElement[bool]] = []
    if when.share is not None:
        share = chosen / func.nullif(p.session_count, 0)
        if when.share.gte is not None:
            bounds.append(share >= when.share.gte)
        if when.share.lte is not None:
            bounds.append(share <= when.share.lte)
    else:
        assert when.sessions is not None
        if when.sessions.low is not None:
            bounds.append(chosen >= when.sessions.low)
        if when.sessions.high is not None:
            bounds.append(chosen <= when.sessions.high)
    return leaf(and_(true(), *bounds))


@dataclass(frozen=True)
class Reads:
    """What a filter's verdict depends on: the traits and standard attributes it reads, the events it
    counts, the other parts of the profile it reads (`devices`, `sessions`, `purchases`, `first_seen`,
    `last_seen`), and whether it reads the clock (then time passing alone changes it: see the sweep)."""

    traits: frozenset[str]
    events: frozenset[str]
    attributes: frozenset[str] = frozenset()
    parts: frozenset[str] = frozenset()
    time: bool = False


def _names(key: str) -> set[str]:
    """The keys of a document a name reads: itself (as one key) and, for a path, its first step."""
    return {key, split_path(key)[0].key}


def reads(node: Node) -> Reads:
    traits: set[str] = set()
    events: set[str] = set()
    attributes: set[str] = set()
    parts: set[str] = set()
    time = False
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Compare):
            if n.doc == "traits":
                traits.update(_names(n.key))
            else:
                attributes.add(split_path(n.key)[0].key)
            time = time or n.op in RELATIVE_DATE_OPS
        elif isinstance(n, Performed):
            events.add(n.event)
            time = time or bool(n.within_days) or any(w.op in RELATIVE_DATE_OPS for w in n.where)
        elif isinstance(n, ComputedCondition):
            parts.add(n.computed.split(".")[0])
            time = time or n.op in RELATIVE_DATE_OPS or n.within_days is not None  # a window slides with time
        elif isinstance(n, DeviceCondition):
            parts.add("devices")
            time = time or bool(n.within_days) or any(w.op in RELATIVE_DATE_OPS for w in n.where)
        elif isinstance(n, NearCondition):
            attributes.add("location")
        elif isinstance(n, ActiveCondition):
            parts.add("sessions")
        elif isinstance(n, Not):
            stack.append(n.child)
        else:
            stack.extend(n.children)
    return Reads(frozenset(traits), frozenset(events), frozenset(attributes), frozenset(parts), time)


def may_affect(filter_reads: Reads, change: ProfileChanged) -> bool:
    """Whether a profile change can change a filter's verdict for that profile.

    A new profile, a merge, or a change whose cause is not known may change anything; otherwise only a
    trait or standard attribute the filter reads, an event it counts, or another part of the profile
    it reads (when the change does not say which parts it wrote, any may have changed). Time passing
    changes verdicts with no change to the profile: that is the sweep's, not looked for here.
    """
    if change.created or change.merged_profile_ids or change.event_name is None:
        return True
    if change.event_name in filter_reads.events or not filter_reads.traits.isdisjoint(change.changed_traits):
        return True
    if not filter_reads.attributes.isdisjoint(change.changed_attributes):
        return True
    if filter_reads.parts:
        return change.changed_parts is None or not filter_reads.parts.isdisjoint(change.changed_parts)
    return False

