"""Pure dispatch rules: render a message for one user, what a template may read, where a webhook may
go and which headers it may carry, when to retry."""

import base64
import email.policy
import hmac
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from functools import lru_cache
from html import escape, unescape
from html.parser import HTMLParser
from typing import Any

import css_inline
import orjson
import phonenumbers

from kernel import signing
from kernel.contracts import (
    SUBSCRIPTION_CHANNELS,
    EmailContent,
    IosPush,
    ProfileSnapshot,
    PushContent,
    SendRequested,
    SmsContent,
    SubscriptionsSnapshot,
    WebhookContent,
)
from services import templates


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
    """An email ready for SMTP: `body` is the plain text (given, or made from the HTML), `html` has its CSS inlined."""

    to: str
    subject: str
    body: str
    from_address: str | None
    html: str | None = None
    reply_to: str | None = None
    unsubscribe_url: str | None = None  # List-Unsubscribe (RFC 8058 one-click) when links are signed


@dataclass(frozen=True)
class RenderedWebhook:
    url: str
    method: str
    headers: dict[str, str]
    body: Any


def render_text(source: str, context: dict[str, Any], where: str, budget: templates.Budget) -> str:
    """Render one Liquid template within its message's budget; any failure is a RenderError naming the field."""
    try:
        return templates.render(source, context, budget)
    except templates.TemplateError as exc:
        raise RenderError(f"template error in {where}: {exc}") from exc


def template_context(send: SendRequested, profile: ProfileSnapshot) -> dict[str, Any]:
    """What `{{ … }}` can reach: the user (traits, standard attributes, devices, computed values: times as
    ISO 8601 text), the triggering event, the campaign."""
    trigger = send.trigger
    return {
        "user": {
            "user_id": profile.user_id,
            "traits": profile.traits,
            "attributes": profile.attributes.model_dump(mode="json", exclude_none=True),
            "devices": [device.model_dump(mode="json") for device in profile.devices],
            "computed": profile.computed.model_dump(mode="json"),
        },
        "event": {
            "name": trigger.name if trigger else None,
            "properties": trigger.properties if trigger else {},
            "timestamp": trigger.timestamp.isoformat() if trigger else None,
        },
        "campaign": {"id": send.campaign_id},
        "send_id": send.send_id,
    }


def _render_json(value: Any, context: dict[str, Any], where: str, budget: templates.Budget) -> Any:
    if isinstance(value, str):
        return render_text(value, context, where, budget)
    if isinstance(value, dict):
        return {k: _render_json(v, context, f"{where}.{k}", budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, context, f"{where}[{i}]", budget) for i, v in enumerate(value)]
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


def render_email(
    send: SendRequested,
    profile: ProfileSnapshot,
    to: str,
    default_from: str | None = None,
    default_reply_to: str | None = None,
    links: "Links | None" = None,
) -> RenderedEmail:
    """The email for this user: subject, text and HTML rendered with their data (values in the HTML escaped),
    the HTML's CSS inlined, the text made from the HTML when the campaign gives none; the campaign's `from` and
    `reply_to`, else the workspace's defaults. With `links`, the HTML's links are tracked (click redirects and an
    open pixel; the text keeps the addresses themselves) and the email carries one-click unsubscribe."""
    assert isinstance(send.message, EmailContent)
    message = send.message
    context, budget = template_context(send, profile), templates.Budget()
    sender = message.from_address or default_from
    reply_to = message.reply_to or default_reply_to
    for name, value in (("from", sender), ("reply_to", reply_to)):
        if value is not None and _CONTROL.search(value):  # saved before the address was checked (sender_problem)
            raise InvalidAddress(f"the campaign's `{name}` holds control characters")
    html = None
    if message.html is not None:
        html = inline_css(render_html(message.html, context, "message.html", budget))
    if message.body is not None:
        body = render_text(message.body, context, "message.body", budget)
    else:
        body = html_to_text(html or "")
    if html is not None and links is not None:
        html = tracked_html(html, links)
    return RenderedEmail(
        to=to,
        subject=header_text(render_text(message.subject, context, "message.subject", budget)),
        body=body,
        from_address=sender,
        html=html,
        reply_to=reply_to,
        unsubscribe_url=links.unsubscribe() if links is not None else None,
    )


