"""Pure translation of Braze's user objects to the Segment calls Herald stores.

- `external_id` is the user id; a `user_alias` is an anonymous id `alias:<label>:<name>` (an alias-only
  profile has no user id until `/users/identify` merges it into one); an `email` names the most recently
  seen profile with that email trait, else an email-only profile (anonymous id `email:<email>`).
- Attributes are an identify's traits, Braze's operations (`{"inc": 1}`, `{"add": [...]}`,
  `{"remove": [...]}`) and subscription fields (`email_subscribe`, ...) included as they are.
- An event is a track; a purchase is an `Order Completed` track with one product, its revenue and currency.
"""

from typing import Any

from kernel.contracts import KnownPerson
from services.ingest.braze.schemas import Identifiers, PurchaseObject, UserAlias

IDENTIFIER_FIELDS = ("external_id", "user_alias", "email", "app_id", "_update_existing_only")
ORDER_COMPLETED = "Order Completed"


def alias_id(alias: UserAlias) -> str:
    """The anonymous id a Braze user alias is kept as (`:` and `%` in the label escaped, so no two collide)."""
    label = alias.alias_label.replace("%", "%25").replace(":", "%3A")
    return f"alias:{label}:{alias.alias_name}"


def email_id(email: str) -> str:
    """The anonymous id of an email-only profile."""
    return f"email:{email.lower()}"


def identity(ids: Identifiers, emails: dict[str, KnownPerson]) -> tuple[str | None, str | None]:
    """(userId, anonymousId) of the Segment call for an object, given the profiles found by email."""
    if ids.external_id is not None:
        return ids.external_id, None
    if ids.user_alias is not None:
        return None, alias_id(ids.user_alias)
    assert ids.email is not None
    known = emails.get(ids.email.lower())
    if known is not None and (known.user_id or known.anonymous_id):
        return known.user_id, None if known.user_id else known.anonymous_id
    return None, email_id(ids.email)


def exists(ids: Identifiers, emails: dict[str, KnownPerson], users: set[str], anonymous: set[str]) -> bool:
    """Whether the object's person already has a profile (for `_update_existing_only`)."""
    if ids.external_id is not None:
        return ids.external_id in users
    if ids.user_alias is not None:
        return alias_id(ids.user_alias) in anonymous
    return ids.email is not None and ids.email.lower() in emails


def _who(user_id: str | None, anonymous_id: str | None) -> dict[str, Any]:
    return {"userId": user_id} if user_id is not None else {"anonymousId": anonymous_id}


def attributes_call(raw: dict[str, Any], ids: Identifiers, who: tuple[str | None, str | None]) -> dict[str, Any]:
    """An identify carrying the object's attributes as traits (an email, identifier or not, is the email trait)."""
    traits = {k: v for k, v in raw.items() if k not in IDENTIFIER_FIELDS or k == "email"}
    return {"type": "identify", **_who(*who), "traits": traits, "context": _context(ids)}


def event_call(name: str, time: str, properties: dict[str, Any], ids: Identifiers, who: tuple[str | None, str | None]) -> dict[str, Any]:
    """A track of a Braze custom event."""
    return {"type": "track", **_who(*who), "event": name, "properties": properties, "timestamp": time,
            "context": _context(ids)}


def purchase_call(purchase: PurchaseObject, who: tuple[str | None, str | None]) -> dict[str, Any]:
    """An `Order Completed` track of one Braze purchase: revenue is price × quantity, in its currency."""
    product = {"product_id": purchase.product_id, "price": purchase.price, "quantity": purchase.quantity}
    properties = {
        **purchase.properties, "products": [product], "revenue": round(purchase.price * purchase.quantity, 4),
        "currency": purchase.currency.upper(),
    }
    return event_call(ORDER_COMPLETED, purchase.time, properties, purchase, who)


def _context(ids: Identifiers) -> dict[str, Any]:
    context: dict[str, Any] = {"library": {"name": "braze-rest-api"}}
    if ids.app_id:
        context["braze_app_id"] = ids.app_id
    return context
