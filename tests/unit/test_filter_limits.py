"""Filters have limits: what one condition may hold (shared by segments and campaigns) and what a
segment's filter may cost the segmenter, each refused with where and why."""

import math
from typing import Any

import pytest
from pydantic import ValidationError

from kernel.contracts import (
    CONDITION_MAX_IN_VALUES,
    CONDITION_MAX_NAME_LENGTH,
    CONDITION_MAX_NUMBER,
    CONDITION_MAX_STRING_LENGTH,
    PropertyCondition,
)
from services.scheduler.schemas import Trigger
from services.segmenter.domain import MAX_COST, FilterError, parse
from services.segmenter.schemas import SegmentIn


def refusal(condition: dict[str, Any]) -> str:
    """The message PropertyCondition refuses `condition` with."""
    with pytest.raises(ValidationError) as info:
        PropertyCondition.model_validate(condition)
    return str(info.value.errors(include_url=False)[0]["msg"])


def fails_at(tree: dict[str, Any]) -> FilterError:
    """The FilterError a segment filter is refused with."""
    with pytest.raises(FilterError) as info:
        parse(tree)
    return info.value


# --- one condition, in segments and campaigns alike -------------------------------------------


def test_an_in_list_holds_at_most_100_values() -> None:
    PropertyCondition(property="city", op="in", value=[f"c{i}" for i in range(CONDITION_MAX_IN_VALUES)])
    assert "at most 100 values (got 40000)" in refusal({"property": "city", "op": "in", "value": list(range(40_000))})


def test_campaign_triggers_get_the_same_limits() -> None:
    with pytest.raises(ValidationError, match="at most 100 values"):
        Trigger.model_validate({"event": "Product Added", "where": [{"property": "sku", "op": "in", "value": list(range(101))}]})
    with pytest.raises(ValidationError, match="NUL"):
        Trigger.model_validate({"event": "Product Added", "where": [{"property": "sku", "op": "eq", "value": "a\x00"}]})


@pytest.mark.parametrize(
    "value",
    ["x" * (CONDITION_MAX_STRING_LENGTH + 1), ["ok", "x" * (CONDITION_MAX_STRING_LENGTH + 1)], {"k" * 3000: 1}],
)
def test_strings_are_at_most_2048_characters_wherever_they_are(value: Any) -> None:
    PropertyCondition(property="url", op="eq", value="x" * CONDITION_MAX_STRING_LENGTH)
    assert "at most 2048 characters" in refusal({"property": "url", "op": "eq", "value": value})


@pytest.mark.parametrize("value", ["Ber\x00lin", ["Paris", "Ber\x00lin"], {"a\x00": 1}, {"a": ["\x00"]}])
def test_nul_is_refused_wherever_it_is(value: Any) -> None:
    op = "in" if isinstance(value, list) else "eq"
    assert "NUL" in refusal({"property": "city", "op": op, "value": value})


def test_names_are_bounded_and_nul_free() -> None:
    PropertyCondition(property="p" * CONDITION_MAX_NAME_LENGTH, op="exists")
    assert "at most 512 characters" in refusal({"property": "p" * (CONDITION_MAX_NAME_LENGTH + 1), "op": "exists"})
    assert "NUL" in refusal({"property": "ci\x00ty", "op": "exists"})


@pytest.mark.parametrize(
    "number", [CONDITION_MAX_NUMBER + 1, -CONDITION_MAX_NUMBER - 1, 2**63, 2**64, -(2**63) - 1, 1e300]
)
def test_numbers_stay_within_what_every_json_reader_reads_alike(number: float) -> None:
    assert "between -(2^53 - 1) and 2^53 - 1" in refusal({"property": "age", "op": "gt", "value": number})
    assert "between" in refusal({"property": "age", "op": "in", "value": [1, number]})


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(number: float) -> None:
    for op in ("gt", "eq", "neq"):
        assert "finite" in refusal({"property": "age", "op": op, "value": number})


def test_the_largest_numbers_allowed_still_pass() -> None:
    for number in (CONDITION_MAX_NUMBER, -CONDITION_MAX_NUMBER, 0.5, 1e15, True):
        PropertyCondition(property="n", op="eq", value=number)


def test_values_nest_at_most_five_levels_and_hold_at_most_1000_items() -> None:
    PropertyCondition(property="doc", op="eq", value=[[[[["deep"]]]]])
    assert "at most 5 levels" in refusal({"property": "doc", "op": "eq", "value": [[[[[["deep"]]]]]]})
    assert "at most 1000 items" in refusal({"property": "doc", "op": "eq", "value": {f"k{i}": i for i in range(1000)}})


