"""Campaign triggers and exception events take the segments' condition grammar: nested paths, dates and
versions; an exception event may carry conditions; every refusal names its field."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.scheduler.domain import exception_name, matches_exception, matches_trigger
from services.scheduler.schemas import CampaignIn

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
CART = {"products": [{"sku": "A-1", "category": "shoes", "price": 120}], "coupon": {"code": "SUMMER"},
        "delivery_by": "2026-06-17", "app": {"version": "3.10.2"}}


def campaign(**fields: Any) -> dict[str, Any]:
    return {"name": "Cart", "channel": "email", "trigger": {"event": "Product Added"},
            "message": {"subject": "Hi", "body": "Hello"}, **fields}


def test_a_trigger_reads_nested_properties_dates_and_versions() -> None:
    where = [
        {"property": "products[].category", "op": "eq", "value": "shoes"},
        {"property": "products[].price", "op": "gt", "value": 100},
        {"property": "coupon.code", "op": "exists"},
        {"property": "delivery_by", "op": "within_next_days", "value": 3},
        {"property": "app.version", "op": "version_gte", "value": "3.10"},
    ]
    trigger = CampaignIn.model_validate(campaign(trigger={"event": "Product Added", "where": where})).trigger
    stored = trigger.model_dump(mode="json")
    assert stored["where"][0] == {"property": "products[].category", "op": "eq", "value": "shoes"}
    assert matches_trigger(stored, "Product Added", CART, NOW)
    assert not matches_trigger(stored, "Product Added", {**CART, "app": {"version": "3.9.9"}}, NOW)
    assert not matches_trigger(stored, "Product Added", {**CART, "delivery_by": "2026-06-30"}, NOW)


def test_exception_events_are_names_or_names_with_conditions() -> None:
    body = campaign(cancel_on=["Order Completed", {"event": "Cart Emptied", "where": [
        {"property": "products[].sku", "op": "eq", "value": "A-1"}]}])
    saved = CampaignIn.model_validate(body)
    stored = [exception.stored() for exception in saved.cancel_on]
    assert stored == ["Order Completed", {"event": "Cart Emptied", "where": [{"property": "products[].sku", "op": "eq", "value": "A-1"}]}]
    assert [exception_name(e) for e in stored] == ["Order Completed", "Cart Emptied"]
    assert matches_exception(stored[0], "Order Completed", {}, NOW)
    assert matches_exception(stored[1], "Cart Emptied", CART, NOW)
    assert not matches_exception(stored[1], "Cart Emptied", {"products": [{"sku": "B-2"}]}, NOW)
    assert not matches_exception(stored[1], "Order Completed", CART, NOW)
    # A name given as {"event": name} and no conditions is kept as the plain name.
    assert CampaignIn.model_validate(campaign(cancel_on=[{"event": "Order Completed"}])).cancel_on[0].stored() == "Order Completed"


@pytest.mark.parametrize(
    "fields, loc, words",
    [
        ({"trigger": {"event": "x", "where": [{"property": "d", "op": "within_last_days", "value": 0}]}},
         ("trigger", "where", 0, "value"), "≥ 1"),
        ({"trigger": {"event": "x", "where": [{"property": "v", "op": "version_lt", "value": "latest"}]}},
         ("trigger", "where", 0, "value"), "starts with a number"),
        ({"trigger": {"event": "x", "where": [{"property": "a[].b[].c[].d[]", "op": "exists"}]}},
         ("trigger", "where", 0, "property"), "at most 3 arrays"),
        ({"cancel_on": ["Order Completed", {"event": "Refund", "where": [{"property": "total", "op": "bigger", "value": 1}]}]},
         ("cancel_on", 1, "where", 0, "op"), "unknown operator"),
        ({"cancel_on": [{"event": "Refund", "when": 1}]}, ("cancel_on", 0, "when"), "Extra inputs"),
        ({"cancel_on": [7]}, ("cancel_on", 0), "a name or"),
        ({"cancel_on": [{"where": []}]}, ("cancel_on", 0, "event"), "Field required"),
    ],
)
def test_bad_trigger_and_exception_conditions_name_their_field(fields: dict[str, Any], loc: tuple[Any, ...], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        CampaignIn.model_validate(campaign(**fields))
    errors = {tuple(e["loc"]): e["msg"] for e in info.value.errors()}
    assert loc in errors and words in errors[loc], errors