def render_html(source: str, context: dict[str, Any], where: str, budget: templates.Budget) -> str:
    """Render an HTML template: every value it outputs is HTML-escaped (a user's `<b>` arrives as text)."""
    try:
        return templates.render(source, context, budget, autoescape=True)
    except templates.TemplateError as exc:
        raise RenderError(f"template error in {where}: {exc}") from exc


def inline_css(html: str) -> str:
    """The HTML with its `<style>` rules moved into `style` attributes, as mail clients that drop `<style>` need;
    @media rules stay in a `<style>` for the clients that read it. Remote stylesheets are never fetched."""
    try:
        return _inliner().inline(html)
    except (css_inline.InlineError, ValueError) as exc:
        raise RenderError(f"message.html: its CSS cannot be inlined ({str(exc)[:200]})") from exc


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


_BLOCKS = frozenset({
    "p", "div", "section", "article", "header", "footer", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
    "ul", "ol", "blockquote", "pre", "hr", "center", "main", "nav", "aside", "address", "figure",
})
_SKIPPED = frozenset({"head", "style", "script", "title", "template", "noscript"})
_SPACES = re.compile(r"\s+")


class _TextOfHtml(HTMLParser):
    """Reads HTML as a plain-text email: paragraphs as blank-line-separated blocks, list items as `- `, a link
    as its text followed by its address, images by their alt text; styles, scripts and the head left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in _SKIPPED:
            self.skipping += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "img" and found.get("alt"):
            self.parts.append(found["alt"] or "")
        if tag == "a":
            self.links.append(found.get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and href.startswith(("http://", "https://", "mailto:")) and href not in "".join(self.parts[-3:]):
                self.parts.append(f" ({href.removeprefix('mailto:')})")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(_SPACES.sub(" ", data))

    def text(self) -> str:
        lines = [" ".join(line.split()) if not line.startswith("- ") else "- " + " ".join(line[2:].split())
                 for line in "".join(self.parts).split("\n")]
        text = "\n".join(lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def html_to_text(html: str) -> str:
    """The plain-text alternative of an HTML email, for clients (and spam filters) that read text."""
    reader = _TextOfHtml()
    reader.feed(html)
    reader.close()
    return reader.text()


def unsubscribe_token(key: bytes, workspace_id: str, send_id: str, user_id: str | None, channel: str) -> str:
    """A signed unsubscribe token (kernel.signing's link token for `unsubscribe`): claims `w` workspace, `s` send,
    `u` user, `c` channel. A link whose claims or signature were altered does not verify."""
    return signing.link_token(key, "unsubscribe", {"w": workspace_id, "s": send_id, "u": user_id, "c": channel})


def read_unsubscribe_token(key: bytes, token: str) -> dict[str, Any] | None:
    """The claims of a token `unsubscribe_token` made under this key, or None when it is not one."""
    return signing.read_link_token(key, "unsubscribe", token)


@dataclass(frozen=True)
class Links:
    """The signed public links of one send, served by the gateway under its public URL: one-click unsubscribe,
    the open pixel and click redirects (the original address inside the signed claims, so no one can make the
    gateway redirect anywhere else)."""

    base_url: str
    key: bytes
    workspace_id: str
    send_id: str
    user_id: str | None
    channel: str
    group_id: str | None = None  # the campaign's subscription group: what its unsubscribe link leaves

    def _claims(self) -> dict[str, Any]:
        return {"w": self.workspace_id, "s": self.send_id, "u": self.user_id, "c": self.channel}

    def unsubscribe(self) -> str:
        """The one-click unsubscribe URL (List-Unsubscribe; GET shows a page to confirm, POST unsubscribes)."""
        claims = {**self._claims(), **({"g": self.group_id} if self.group_id else {})}
        return f"{self.base_url}/v1/unsubscribe/{signing.link_token(self.key, 'unsubscribe', claims)}"

    def open_pixel(self) -> str:
        """The URL of the 1×1 image whose loading records an open."""
        return f"{self.base_url}/v1/links/o/{signing.link_token(self.key, 'open', self._claims())}"

    def click(self, url: str, index: int) -> str:
        """The redirect to `url` (the message's `index`-th link) that records a click on the way."""
        token = signing.link_token(self.key, "click", {**self._claims(), "l": url, "i": index})
        return f"{self.base_url}/v1/links/c/{token}"


# An anchor's href, as css-inline serializes it (double quotes) or as written (single quotes).
_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
TRACKED_SCHEMES = ("http://", "https://")


def tracked_html(html: str, links: Links) -> str:
    """The HTML with each http(s) link wrapped in a signed click redirect (per link, with the send's id) and a 1×1
    open pixel before `</body>`. mailto:, tel:, anchors and the unsubscribe link itself are left as they are."""
    unsubscribe_prefix = f"{links.base_url}/v1/unsubscribe/"
    count = 0

    def wrap(match: re.Match[str]) -> str:
        nonlocal count
        url = unescape(match.group(3)).strip()
        if not url.lower().startswith(TRACKED_SCHEMES) or url.startswith(unsubscribe_prefix):
            return match.group(0)
        count += 1
        return f"{match.group(1)}{match.group(2)}{escape(links.click(url, count), quote=True)}{match.group(2)}"

    wrapped = _HREF.sub(wrap, html)
    pixel = (f'<img src="{escape(links.open_pixel(), quote=True)}" width="1" height="1" alt="" '
             'style="display:block;width:1px;height:1px;border:0" />')
    found = list(_BODY_END.finditer(wrapped))
    if not found:
        return wrapped + pixel
    at = found[-1].start()
    return wrapped[:at] + pixel + wrapped[at:]


def render_webhook(send: SendRequested, profile: ProfileSnapshot) -> RenderedWebhook:
    """The webhook request: an object body has its strings rendered; a string body must render to JSON."""
    assert isinstance(send.message, WebhookContent)
    context, budget = template_context(send, profile), templates.Budget()
    body = send.message.body
    if body is None:
        rendered: Any = {
            "send_id": send.send_id,
            "campaign_id": send.campaign_id,
            "user": context["user"],
            "event": context["event"],
        }
    elif isinstance(body, str):
        text = render_text(body, context, "message.body", budget)
        try:
            rendered = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RenderError(f"message.body did not render to valid JSON: {exc}") from exc
    else:
        rendered = _render_json(body, context, "message.body", budget)
    return RenderedWebhook(
        url=str(send.message.url),
        method=send.message.method,
        headers=dict(send.message.headers),
        body=rendered,
    )


def sender_problem(value: str) -> str | None:
    """Why a campaign's `from` cannot be an email's From header (None when it can): one address, one line."""
    if _CONTROL.search(value):
        return "holds control characters (a line break would start a new header)"
    try:
        header = email.policy.default.header_factory("from", value)
    except (ValueError, IndexError, TypeError, HeaderParseError):
        return "is not an email address"
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    if header.defects or len(addresses) != 1:
        return "must be exactly one address, like `Shop <shop@example.com>`"
    address = addresses[0]
    if not address.username or "." not in address.domain:
        return "must be an address of the form name@domain.tld"
    return None


# RFC 9110 field names are tokens. Values: visible ASCII, space and tab. httpx sends header values as
# ASCII (so `café` cannot go out), and RFC 9110 makes other bytes (obs-text) obsolete.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
MAX_HEADER_VALUE = 4096
# Headers that frame the request or that Herald sets: a campaign setting them could smuggle a second
# request through a keep-alive connection, route it to another host, or break idempotency.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
     "proxy-connection", "expect", "idempotency-key", "x-herald-send-id"}
)


