"""Pure dispatch rules: render a message for one user, and what a template may read."""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

from kernel.contracts import EmailContent, ProfileSnapshot, SendRequested, WebhookContent

_env = Environment()


class RenderError(Exception):
    """The message cannot be rendered for this user; the send fails with this reason."""


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
        raise RenderError(f"{where}: {exc}") from exc


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
    """The user's `email` trait, if it looks like an address."""
    value = profile.traits.get("email")
    if isinstance(value, str) and "@" in value.strip():
        return value.strip()
    return None


def render_email(send: SendRequested, profile: ProfileSnapshot, to: str) -> RenderedEmail:
    """The email for this user: subject and body rendered with their data."""
    assert isinstance(send.message, EmailContent)
    context = template_context(send, profile)
    return RenderedEmail(
        to=to,
        subject=render_text(send.message.subject, context, "message.subject").strip(),
        body=render_text(send.message.body, context, "message.body"),
        from_address=send.message.from_address,
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
