"""Custom attributes' operations as pure rules: order-independence, sets, caps, removals, types, merges."""

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from services.profiles.attributes import domain as ops

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def run(events: list[tuple[dict[str, Any], float, str]]) -> tuple[dict[str, Any], list[ops.Problem]]:
    traits: dict[str, Any] = {}
    times: dict[str, str] = {}
    pending: dict[str, dict[str, Any]] = {}
    problems: list[ops.Problem] = []
    for incoming, hours, message_id in events:
        problems += ops.apply(traits, times, pending, incoming, T0 + timedelta(hours=hours), message_id).problems
    return traits, problems


def test_any_arrival_order_ends_the_same() -> None:
    events = [({"n": {"inc": 1}}, 1, "a"), ({"n": {"inc": 2}}, 3, "b"), ({"n": 10}, 2, "c"),
              ({"s": {"add": ["x", "y"]}}, 1, "d"), ({"s": {"remove": ["x"]}}, 3, "e"), ({"s": {"add": ["x"]}}, 2, "f"),
              ({"gone": "v"}, 1, "g"), ({"gone": None}, 2, "h")]
    outcomes = {repr(sorted(run(list(order))[0].items())) for order in itertools.permutations(events[:6])}
    assert len(outcomes) == 1
    traits, _ = run(events)
    assert traits == {"n": 12, "s": ["y"]}  # 10 at 02:00, + 2 at 03:00 (the 01:00 inc is older than the set)


def test_add_is_a_set_and_remove_takes_every_copy() -> None:
    traits, _ = run([({"s": ["a", "a", "b"]}, 0, "a"), ({"s": {"add": ["b", "c", "c"]}}, 1, "b"), ({"s": {"remove": ["a"]}}, 2, "c")])
    assert traits == {"s": ["b", "c"]}


def test_an_array_is_capped_with_a_warning() -> None:
    traits, problems = run([({"s": list(range(ops.ARRAY_CAP + 3))}, 0, "a")])
    assert traits["s"] == list(range(ops.ARRAY_CAP)) and [p.reason for p in problems] == [ops.ARRAY_TRUNCATED]
    traits, problems = run([({"s": list(range(ops.ARRAY_CAP))}, 0, "a"), ({"s": {"add": ["new"]}}, 1, "b")])
    assert traits["s"] == [*range(1, ops.ARRAY_CAP), "new"] and [p.reason for p in problems] == [ops.ARRAY_TRUNCATED]


def test_wrong_typed_operations_are_left_out_and_named() -> None:
    traits, problems = run([({"t": "text", "n": 1}, 0, "a"),
                            ({"t": {"inc": 1}, "n": {"add": [1]}, "u": {"inc": "1"}, "v": {"remove": 3}, "w": {"inc": True}}, 1, "b")])
    assert traits == {"t": "text", "n": 1}
    assert sorted((p.trait, p.reason) for p in problems) == [(name, ops.WRONG_TYPE_OPERATION) for name in "ntuvw"]


def test_an_object_with_another_key_is_a_value_not_an_operation() -> None:
    traits, _ = run([({"o": {"inc": 1, "by": 2}, "p": {"add": 1, "x": 0}}, 0, "a")])
    assert traits == {"o": {"inc": 1, "by": 2}, "p": {"add": 1, "x": 0}}


def test_many_operations_fold_into_the_base_and_keep_their_sum() -> None:
    events = [({"n": {"inc": 1}}, i, f"m{i:03d}") for i in range(ops.MAX_OPS * 3)]
    random.Random(3).shuffle(events)
    traits: dict[str, Any] = {}
    times: dict[str, str] = {}
    pending: dict[str, dict[str, Any]] = {}
    for incoming, hours, message_id in events:
        ops.apply(traits, times, pending, incoming, T0 + timedelta(hours=hours), message_id)
    assert traits["n"] == ops.MAX_OPS * 3  # every inc counted once, in any order
    assert len(pending["n"]["ops"]) <= ops.MAX_OPS


def test_a_merge_keeps_both_sides_operations_once() -> None:
    mine: tuple[dict[str, Any], dict[str, str], dict[str, dict[str, Any]]] = ({}, {}, {})
    theirs: tuple[dict[str, Any], dict[str, str], dict[str, dict[str, Any]]] = ({}, {}, {})
    ops.apply(*mine, {"n": {"inc": 2}, "s": {"add": ["a"]}}, T0, "a")
    ops.apply(*theirs, {"n": {"inc": 3}, "s": {"add": ["b"]}}, T0 + timedelta(hours=1), "b")
    changed = ops.merge(*mine, *theirs)
    assert mine[0] == {"n": 5, "s": ["a", "b"]} and changed == ["n", "s"]


def test_types_are_inferred_for_the_catalogue() -> None:
    seen = ops.sightings({"a": "x", "b": 1.5, "c": True, "d": "2027-01-31", "e": "2027-01-31T09:00:00Z", "f": [1],
                          "g": {"k": 1}, "h": {"inc": 1}, "i": {"add": ["x"]}, "j": None, "k": "2027-13-45"}, T0)
    assert {name: s.type for name, s in seen.items()} == {
        "a": "string", "b": "number", "c": "boolean", "d": "date", "e": "date", "f": "array", "g": "object",
        "h": "number", "i": "array", "k": "string",
    }
    assert seen["h"].example is None and seen["a"].example == "x"


def test_a_late_set_past_the_folded_operations_is_ignored_and_one_after_them_keeps_the_newer_ones() -> None:
    incs = [({"n": {"inc": 1}}, h, f"m{h:02d}") for h in range(1, ops.MAX_OPS + 5)]  # the first four get folded
    traits, _ = run([*incs, ({"n": 100}, 2, "late")])
    assert traits["n"] == ops.MAX_OPS + 4  # a set from before the folded operations cannot undo them
    traits, _ = run([*incs, ({"n": 100}, 10, "late")])
    assert traits["n"] == 100 + (ops.MAX_OPS + 5 - 10)  # the incs from 10:00 on apply on top of it