def header_problem(name: str, value: str) -> str | None:
    """Why a campaign's webhook header cannot go out (None when it can)."""
    if not _HEADER_NAME.fullmatch(name):
        return "a header name is a token: ASCII letters, digits and !#$%&'*+-.^_`|~, nothing else"
    if name.lower() in RESERVED_HEADERS:
        return f"`{name}` is set by Herald or by HTTP itself; a campaign cannot set it"
    if not _HEADER_VALUE.fullmatch(value):
        return "a header value holds printable ASCII, spaces and tabs only (no line breaks, control or non-ASCII characters)"
    if len(value) > MAX_HEADER_VALUE:
        return f"a header value is at most {MAX_HEADER_VALUE} characters"
    return None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # NAT64 gateways translate it to the IPv4 address in its last 32 bits
_LOOPBACK_NAME = ("127.0.0.1", "::1")  # what `localhost` resolves to on every system


def normal_host(host: str) -> str:
    """A URL's host as the allow-list compares it: lower case, without brackets or the root's trailing dot."""
    return host.strip("[]").rstrip(".").lower()


def is_public(address: IPAddress) -> bool:
    """Whether an address is public: not loopback, private, link-local, multicast, reserved, unspecified or shared.

    An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is judged by that IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (
        address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified
    )


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhooks may go: public addresses, plus the hosts and networks the operator allows."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, setting: str) -> "WebhookPolicy":
        """The policy of `HERALD_WEBHOOK_ALLOWED_HOSTS`: comma-separated host names, IP addresses and CIDR networks."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in setting.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(normal_host(entry))
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, address: IPAddress) -> bool:
        """Whether a webhook to `host` may connect to `address` (one of the addresses the host resolved to)."""
        return is_public(address) or normal_host(host) in self.hosts or any(address in n for n in self.networks)

    def refuses_literal(self, host: str) -> bool:
        """Whether a URL's host is already refused before any DNS: an IP address or a `localhost` name it does not permit."""
        name = normal_host(host)
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(name)]
        except ValueError:
            if name != "localhost" and not name.endswith(".localhost"):
                return False  # a name: judged by what it resolves to, when a webhook is sent
            addresses = [ipaddress.ip_address(a) for a in _LOOPBACK_NAME]
        return not all(self.permits(name, address) for address in addresses)


