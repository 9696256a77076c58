"""The segment grammar beyond traits and events: each kind parses as documented, every refusal names its
field, and each declares what it reads so that a change it cannot see skips it."""

from typing import Any

import pytest

from kernel.contracts import ProfileChanged, parse_time, split_path, version_key
from services.segmenter import domain
from services.segmenter.domain import FilterError, parse

DOCUMENTED = [
    {"attribute": "country", "op": "eq", "value": "DE"},
    {"attribute": "location.lat", "op": "gte", "value": 52},
    {"trait": "address.city", "op": "eq", "value": "Berlin"},
    {"trait": "products[].category", "op": "in", "value": ["shoes", "hats"]},
    {"trait": "trial_ends_at", "op": "within_next_days", "value": 3},
    {"trait": "signed_up_at", "op": "more_than_days_ago", "value": 7},
    {"trait": "birthday", "op": "before", "value": "2008-01-01"},
    {"computed": "last_seen", "op": "within_last_days", "value": 7},
    {"computed": "first_seen", "op": "after", "value": "2026-11-01T00:00:00Z"},
    {"computed": "sessions.count", "op": "gte", "value": 10},
    {"computed": "sessions.last", "op": "more_than_days_ago", "value": 14},
    {"computed": "purchases.revenue", "op": "gte", "value": 500},
    {"computed": "purchases.count", "op": "in", "value": [1, 2]},
    {"device": "ios", "where": [{"property": "push_enabled", "op": "eq", "value": True}]},
    {"device": "any", "within_days": 30, "where": [{"property": "app_version", "op": "version_lt", "value": "3.10"}]},
    {"device": "android", "count": {"eq": 0}},
    {"near": {"lat": 52.52, "lon": 13.405, "km": 25}},
    {"active": {"days": ["sat", "sun"], "hours": {"from": 18, "to": 23}, "sessions": {"gte": 2}}},
    {"active": {"hours": {"from": 22, "to": 2}, "share": {"gte": 0.5}}},
    {"event": "Order Completed", "within_days": 30,
     "where": [{"property": "products[].category", "op": "eq", "value": "shoes"},
               {"property": "delivered_at", "op": "within_last_days", "value": 2}]},
]


@pytest.mark.parametrize("tree", DOCUMENTED, ids=[str(i) for i in range(len(DOCUMENTED))])
def test_every_documented_condition_parses_and_compiles(tree: dict[str, Any]) -> None:
    domain.compile_filter(parse({"all": [tree, {"not": tree}]}))


