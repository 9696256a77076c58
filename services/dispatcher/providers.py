"""Channel providers: SMTP email and HTTP webhooks. They deliver; they decide nothing.

The webhook provider connects only where `domain.WebhookPolicy` permits. Its connection pool resolves
each host itself, checks every address the name resolves to, and connects to a checked address: the
check and the connection use one answer, so DNS rebinding (a name that resolves to a public address
for the check and to a private one for the connection) has no second lookup to exploit. The URL is
left as it is, so the Host header, TLS SNI and certificate checks name the host, as they must.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiosmtplib
import httpcore
import httpx
import orjson

from kernel import http
from services.dispatcher.domain import IPAddress, RenderedEmail, RenderedWebhook, WebhookPolicy, header_problem

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
WEBHOOK_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=64)
WEBHOOK_POOL_SHARDS = http.SHARDS  # connection pools the limits are shared among (see kernel.http)


class DeliveryError(Exception):
    """A provider refused or failed; `transient` says whether a retry may succeed.

    `code` is a short label for metrics and the delivery log; `retry_after` is the provider's own
    word on when to try again (seconds), if it gave one.
    """

    def __init__(self, message: str, transient: bool, code: str = "provider_error", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (its delay-seconds form; an HTTP date is ignored)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


class SmtpProvider:
    def __init__(
        self,
        host: str,
        port: int,
        default_from: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.default_from = host, port, default_from
        self.username, self.password, self.starttls, self.timeout = username, password, starttls, timeout

    async def send(self, email: RenderedEmail, send_id: str) -> str:
        """Send one email; returns the Message-ID."""
        message = EmailMessage()
        try:
            message["From"] = email.from_address or self.default_from
            message["To"] = email.to
            message["Subject"] = email.subject
            message["Message-ID"] = make_msgid(idstring=send_id.replace("-", ""), domain="herald.local")
            message["X-Herald-Send-Id"] = send_id
            message.set_content(email.body)
        except (ValueError, TypeError) as exc:  # a header the email library refuses: nothing was sent
            raise DeliveryError(f"message refused before sending: {exc}", transient=False, code="invalid_message") from exc
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # 4xx (a full mailbox, greylisting) may pass later; 5xx is a hard bounce.
            transient = bool(exc.recipients) and all(r.code < 500 for r in exc.recipients)
            raise DeliveryError(
                f"recipient refused: {exc}", transient=transient, code="smtp_busy" if transient else "recipient_refused"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            transient = exc.code < 500
            raise DeliveryError(
                f"SMTP {exc.code}: {exc.message}", transient=transient, code="smtp_busy" if transient else "smtp_refused"
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # The exception's type only: its text names the relay's address, which is no business of the user's timeline.
            raise DeliveryError(f"SMTP unavailable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        return str(message["Message-ID"])


class BlockedAddress(Exception):
    """A webhook's host is, or resolves to, an address the policy does not permit; nothing was sent."""


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address a host name resolves to (an IP address resolves to itself), in the resolver's order."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    # An IPv6 link-local answer carries its zone (`fe80::1%eth0`); ipaddress keeps it, and refuses the address.
    return list(dict.fromkeys(ipaddress.ip_address(str(sockaddr[0])) for *_, sockaddr in answers))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer, connecting only to addresses the policy permits (see the module's docstring)."""

    def __init__(self, policy: WebhookPolicy, resolver: Resolver = resolve) -> None:
        self.policy, self.resolver = policy, resolver
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, refuse unless every address is permitted, then connect to the first address that answers."""
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolver(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("resolving the host timed out") from exc
        except OSError as exc:  # socket.gaierror: no such name, or no answer
            raise httpcore.ConnectError("the host could not be resolved") from exc
        if not addresses or not all(self.policy.permits(host, address) for address in addresses):
            raise BlockedAddress(host)
        failure: Exception = httpcore.ConnectError("no address to connect to")
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: a webhook goes over TCP."""
        raise BlockedAddress(path)

    async def sleep(self, seconds: float) -> None:
        """httpcore's retry pause."""
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool connecting through a GuardedBackend."""

    def __init__(self, policy: WebhookPolicy, limits: httpx.Limits, resolver: Resolver = resolve) -> None:
        super().__init__(limits=limits)
        # httpx builds its pool without a way to pass a network backend: build it again, with ours. The
        # TLS context trusts SSL_CERT_FILE / SSL_CERT_DIR as httpx's would; proxies are the client's affair.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )


class WebhookProvider:
    """Delivers webhooks to the addresses the policy permits, through its own client (close it with `aclose`)."""

    def __init__(
        self,
        policy: WebhookPolicy,
        timeout: float = 10.0,
        limits: httpx.Limits = WEBHOOK_LIMITS,
        resolver: Resolver = resolve,
        shards: int = WEBHOOK_POOL_SHARDS,
    ) -> None:
        # Several smaller pools: httpcore's pool costs more per request the more connections it holds.
        transport = http.sharded(limits, shards, lambda each: GuardedTransport(policy, each, resolver))
        # trust_env=False: an HTTP(S)_PROXY from the environment would resolve and connect past the policy.
        self.client = httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self.client.aclose()

    async def send(self, hook: RenderedWebhook, send_id: str) -> str:
        """Deliver one webhook; 2xx succeeds, 408/429/5xx and network errors are retried.

        What the delivery log learns is a status code or an exception's type, never a response body or
        an exception's text: a webhook must not become a way to read, or map, the network it leaves from.
        """
        for name, value in hook.headers.items():
            if problem := header_problem(name, value):  # a campaign saved before headers were checked
                raise DeliveryError(f"webhook header refused: {problem}", transient=False, code="invalid_message")
        headers = {"content-type": "application/json", **hook.headers, "idempotency-key": send_id, "x-herald-send-id": send_id}
        try:
            request = self.client.build_request(hook.method, hook.url, content=orjson.dumps(hook.body), headers=headers)
        except (httpx.InvalidURL, UnicodeEncodeError, ValueError, TypeError) as exc:
            # A malformed URL, a body orjson cannot write: the request cannot be built, nothing was sent.
            raise DeliveryError(
                f"webhook request refused before sending: {type(exc).__name__}", transient=False, code="invalid_message"
            ) from exc
        try:
            # Streamed and closed unread: only the status counts, and a huge body is never buffered.
            response = await self.client.send(request, stream=True)
        except BlockedAddress as exc:
            raise DeliveryError(
                "webhook refused: its host is, or resolves to, an address webhooks may not reach "
                "(loopback, private, link-local, multicast, reserved or unspecified)",
                transient=False,
                code="blocked_address",
            ) from exc
        except httpx.TransportError as exc:
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        await response.aclose()
        if response.status_code < 300:
            return f"HTTP {response.status_code}"
        transient = response.status_code in (408, 425, 429) or response.status_code >= 500
        raise DeliveryError(
            f"webhook answered HTTP {response.status_code}",
            transient=transient,
            code=f"http_{response.status_code}",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