# A send failed with one of these is a bounce: the address (hard bounce) or the device token (dead) is gone.
BOUNCE_CODES = frozenset({"hard_bounce", "unregistered", "bad_device_token"})


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


# --- push ---------------------------------------------------------------------------------

APNS_MAX_PAYLOAD = 4096  # bytes of the JSON body, for every push type but VoIP
FCM_MAX_PAYLOAD = 4096  # bytes of a message's notification and data
APNS_MAX_COLLAPSE_ID = 64  # bytes
# A token APNs issued is the hex of its bytes (32 today); anything else is an FCM registration token.
_APNS_TOKEN = re.compile(r"(?:[0-9A-Fa-f]{2}){32,100}")
# Keys FCM keeps for itself in a message's data (it refuses the message otherwise).
_FCM_RESERVED_DATA = re.compile(r"^(from|notification|message_type)$|^(google|gcm)", re.IGNORECASE)


class PayloadTooLarge(Undeliverable):
    """The rendered push is larger than the provider takes; it is not sent."""

    code = "payload_too_large"


@dataclass(frozen=True)
class RenderedPush:
    """A push rendered for one user, ready to be shaped for APNs or FCM.

    `ios` and `android` hold the per-platform overrides that were set (sound, badge, subtitle,
    thread_id, category, interruption_level, content_available; channel_id, icon, color, tag,
    click_action, sound, notification_priority); `data` is custom key-values for the app, text only.
    """

    title: str | None = None
    body: str | None = None
    image_url: str | None = None
    deep_link: str | None = None
    sound: str | None = None
    badge: int | None = None
    data: dict[str, str] | None = None
    ttl_seconds: int | None = None
    collapse_key: str | None = None
    priority: str = "high"  # or "normal"
    ios: dict[str, Any] | None = None
    android: dict[str, Any] | None = None

    @property
    def alert(self) -> bool:
        """Whether it shows something (else it is a silent, background push)."""
        return bool(self.title or self.body)


@dataclass(frozen=True)
class ApnsRequest:
    """One APNs request, less the device token and the provider token."""

    headers: dict[str, str]
    body: bytes


def push_service_of(token: str) -> str:
    """Which provider a device token belongs to: `apns` for APNs' hex tokens, `fcm` otherwise."""
    return "apns" if _APNS_TOKEN.fullmatch(token) else "fcm"


def _custom_data(push: RenderedPush) -> dict[str, str]:
    data = dict(push.data or {})
    for name, value in (("deep_link", push.deep_link), ("image_url", push.image_url)):
        if value:
            data.setdefault(name, value)
    return data


