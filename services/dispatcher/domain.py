"""Pure dispatch rules: render a message for one user, what a template may read, when to retry."""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from functools import lru_cache
from typing import Any

import orjson
from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

from kernel.contracts import EmailContent, ProfileSnapshot, SendRequested, WebhookContent

_env = Environment()


class Undeliverable(Exception):
    """This send cannot go out as it is (its content or its recipient); it is skipped with this reason.

    `code` is a short, bounded label for metrics and the delivery log.
    """

    code = "undeliverable"


class RenderError(Undeliverable):
    """The message cannot be rendered for this user."""

    code = "template_error"


class InvalidAddress(Undeliverable):
    """The user's address (or the campaign's sender) cannot be used in a message header."""

    code = "invalid_address"


# Control characters (CR and LF above all) never reach a header: they would start a new one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class RenderedEmail:
    to: str
    subject: str
    body: str
    from_address: str | None


@dataclass(frozen=True)
class RenderedWebhook:
    url: str
    method: str
    headers: dict[str, str]
    body: Any


@lru_cache(maxsize=2048)
def _template(source: str) -> BoundTemplate:
    return _env.from_string(source)


def render_text(source: str, context: dict[str, Any], where: str) -> str:
    """Render one Liquid template; any template error becomes a RenderError naming the field."""
    try:
        return _template(source).render(**context)
    except LiquidError as exc:
        raise RenderError(f"template error in {where}: {exc}") from exc


def template_context(send: SendRequested, profile: ProfileSnapshot) -> dict[str, Any]:
    """What `{{ … }}` can reach: the user's traits, the triggering event, the campaign."""
    trigger = send.trigger
    return {
        "user": {"user_id": profile.user_id, "traits": profile.traits},
        "event": {
            "name": trigger.name if trigger else None,
            "properties": trigger.properties if trigger else {},
            "timestamp": trigger.timestamp.isoformat() if trigger else None,
        },
        "campaign": {"id": send.campaign_id},
        "send_id": send.send_id,
    }


def _render_json(value: Any, context: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        return render_text(value, context, where)
    if isinstance(value, dict):
        return {k: _render_json(v, context, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def email_address(profile: ProfileSnapshot) -> str | None:
    """The user's `email` trait as an address; None when they have none; InvalidAddress when it is unusable."""
    value = profile.traits.get("email")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InvalidAddress(f"the `email` trait is a {type(value).__name__}, not an address")
    value = value.strip()
    if _CONTROL.search(value) or len(value) > 254:
        raise InvalidAddress("the `email` trait holds control characters or is too long for an address")
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise InvalidAddress(f"the `email` trait is not an address: {exc}") from exc
    if not address.username or not address.domain or "." not in address.domain:
        raise InvalidAddress("the `email` trait is not an address of the form name@domain.tld")
    return address.addr_spec


def header_text(value: str) -> str:
    """A rendered value made safe for one header line: control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


def render_email(send: SendRequested, profile: ProfileSnapshot, to: str) -> RenderedEmail:
    """The email for this user: subject and body rendered with their data."""
    assert isinstance(send.message, EmailContent)
    context = template_context(send, profile)
    sender = send.message.from_address
    if sender is not None and _CONTROL.search(sender):
        raise InvalidAddress("the campaign's `from` holds control characters")
    return RenderedEmail(
        to=to,
        subject=header_text(render_text(send.message.subject, context, "message.subject")),
        body=render_text(send.message.body, context, "message.body"),
        from_address=sender,
    )


def render_webhook(send: SendRequested, profile: ProfileSnapshot) -> RenderedWebhook:
    """The webhook request: an object body has its strings rendered; a string body must render to JSON."""
    assert isinstance(send.message, WebhookContent)
    context = template_context(send, profile)
    body = send.message.body
    if body is None:
        rendered: Any = {
            "send_id": send.send_id,
            "campaign_id": send.campaign_id,
            "user": context["user"],
            "event": context["event"],
        }
    elif isinstance(body, str):
        text = render_text(body, context, "message.body")
        try:
            rendered = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RenderError(f"message.body did not render to valid JSON: {exc}") from exc
    else:
        rendered = _render_json(body, context, "message.body")
    return RenderedWebhook(
        url=str(send.message.url),
        method=send.message.method,
        headers=dict(send.message.headers),
        body=rendered,
    )


def retry_at(
    now: datetime, attempts: int, base_seconds: float, max_interval_seconds: float, retry_after: float | None = None
) -> datetime:
    """When to try a send again after its `attempts`-th attempt failed transiently.

    Exponential from `base_seconds`, capped at `max_interval_seconds`; a provider's Retry-After
    is honoured when it asks for longer (within the cap).
    """
    delay = min(max_interval_seconds, base_seconds * 2 ** max(0, attempts - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_interval_seconds))
    return now + timedelta(seconds=delay)
