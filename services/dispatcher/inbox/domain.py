"""Pure inbox rules: an in-app message or content card rendered for one user, where its links may lead, when it
expires, and what an app's report of an impression, a click or a dismissal changes and puts on the timeline."""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson

from kernel.contracts import (
    INBOX_DEFAULT_TTL_HOURS,
    ContentCardContent,
    InAppContent,
    ProfileSnapshot,
    SendRequested,
)
from services import templates
from services.dispatcher.domain import PayloadTooLarge, Undeliverable, render_text, template_context
from services.dispatcher.inbox.schemas import EventKind

INBOX_CHANNELS = ("in_app", "content_card")
MAX_RENDERED_BYTES = 32 * 1024  # what one message weighs in the feed, as JSON
MAX_LINK = 2048
# Schemes a link may never have: a page rendering the feed would run or load them.
REFUSED_SCHEMES = frozenset({"javascript", "vbscript", "data", "file", "blob", "about"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

EVENT_NAMES: dict[EventKind, str] = {
    "impression": "$message_viewed",
    "click": "$message_clicked",
    "dismissal": "$message_dismissed",
}


# The part of an event's id after the send's: one event per message (a click one per button), however often reported.
DEDUPE: dict[EventKind, str] = {"impression": "viewed", "click": "clicked", "dismissal": "dismissed"}


class InvalidLink(Undeliverable):
    """A link rendered to something an app must not open (no scheme, a script, not a web URL where one is needed)."""

    code = "invalid_link"


class Expired(Undeliverable):
    """The message expired before it could be sent."""

    code = "expired"


@dataclass(frozen=True)
class RenderedInbox:
    """An in-app message or card as the user's feed will show it."""

    content: dict[str, Any]
    pinned: bool
    sent_at: datetime
    expires_at: datetime


def expires_at(content: InAppContent | ContentCardContent, sent_at: datetime) -> datetime:
    """When a message sent at `sent_at` leaves the feed: its `expires_at`, `ttl_hours` after sending, or the default."""
    if content.expires_at is not None:
        return content.expires_at
    return sent_at + timedelta(hours=content.ttl_hours if content.ttl_hours is not None else INBOX_DEFAULT_TTL_HOURS)


def web_url(value: str | None, where: str) -> str | None:
    """A rendered http(s) URL with a host (an image, a button's page), or None when it rendered empty."""
    if value is None:
        return None
    _plain_link(value, where)
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidLink(f"{where} rendered to {value[:80]!r}, not an http(s) URL with a host")
    return value


def app_link(value: str | None, where: str) -> str | None:
    """A rendered deep link (`shop://cart`) or web URL the app opens; never a script or local content."""
    if value is None:
        return None
    _plain_link(value, where)
    scheme = _SCHEME.match(value)
    if scheme is None:
        raise InvalidLink(f"{where} rendered to {value[:80]!r}, which has no scheme (shop://… or https://…)")
    if scheme.group(1).lower() in REFUSED_SCHEMES:
        raise InvalidLink(f"{where} may not be a {scheme.group(1).lower()}: link")
    if scheme.group(1).lower() in ("http", "https"):
        return web_url(value, where)
    return value


def _plain_link(value: str, where: str) -> None:
    if len(value) > MAX_LINK:
        raise InvalidLink(f"{where} rendered to {len(value)} characters; a link is at most {MAX_LINK}")
    if _CONTROL.search(value):
        raise InvalidLink(f"{where} rendered to a link with spaces or control characters: {value[:80]!r}")


def _text(source: str | None, context: dict[str, Any], where: str, budget: templates.Budget) -> str | None:
    """A rendered text; empty after rendering counts as not given."""
    if source is None:
        return None
    return render_text(source, context, where, budget).strip() or None


def render(send: SendRequested, profile: ProfileSnapshot, now: datetime) -> RenderedInbox:
    """The in-app message or content card of this send, rendered for this user (Undeliverable if it cannot be)."""
    message = send.message
    if not isinstance(message, InAppContent | ContentCardContent):
        raise TypeError(f"not an inbox message: {type(message).__name__}")
    until = expires_at(message, now)
    if until <= now:
        raise Expired(f"the message expired at {until:%Y-%m-%d %H:%M} UTC, before it was sent")
    context, budget = template_context(send, profile), templates.Budget()
    if isinstance(message, InAppContent):
        content = _in_app(message, context, budget)
        pinned = False
    else:
        content = _card(message, context, budget)
        pinned = message.pinned
    size = len(orjson.dumps(content))
    if size > MAX_RENDERED_BYTES:
        raise PayloadTooLarge(f"the rendered message is {size} bytes as JSON; at most {MAX_RENDERED_BYTES}")
    # The feed orders by when the scheduler decided the send, not when this replica rendered it: sends are
    # dispatched concurrently and retried, and a retried older message must not jump above a newer one.
    return RenderedInbox(content, pinned, send.requested_at, until)


def _in_app(message: InAppContent, context: dict[str, Any], budget: templates.Budget) -> dict[str, Any]:
    content: dict[str, Any] = {
        "layout": message.layout,
        "header": _text(message.header, context, "message.header", budget),
        "body": _text(message.body, context, "message.body", budget),
        "image_url": web_url(_text(message.image_url, context, "message.image_url", budget), "message.image_url"),
        "deep_link": app_link(_text(message.deep_link, context, "message.deep_link", budget), "message.deep_link"),
        "buttons": [],
    }
    for i, button in enumerate(message.buttons):
        where = f"message.buttons[{i}]"
        text = _text(button.text, context, f"{where}.text", budget)
        if text is None:
            raise InvalidLink(f"{where}.text rendered empty: a button needs a text")
        deep_link = app_link(_text(button.deep_link, context, f"{where}.deep_link", budget), f"{where}.deep_link")
        url = web_url(_text(button.url, context, f"{where}.url", budget), f"{where}.url")
        action = button.action or ("open" if deep_link or url else "close")
        if action == "open" and not (deep_link or url):
            raise InvalidLink(f"{where} opens its link, which rendered empty")
        content["buttons"].append({"text": text, "deep_link": deep_link, "url": url, "action": action})
    if not (content["header"] or content["body"] or content["image_url"]):
        raise Undeliverable("the in-app message rendered with no header, body or image for this user")
    return content


def _card(message: ContentCardContent, context: dict[str, Any], budget: templates.Budget) -> dict[str, Any]:
    content = {
        "title": _text(message.title, context, "message.title", budget),
        "body": _text(message.body, context, "message.body", budget),
        "image_url": web_url(_text(message.image_url, context, "message.image_url", budget), "message.image_url"),
        "link": app_link(_text(message.link, context, "message.link", budget), "message.link"),
        "link_text": _text(message.link_text, context, "message.link_text", budget),
    }
    if not (content["title"] or content["body"] or content["image_url"]):
        raise Undeliverable("the content card rendered with no title, body or image for this user")
    return content


class BadEvent(ValueError):
    """An app's report that does not fit the message (a button it does not have); `field` names what is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class MessageState:
    """What an inbox message is, as far as its engagement rules need."""

    channel: str
    content: dict[str, Any]
    viewed_at: datetime | None = None
    clicked_at: datetime | None = None
    dismissed_at: datetime | None = None


@dataclass(frozen=True)
class Engagement:
    """What an app's report comes to: the times to set on the message, the event for the user's timeline (its name,
    a de-duplication suffix so a repeated report is one event, and what it says besides the send's own)."""

    changes: dict[str, datetime]
    event: str
    dedupe: str
    properties: dict[str, Any] = field(default_factory=dict)


def engagement(state: MessageState, kind: EventKind, button: int | None, now: datetime) -> Engagement:
    """An impression, click or dismissal of a message. A click counts as viewed too; each time is set once (the
    first report's), and each report is one event however often the app repeats it (a click once per button)."""
    properties: dict[str, Any] = {}
    changes: dict[str, datetime] = {}
    dedupe = DEDUPE[kind]
    if button is not None:
        if kind != "click":
            raise BadEvent(f"only a click names a button, not a {kind}", "button")
        buttons = state.content.get("buttons") or []
        if button >= len(buttons):
            raise BadEvent(f"the message has {len(buttons)} button(s); button {button} is not one of them", "button")
        chosen = buttons[button]
        properties.update(button=button, button_text=chosen["text"], action=chosen["action"])
        link = chosen.get("deep_link") or chosen.get("url")
        if link:
            properties["url"] = link
        dedupe = f"clicked:{button}"
    elif kind == "click":
        link = state.content.get("deep_link") or state.content.get("link")
        if link:
            properties["url"] = link
    if kind in ("impression", "click") and state.viewed_at is None:
        changes["viewed_at"] = now
    if kind == "click" and state.clicked_at is None:
        changes["clicked_at"] = now
    if kind == "dismissal" and state.dismissed_at is None:
        changes["dismissed_at"] = now
    return Engagement(changes, EVENT_NAMES[kind], dedupe, properties)