def apns_request(push: RenderedPush, topic: str, apns_id: str, now: datetime) -> ApnsRequest:
    """The APNs request for this push: headers (topic, push type, priority, expiration, collapse id) and the
    `aps` payload with the custom data beside it; PayloadTooLarge past APNs' 4 KB."""
    ios = push.ios or {}
    aps: dict[str, Any] = {}
    if push.alert:
        alert = {k: v for k, v in (("title", push.title), ("subtitle", ios.get("subtitle")), ("body", push.body)) if v}
        aps["alert"] = alert
        if sound := ios.get("sound", push.sound):
            aps["sound"] = sound
        if push.image_url:
            aps["mutable-content"] = 1  # the app's notification service extension downloads the image
    badge = ios.get("badge", push.badge)
    if badge is not None:
        aps["badge"] = badge
    for name, key in (("thread_id", "thread-id"), ("category", "category"), ("interruption_level", "interruption-level")):
        if ios.get(name):
            aps[key] = ios[name]
    if ios.get("content_available") or not push.alert:
        aps["content-available"] = 1
    payload: dict[str, Any] = {**_custom_data(push), "aps": aps}
    body = orjson.dumps(payload)
    if len(body) > APNS_MAX_PAYLOAD:
        raise PayloadTooLarge(f"the APNs payload is {len(body)} bytes; APNs takes at most {APNS_MAX_PAYLOAD}")
    background = not push.alert
    headers = {
        "apns-topic": topic,
        "apns-push-type": "background" if background else "alert",
        # APNs refuses priority 10 for a background push; `normal` saves the device's battery.
        "apns-priority": "5" if background or push.priority == "normal" else "10",
        "apns-id": apns_id,
    }
    if push.ttl_seconds is not None:
        headers["apns-expiration"] = "0" if push.ttl_seconds == 0 else str(int(now.timestamp()) + push.ttl_seconds)
    if push.collapse_key:
        if len(push.collapse_key.encode()) > APNS_MAX_COLLAPSE_ID:
            raise RenderError(f"collapse_key is {len(push.collapse_key.encode())} bytes; APNs takes at most {APNS_MAX_COLLAPSE_ID}")
        headers["apns-collapse-id"] = push.collapse_key
    return ApnsRequest(headers, body)


def fcm_message(push: RenderedPush, token: str, now: datetime) -> dict[str, Any]:
    """The FCM HTTP v1 `message` for this push to one registration token, with its android, apns and
    webpush blocks; PayloadTooLarge past FCM's 4 KB of notification and data."""
    android_overrides, ios = push.android or {}, push.ios or {}
    data = _custom_data(push)
    for key in data:
        if _FCM_RESERVED_DATA.search(key):
            raise RenderError(f"data key {key!r} is reserved by FCM (from, notification, message_type, google*, gcm*)")
    message: dict[str, Any] = {"token": token}
    notification = {k: v for k, v in (("title", push.title), ("body", push.body), ("image", push.image_url)) if v}
    if notification:
        message["notification"] = notification
    if data:
        message["data"] = data
    if len(orjson.dumps({"notification": notification, "data": data})) > FCM_MAX_PAYLOAD:
        raise PayloadTooLarge(f"the FCM notification and data exceed {FCM_MAX_PAYLOAD} bytes")

    android: dict[str, Any] = {"priority": "HIGH" if push.priority == "high" else "NORMAL"}
    if push.ttl_seconds is not None:
        android["ttl"] = f"{push.ttl_seconds}s"
    if push.collapse_key:
        android["collapse_key"] = push.collapse_key
    android_notification = {
        k: v for k, v in (
            ("channel_id", android_overrides.get("channel_id")), ("icon", android_overrides.get("icon")),
            ("color", android_overrides.get("color")), ("tag", android_overrides.get("tag")),
            ("click_action", android_overrides.get("click_action")),
            ("sound", android_overrides.get("sound", push.sound)),
            ("notification_priority", android_overrides.get("notification_priority")),
        ) if v is not None
    }
    if push.alert and android_notification:
        android["notification"] = android_notification
    message["android"] = android

    apns_headers = {"apns-priority": "5" if not push.alert or push.priority == "normal" else "10"}
    if not push.alert:
        apns_headers["apns-push-type"] = "background"
    if push.collapse_key:
        apns_headers["apns-collapse-id"] = push.collapse_key[:APNS_MAX_COLLAPSE_ID]
    if push.ttl_seconds is not None:
        apns_headers["apns-expiration"] = "0" if push.ttl_seconds == 0 else str(int(now.timestamp()) + push.ttl_seconds)
    aps: dict[str, Any] = {}
    if push.alert and (sound := ios.get("sound", push.sound)):
        aps["sound"] = sound
    if (badge := ios.get("badge", push.badge)) is not None:
        aps["badge"] = badge
    if push.image_url and push.alert:
        aps["mutable-content"] = 1
    if not push.alert or ios.get("content_available"):
        aps["content-available"] = 1
    message["apns"] = {"headers": apns_headers, "payload": {"aps": aps}}

    webpush: dict[str, Any] = {"headers": {"Urgency": "high" if push.priority == "high" else "normal"}}
    if push.ttl_seconds is not None:
        webpush["headers"]["TTL"] = str(push.ttl_seconds)
    if push.deep_link and push.deep_link.startswith("https://"):
        webpush["fcm_options"] = {"link": push.deep_link}  # FCM takes only an https link here
    message["webpush"] = webpush
    return {"message": message}


