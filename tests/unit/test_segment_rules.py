import pytest
from sqlalchemy.dialects import postgresql

from kernel.contracts import ProfileChanged
from services.segmenter import domain
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


# --- what a change can affect -------------------------------------------------------------------

MIXED = {"all": [
    {"trait": "plan", "op": "eq", "value": "pro"},
    {"not": {"any": [{"trait": "country", "op": "eq", "value": "DE"}, {"event": "Order Completed", "count": {"gte": 2}}]}},
]}


def _change(**kw: object) -> ProfileChanged:
    return ProfileChanged.model_validate({"workspace_id": "w", "profile_id": "p", "cause_message_id": "m", **kw})


def test_a_filter_reads_every_trait_and_counts_every_event_of_its_tree() -> None:
    assert domain.reads(domain.parse(MIXED)) == domain.Reads(frozenset({"plan", "country"}), frozenset({"Order Completed"}))


def test_only_a_trait_it_reads_or_an_event_it_counts_can_change_a_verdict() -> None:
    read = domain.reads(domain.parse(MIXED))
    assert not domain.may_affect(read, _change(event_name="Product Viewed"))
    assert not domain.may_affect(read, _change(event_name="identify", changed_traits=["email"]))
    assert domain.may_affect(read, _change(event_name="identify", changed_traits=["email", "country"]))
    assert domain.may_affect(read, _change(event_name="Order Completed"))


def test_a_new_profile_a_merge_or_an_unknown_cause_may_change_anything() -> None:
    read = domain.reads(domain.parse({"trait": "plan", "op": "not_exists"}))  # true of a profile with no traits
    assert domain.may_affect(read, _change(event_name="Product Viewed", created=True))
    assert domain.may_affect(read, _change(event_name="Product Viewed", merged_profile_ids=["p2"]))
    assert domain.may_affect(read, _change())  # a re-announcement: its cause is not known
