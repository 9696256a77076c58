"""Pure dispatch rules: render a message for one user, what a template may read, where a webhook may
go and which headers it may carry, when to retry."""

import email.policy
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

import orjson

from kernel.contracts import EmailContent, ProfileSnapshot, SendRequested, WebhookContent
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


def render_email(send: SendRequested, profile: ProfileSnapshot, to: str) -> RenderedEmail:
    """The email for this user: subject and body rendered with their data."""
    assert isinstance(send.message, EmailContent)
    context, budget = template_context(send, profile), templates.Budget()
    sender = send.message.from_address
    if sender is not None and _CONTROL.search(sender):  # saved before `from` was checked (sender_problem)
        raise InvalidAddress("the campaign's `from` holds control characters")
    return RenderedEmail(
        to=to,
        subject=header_text(render_text(send.message.subject, context, "message.subject", budget)),
        body=render_text(send.message.body, context, "message.body", budget),
        from_address=sender,
    )


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