def _render_optional(source: str | None, context: dict[str, Any], where: str, budget: templates.Budget) -> str | None:
    """A rendered optional text; empty after rendering counts as not given."""
    if source is None:
        return None
    text = render_text(source, context, where, budget).strip()
    return text or None


def _badge(value: int | str | None, context: dict[str, Any], where: str, budget: templates.Budget) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = _render_optional(value, context, where, budget)
    if text is None:
        return None
    try:
        return max(0, int(text))
    except ValueError:
        raise RenderError(f"{where} rendered to {text[:40]!r}, not a whole number") from None


def render_push(send: SendRequested, profile: ProfileSnapshot, platform: str) -> RenderedPush:
    """The push for this user on `platform` (`ios` takes the ios overrides, anything else the android ones)."""
    assert isinstance(send.message, PushContent)
    message, context, budget = send.message, template_context(send, profile), templates.Budget()
    overrides = message.ios if platform == "ios" else message.android
    side = "ios" if platform == "ios" else "android"

    def text(name: str) -> str | None:
        own = getattr(overrides, name, None) if overrides is not None else None
        if own is not None:
            return _render_optional(own, context, f"message.{side}.{name}", budget)
        return _render_optional(getattr(message, name, None), context, f"message.{name}", budget)

    extra: dict[str, Any] = {}
    if overrides is not None:
        for name, value in overrides.model_dump(exclude_none=True, exclude={"title", "body", "sound", "badge"}).items():
            extra[name] = (_render_optional(value, context, f"message.{side}.{name}", budget)
                           if isinstance(value, str) and name not in ("interruption_level", "notification_priority", "color")
                           else value)
        if isinstance(overrides, IosPush) and overrides.badge is not None:
            extra["badge"] = _badge(overrides.badge, context, "message.ios.badge", budget)
        if overrides.sound is not None:
            extra["sound"] = _render_optional(overrides.sound, context, f"message.{side}.sound", budget)
    data = {key: render_text(value, context, f"message.data.{key}", budget) for key, value in message.data.items()}
    return RenderedPush(
        title=text("title"),
        body=text("body"),
        image_url=_render_optional(message.image_url, context, "message.image_url", budget),
        deep_link=_render_optional(message.deep_link, context, "message.deep_link", budget),
        sound=_render_optional(message.sound, context, "message.sound", budget),
        badge=_badge(message.badge, context, "message.badge", budget),
        data=data or None,
        ttl_seconds=message.ttl,
        collapse_key=_render_optional(message.collapse_key, context, "message.collapse_key", budget),
        priority=message.priority,
        ios=extra if side == "ios" else None,
        android=extra if side == "android" else None,
    )


# --- SMS ----------------------------------------------------------------------------------

# GSM 03.38: the default alphabet (one septet each) and its extension table (an escape and a septet: two).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
SMS_MAX_SEGMENTS = 10  # Twilio refuses a body past 1,600 characters; carriers deliver 10 segments at most reliably


@dataclass(frozen=True)
class SmsSegments:
    """How an SMS body travels: its encoding and how many segments (billed messages) it takes."""

    encoding: str  # GSM-7 or UCS-2
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)


def sms_segments(body: str) -> SmsSegments:
    """GSM-7 when every character is in the GSM alphabet (160 septets in one segment, 153 per segment of a longer
    message, an extension character counting two), else UCS-2 (70 UTF-16 units, 67 per segment when longer)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in body):
        units, single, part, encoding = sum(2 if c in GSM7_EXTENDED else 1 for c in body), 160, 153, "GSM-7"
    else:
        units, single, part, encoding = len(body.encode("utf-16-le")) // 2, 70, 67, "UCS-2"
    segments = 1 if units <= single else -(-units // part)
    return SmsSegments(encoding, segments, units)


class InvalidNumber(Undeliverable):
    """The user's phone number is not a number a text can go to."""

    code = "invalid_number"


