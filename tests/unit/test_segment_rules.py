import pytest
from sqlalchemy.dialects import postgresql

from services.segmenter.domain import (
    AllOf,
    Compare,
    FilterError,
    Not,
    Performed,
    compile_filter,
    parse,
)


def test_the_design_example_parses_to_its_tree() -> None:
    tree = parse(
        {"all": [
            {"trait": "city", "op": "eq", "value": "Berlin"},
            {"event": "Order Completed", "count": {"gte": 3}, "within_days": 30,
             "where": [{"property": "total", "op": "gt", "value": 50}]},
            {"not": {"trait": "email", "op": "exists"}},
        ]}
    )
    assert tree == AllOf((
        Compare("city", "eq", "Berlin"),
        Performed("Order Completed", 3, None, 30, (Compare("total", "gt", 50),)),
        Not(Compare("email", "exists")),
    ))


@pytest.mark.parametrize(
    "tree, path, words",
    [
        ({"all": []}, "filter.all", "non-empty list"),
        ({"trait": "city", "op": "equals", "value": "x"}, "filter.op", "unknown operator"),
        ({"trait": "city", "op": "eq"}, "filter.value", "needs a value"),
        ({"trait": "age", "op": "gt", "value": [1]}, "filter.value", "number or a string"),
        ({"trait": "city", "op": "in", "value": "Berlin"}, "filter.value", "non-empty list"),
        ({"any": [{"event": "x", "count": {"gte": -1}}]}, "filter.any[0].count.gte", "≥ 0"),
        ({"event": "x", "count": {"gte": 5, "lte": 2}}, "filter.count", "no count"),
        ({"event": "x", "within_days": 0}, "filter.within_days", "≥ 1"),
        ({"event": "x", "where": [{"property": "p", "op": "zz", "value": 1}]}, "filter.where[0].op", "unknown"),
        ({"trait": "a", "event": "b"}, "filter", "exactly one"),
        ({"not": "city"}, "filter.not", "object"),
    ],
)
def test_bad_filters_say_where_and_why(tree: dict, path: str, words: str) -> None:
    with pytest.raises(FilterError) as info:
        parse(tree)
    assert info.value.path == path
    assert words in info.value.message


def test_trees_that_are_too_deep_are_refused() -> None:
    tree: dict = {"trait": "a", "op": "exists"}
    for _ in range(20):
        tree = {"not": tree}
    with pytest.raises(FilterError, match="deeper"):
        parse(tree)


def sql(tree: dict) -> str:
    return str(compile_filter(parse(tree)).compile(dialect=postgresql.dialect()))


def test_behaviour_compiles_to_a_correlated_count_over_the_events_view() -> None:
    text = sql({"event": "Order Completed", "count": {"gte": 3}, "within_days": 30})
    assert "count(*)" in text and "profiles.segment_events" in text
    assert "e.profile_id = profiles.segment_profiles.profile_id" in text
    assert "make_interval" in text


def test_at_least_once_uses_exists_and_never_uses_not_exists() -> None:
    assert "EXISTS" in sql({"event": "Signed Up"})
    assert "NOT (EXISTS" in sql({"event": "Signed Up", "count": {"lte": 0}})