@pytest.mark.parametrize(
    "tree, path, words",
    [
        ({"attribute": "contry", "op": "eq", "value": "DE"}, "filter.attribute", "unknown attribute 'contry'"),
        ({"attribute": "plan", "op": "eq", "value": "pro"}, "filter.attribute", "a custom attribute is a `trait`"),
        ({"trait": "signup", "op": "more_than_days_ago", "value": "7"}, "filter.value", "whole number of days"),
        ({"trait": "signup", "op": "within_last_days", "value": 0}, "filter.value", "≥ 1"),
        ({"trait": "signup", "op": "within_last_days", "value": 36_501}, "filter.value", "≤ 36,500"),
        ({"trait": "signup", "op": "before", "value": "2026-02-30"}, "filter.value", "ISO 8601"),
        ({"trait": "signup", "op": "after", "value": "last tuesday"}, "filter.value", "ISO 8601"),
        ({"trait": "v", "op": "version_lt", "value": "v3"}, "filter.value", "starts with a number"),
        ({"trait": "v", "op": "version_lt", "value": 3}, "filter.value", "starts with a number"),
        ({"trait": "a." * 20 + "b", "op": "exists"}, "filter.trait", "at most 16 steps"),
        ({"trait": "a[].b[].c[].d[].e", "op": "exists"}, "filter.trait", "at most 3 arrays"),
        ({"trait": "city", "op": "equal", "value": "x"}, "filter.op", "did you mean `eq`"),
        ({"computed": "last_visit", "op": "exists"}, "filter.computed", "unknown computed value"),
        ({"computed": "last_seen", "op": "gt", "value": 3}, "filter.op", "does not apply to last_seen (a time)"),
        ({"computed": "sessions.count", "op": "within_last_days", "value": 3}, "filter.op", "(a number)"),
        ({"computed": "purchases.revenue", "op": "gte", "value": "100"}, "filter.value", "is a number"),
        ({"computed": "purchases.count", "op": "in", "value": [1, "2"]}, "filter.value", "is a number"),
        ({"device": "ipad"}, "filter.device", "'ios'"),
        ({"device": "ios", "where": [{"property": "token", "op": "exists"}]}, "filter.where[0].property", "unknown device field"),
        ({"device": "ios", "where": [{"property": "app_version", "op": "version_lt"}]}, "filter.where[0].value", "needs a value"),
        ({"device": "ios", "count": {"gte": 2, "lt": 1}}, "filter.count", "no count"),
        ({"device": "ios", "within_days": 0}, "filter.within_days", "≥ 1"),
        ({"device": "ios", "platform": "ios"}, "filter", "unknown key 'platform'"),
        ({"near": {"lat": 91, "lon": 0, "km": 1}}, "filter.near.lat", "less than or equal to 90"),
        ({"near": {"lat": 0, "lon": 0, "km": 0}}, "filter.near.km", "greater than 0"),
        ({"near": {"lat": 0, "lon": True, "km": 1}}, "filter.near.lon", "valid number"),
        ({"near": {"lat": 0, "lon": 0}}, "filter.near.km", "Field required"),
        ({"near": [52, 13]}, "filter.near", "valid dictionary"),
        ({"active": {"days": ["sat", "sat"]}}, "filter.active", "listed twice"),
        ({"active": {"days": ["saturday"]}}, "filter.active.days[0]", "'sat'"),
        ({"active": {"days": []}}, "filter.active.days", "at least 1"),
        ({"active": {"hours": {"from": 9, "to": 9}}}, "filter.active.hours", "empty range"),
        ({"active": {"hours": {"from": 24, "to": 2}}}, "filter.active.hours.from", "less than or equal to 23"),
        ({"active": {"share": {"gte": 1.5}}}, "filter.active.share.gte", "less than or equal to 1"),
        ({"active": {"share": {}}}, "filter.active.share", "give `gte`, `lte` or both"),
        ({"active": {"sessions": {"gte": 1}, "share": {"gte": 0.1}}}, "filter.active", "not both"),
        ({"trait": "a", "attribute": "city", "op": "exists"}, "filter", "exactly one"),
        ({"event": "x", "where": [{"property": "d", "op": "before", "value": "soon"}]}, "filter.where[0].value", "ISO 8601"),
        ({"event": "x", "sum": {"property": "revenue"}}, "filter.sum", "at least one of"),
        ({"event": "x", "sum": {"property": "products[].price", "gte": 1}}, "filter.sum.property", "through arrays"),
        ({"event": "x", "sum": {"property": "revenue", "gte": "100"}}, "filter.sum.gte", "valid number"),
        ({"event": "x", "sum": {"property": "revenue", "gte": 2**60}}, "filter.sum.gte", "less than or equal"),
        ({"event": "x", "sum": {"property": "revenue", "over": 1}}, "filter.sum.over", "Extra inputs"),
    ],
)
def test_bad_conditions_say_where_and_why(tree: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(FilterError) as info:
        parse(tree)
    assert (info.value.path, words in info.value.message) == (path, True), info.value


def test_conditions_are_priced_like_the_queries_they_compile_to() -> None:
    devices = [{"device": "any"} for _ in range(51)]
    parse({"any": devices[:50]})
    with pytest.raises(FilterError, match="more than 500 comparisons"):
        parse({"any": devices})
    with pytest.raises(FilterError) as info:
        parse({"device": "ios", "where": [{"property": "model", "op": "exists"}] * 101})
    assert info.value.path == "filter.where[99]"


def test_the_lexicon_dates_versions_paths() -> None:
    assert parse_time("2026-06-15") is not None and parse_time("2026-06-15").tzinfo is not None  # type: ignore[union-attr]
    assert parse_time("2026-06-15T09:00+05:30") is not None
    assert parse_time("2026-02-29") is None and parse_time("15/06/2026") is None
    assert version_key("3.2.0") == version_key("3.2") == (3, 2)
    assert version_key("3.10") > version_key("3.9")  # type: ignore[operator]
    assert version_key("beta") is None
    assert [(s.key, s.each) for s in split_path("products[].category")] == [("products", True), ("category", False)]
    assert [(s.key, s.each) for s in split_path("a..b")] == [("a..b", False)]  # not a path: one key


def _change(**kw: object) -> ProfileChanged:
    return ProfileChanged.model_validate({"workspace_id": "w", "profile_id": "p", "cause_message_id": "m", **kw})


def test_each_kind_declares_what_it_reads_and_whether_time_alone_changes_it() -> None:
    def read(tree: dict[str, Any]) -> domain.Reads:
        return domain.reads(parse(tree))

    assert read({"trait": "address.city", "op": "eq", "value": "x"}).traits == {"address", "address.city"}
    assert read({"attribute": "location.lat", "op": "gt", "value": 1}).attributes == {"location"}
    assert read({"near": {"lat": 1, "lon": 1, "km": 1}}).attributes == {"location"}
    assert read({"computed": "sessions.last", "op": "exists"}).parts == {"sessions"}
    assert read({"active": {"days": ["mon"]}}).parts == {"sessions"}
    assert read({"computed": "purchases.revenue", "op": "gt", "value": 1}).parts == {"purchases"}
    assert read({"device": "ios"}).parts == {"devices"}
    assert read({"computed": "last_seen", "op": "exists"}).parts == {"last_seen"}
    timeless = [{"trait": "signup", "op": "before", "value": "2026-01-01"}, {"event": "x"}, {"device": "ios"},
                {"computed": "sessions.count", "op": "gt", "value": 1}, {"active": {"days": ["mon"]}}]
    timely = [{"trait": "signup", "op": "more_than_days_ago", "value": 7}, {"event": "x", "within_days": 7},
              {"event": "x", "where": [{"property": "at", "op": "within_last_days", "value": 1}]},
              {"device": "ios", "within_days": 7}, {"computed": "last_seen", "op": "within_last_days", "value": 7},
              {"not": {"computed": "sessions.last", "op": "more_than_days_ago", "value": 3}}]
    assert [read(t).time for t in timeless] == [False] * len(timeless)
    assert [read(t).time for t in timely] == [True] * len(timely)


def test_a_change_reaches_only_the_segments_that_read_what_it_changed() -> None:
    country = domain.reads(parse({"attribute": "country", "op": "eq", "value": "DE"}))
    assert not domain.may_affect(country, _change(event_name="Product Viewed"))
    assert not domain.may_affect(country, _change(event_name="Product Viewed", changed_attributes=["language"]))
    assert domain.may_affect(country, _change(event_name="Product Viewed", changed_attributes=["country"]))
    phones = domain.reads(parse({"device": "ios"}))
    assert domain.may_affect(phones, _change(event_name="Product Viewed"))  # the change does not say: it may have
    assert not domain.may_affect(phones, _change(event_name="Product Viewed", changed_parts=["last_seen"]))
    assert domain.may_affect(phones, _change(event_name="Application Opened", changed_parts=["devices", "sessions"]))
    plain = domain.reads(parse({"trait": "plan", "op": "eq", "value": "pro"}))
    assert not domain.may_affect(plain, _change(event_name="Product Viewed"))  # no new per-event work for trait segments


def test_filters_stored_before_the_grammar_grew_mean_what_they_meant() -> None:
    # A dotted name is read as a key of that name first; an odd name is a plain key; a typo'd key is still refused.
    assert parse({"trait": "utm.source", "op": "eq", "value": "x"}) == domain.Compare("utm.source", "eq", "x")
    assert parse({"trait": "a..b", "op": "exists"}) == domain.Compare("a..b", "exists")
    with pytest.raises(FilterError, match="unknown key 'within_day'"):
        parse({"event": "x", "within_day": 3})


def _documented_examples() -> list[dict[str, Any]]:
    """Every JSON document in docs/segments.md's json blocks (a block may hold several)."""
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "segments.md").read_text()
    found: list[dict[str, Any]] = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        decoder, at = json.JSONDecoder(), 0
        while at < len(block := block.strip()):
            document, end = decoder.raw_decode(block, at)
            found.append(document)
            at = end + len(block[end:]) - len(block[end:].lstrip())
    return found


def test_every_example_in_the_segments_guide_is_accepted_as_it_is_written() -> None:
    from services.scheduler.schemas import CampaignIn

    examples = _documented_examples()
    assert len(examples) >= 30
    for example in examples:
        if "error" in example:
            continue
        if "channel" in example:
            CampaignIn.model_validate(example)
        else:
            domain.compile_filter(parse(example.get("filter", example)))