def phone_number(profile: ProfileSnapshot) -> str | None:
    """The user's `phone` trait in E.164 (+14155550123); None when they have none; InvalidNumber when it is no valid
    number. A number without its country code is read in the user's country (the `country` attribute), if known."""
    value = profile.traits.get("phone")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InvalidNumber(f"the `phone` trait is a {type(value).__name__}, not a phone number")
    if len(value) > 64 or _CONTROL.search(value):
        raise InvalidNumber("the `phone` trait is too long or holds control characters")
    country = (profile.attributes.country or "").upper()
    region = country if len(country) == 2 and country.isalpha() else None
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region else " (without a country code, and the user's country unknown)"
        raise InvalidNumber(f"the `phone` trait is not a phone number{hint}: {exc._msg}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber("the `phone` trait is not a valid phone number (no such number range in its country)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class RenderedSms:
    to: str
    body: str
    segments: SmsSegments


def render_sms(send: SendRequested, profile: ProfileSnapshot, to: str) -> RenderedSms:
    """The text for this user, rendered, with its segment count; too long a text is Undeliverable."""
    assert isinstance(send.message, SmsContent)
    body = render_text(send.message.body, template_context(send, profile), "message.body", templates.Budget())
    if not body.strip():
        raise RenderError("message.body rendered to nothing for this user")
    counted = sms_segments(body)
    if counted.segments > SMS_MAX_SEGMENTS:
        raise PayloadTooLarge(
            f"the text takes {counted.segments} {counted.encoding} segments for this user; at most {SMS_MAX_SEGMENTS}"
        )
    return RenderedSms(to, body, counted)


# Twilio's keywords (Advanced Opt-Out defaults): each word alone, any case, surrounding spaces and punctuation ignored.
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP", "OPTIN"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


def sms_keyword(body: str) -> tuple[str, str] | None:
    """What an inbound text asks, as (kind, keyword): kind `stop`, `start` or `help`; None for any other text."""
    word = body.strip().strip(".!?").strip().upper()
    for kind, words in (("stop", OPT_OUT_KEYWORDS), ("start", OPT_IN_KEYWORDS), ("help", HELP_KEYWORDS)):
        if word in words:
            return kind, word
    return None


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """X-Twilio-Signature of a form POST: base64 HMAC-SHA1, under the auth token, of the URL as called followed by
    every parameter's name and value, sorted by name."""
    signed = url + "".join(f"{name}{value}" for name, value in sorted(params, key=lambda p: p[0]))
    return base64.b64encode(hmac.digest(auth_token.encode(), signed.encode(), "sha1")).decode()


# --- subscriptions: the first rule of the send policy (docs/subscriptions.md) -------------------


def subscription_refusal(
    channel: str, subscriptions: SubscriptionsSnapshot, transactional: bool, group_id: str | None
) -> tuple[str, str] | None:
    """Why a send must not go out under the user's subscription states, as (code, reason); None: it may go.

    A marketing send needs its channel not `unsubscribed` (`subscribed`, `opted_in` or never set all send, as
    Braze's default for email) and, when its campaign names a subscription group, the user `subscribed` to it.
    A transactional send ignores both, except an explicit unsubscribe from its campaign's group. Channels with
    no subscription (webhook, in-app) are never refused here.
    """
    entry = subscriptions.groups.get(group_id) if group_id else None
    if entry is not None and entry.state == "unsubscribed":
        return "left_group", f"the user left subscription group {group_id} ({entry.source}, {entry.at:%Y-%m-%d %H:%M} UTC)"
    if transactional:
        return None
    if group_id and entry is None:
        return "not_in_group", f"the user never joined subscription group {group_id}"
    held = getattr(subscriptions, channel, None) if channel in SUBSCRIPTION_CHANNELS else None
    if held is not None and held.state == "unsubscribed":
        return "unsubscribed", f"the user unsubscribed from {channel} ({held.source}, {held.at:%Y-%m-%d %H:%M} UTC)"
    return None