def test_a_value_given_to_exists_is_held_to_the_same_limits() -> None:
    # A stored condition keeps its value even where the operator ignores it.
    assert "NUL" in refusal({"property": "email", "op": "exists", "value": "\x00"})


def test_the_existing_rules_and_messages_are_kept() -> None:
    assert "needs a value" in refusal({"property": "city", "op": "eq"})
    assert "non-empty list" in refusal({"property": "city", "op": "in", "value": []})
    assert "number or a string" in refusal({"property": "age", "op": "gt", "value": [1]})


# --- a segment's filter --------------------------------------------------------------------------


def trait(op: str, value: Any, name: str = "city") -> dict[str, Any]:
    """A trait condition."""
    return {"trait": name, "op": op, "value": value}


@pytest.mark.parametrize(
    "tree, path, words",
    [
        (trait("in", list(range(101))), "filter.value", "at most 100 values"),
        ({"all": [trait("eq", "x"), trait("eq", "Ber\x00lin")]}, "filter.all[1].value", "NUL"),
        (trait("exists", None, name="ci\x00ty"), "filter.trait", "NUL"),
        (trait("exists", None, name="t" * 513), "filter.trait", "at most 512"),
        ({"event": "Signed\x00 Up"}, "filter.event", "NUL"),
        ({"event": "e" * 513}, "filter.event", "at most 512"),
        ({"event": "x", "where": [{"property": "p\x00", "op": "exists"}]}, "filter.where[0].property", "NUL"),
        ({"event": "x", "where": [{"property": "total", "op": "gt", "value": math.nan}]}, "filter.where[0].value", "finite"),
        ({"event": "x", "count": {"gte": 2**63}}, "filter.count.gte", "≤ 1,000,000,000"),
        ({"event": "x", "count": {"gt": 1_000_000_001}}, "filter.count.gt", "≥ 0"),
        ({"event": "x", "within_days": 10**9}, "filter.within_days", "≤ 3650"),
        ({"event": "x", "within_days": 3651}, "filter.within_days", "≥ 1"),
        ({"event": "x", "within_day": 30}, "filter", "unknown key 'within_day'"),
        ({"trait": "city", "op": "exists", "\x00": [0] * 40_000}, "filter", "unknown key"),
        ({"event": "x", "where": [{"property": "p", "op": "exists", "note": 1}]}, "filter.where[0]", "unknown key"),
        ({"not": trait("exists", None), "label": "x"}, "filter", "unknown key 'label'"),
    ],
)
def test_a_filter_over_a_limit_says_where_and_why(tree: dict[str, Any], path: str, words: str) -> None:
    error = fails_at(tree)
    assert error.path == path, error
    assert words in error.message, error


def test_the_largest_counts_and_windows_allowed_still_pass() -> None:
    parse({"event": "x", "count": {"lte": 1_000_000_000}, "within_days": 3650})
    parse({"event": "x", "count": {"gt": 999_999_999}})


def test_where_conditions_count_toward_the_100_conditions() -> None:
    where = [{"property": "p", "op": "exists"}] * 200
    assert fails_at({"event": "x", "where": where}).path == "filter.where[99]"
    parse({"event": "x", "where": where[:99]})


def test_a_filter_costs_at_most_500_comparisons() -> None:
    lists = [trait("in", list(range(100))) for _ in range(6)]
    parse({"all": lists[:5]})  # 500: exactly the allowance
    error = fails_at({"all": lists})
    assert error.path == "filter.all[5]" and f"more than {MAX_COST} comparisons" in error.message


def test_an_event_condition_costs_ten_comparisons() -> None:
    events = [{"event": f"e{i}"} for i in range(51)]
    parse({"any": events[:50]})
    assert fails_at({"any": events}).path == "filter.any[50]"


def test_an_unknown_operator_is_quoted_briefly() -> None:
    error = fails_at(trait("x" * 100_000, "Berlin"))
    assert error.path == "filter.op" and len(error.message) < 200


def test_segment_names_are_bounded_and_nul_free() -> None:
    SegmentIn(name="n" * 200, filter={})
    for name in ("n" * 201, "Ber\x00lin", ""):
        with pytest.raises(ValidationError):
            SegmentIn(name=name, filter={})
