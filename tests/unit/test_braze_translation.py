"""Braze's user objects as Herald's Segment calls: who they name, attributes, events and purchases."""

import pytest
from pydantic import ValidationError

from kernel.contracts import KnownPerson
from services.ingest.braze import domain
from services.ingest.braze.schemas import EventObject, Identifiers, PurchaseObject, UserAlias

AT = "2026-12-03T10:00:00Z"


def test_an_object_names_its_person_by_external_id_else_alias_else_email() -> None:
    assert domain.identity(Identifiers(external_id="ada", email="a@x.io"), {}) == ("ada", None)
    alias = UserAlias(alias_name="a-1", alias_label="amp:id%")
    assert domain.identity(Identifiers(user_alias=alias), {}) == (None, "alias:amp%3Aid%25:a-1")
    found = {"a@x.io": KnownPerson(user_id="ada"), "b@x.io": KnownPerson(anonymous_id="anon-b")}
    assert domain.identity(Identifiers(email="A@x.io"), found) == ("ada", None)
    assert domain.identity(Identifiers(email="b@x.io"), found) == (None, "anon-b")
    assert domain.identity(Identifiers(email="C@x.io"), found) == (None, "email:c@x.io")


@pytest.mark.parametrize("raw, field", [
    ({"name": "E", "time": AT}, "external_id"),
    ({"external_id": "a", "user_alias": {"alias_name": "n", "alias_label": "l"}, "name": "E", "time": AT}, "not both"),
    ({"braze_id": "b", "name": "E", "time": AT}, "braze_id"),
    ({"external_id": "a", "time": AT}, "name"),
    ({"external_id": "a", "name": "E", "time": AT, "propertes": {}}, "propertes"),
])
def test_a_bad_event_names_its_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        EventObject.model_validate(raw)
    assert field in str(exc.value)


def test_attributes_operations_and_the_email_are_traits() -> None:
    raw = {"external_id": "ada", "email": "a@x.io", "visits": {"inc": 1}, "_update_existing_only": True, "app_id": "ios"}
    ids = Identifiers.model_validate({k: raw[k] for k in ("external_id", "email", "_update_existing_only", "app_id")})
    call = domain.attributes_call(raw, ids, ("ada", None))
    assert call["type"] == "identify" and call["userId"] == "ada"
    assert call["traits"] == {"email": "a@x.io", "visits": {"inc": 1}}
    assert call["context"]["braze_app_id"] == "ios"


def test_a_purchase_is_an_order_completed_with_its_revenue() -> None:
    purchase = PurchaseObject.model_validate({"external_id": "ada", "product_id": "sku", "currency": "eur",
                                              "price": 2.5, "quantity": 3, "time": AT, "properties": {"c": 1}})
    call = domain.purchase_call(purchase, ("ada", None))
    assert (call["event"], call["timestamp"]) == ("Order Completed", AT)
    assert call["properties"] == {"c": 1, "products": [{"product_id": "sku", "price": 2.5, "quantity": 3}],
                                  "revenue": 7.5, "currency": "EUR"}


def test_update_only_mode_asks_whether_the_person_exists() -> None:
    alias = UserAlias(alias_name="n", alias_label="l")
    assert domain.exists(Identifiers(external_id="ada"), {}, {"ada"}, set())
    assert not domain.exists(Identifiers(user_alias=alias), {}, set(), set())
    assert domain.exists(Identifiers(user_alias=alias), {}, set(), {domain.alias_id(alias)})
    assert domain.exists(Identifiers(email="A@x.io"), {"a@x.io": KnownPerson(user_id="ada")}, set(), set())
