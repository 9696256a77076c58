"""Channel providers: SMTP email, HTTP webhooks, APNs and FCM push, SMS over Twilio. They deliver; they decide nothing.

The webhook provider connects only where `domain.WebhookPolicy` permits. Its connection pool resolves
each host itself, checks every address the name resolves to, and connects to a checked address: the
check and the connection use one answer, so DNS rebinding (a name that resolves to a public address
for the check and to a private one for the connection) has no second lookup to exploit. The URL is
left as it is, so the Host header, TLS SNI and certificate checks name the host, as they must.
"""

import asyncio
import contextlib
import hashlib
import ipaddress
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Literal

import aiosmtplib
import google.auth.exceptions
import google.auth.transport
import google.oauth2.service_account
import httpcore
import httpx
import jwt
import orjson

from kernel import http
from services.dispatcher.credentials import origin_of
from services.dispatcher.domain import (
    ApnsRequest,
    IPAddress,
    RenderedEmail,
    RenderedWebhook,
    WebhookPolicy,
    header_problem,
)

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


class DeadToken(DeliveryError):
    """The provider says this device token will never take a push again (uninstalled, expired, malformed)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, transient=False, code=code)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (its delay-seconds form; an HTTP date is ignored)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


SmtpSecurity = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to submit mail: a workspace's SMTP credentials, or the process-wide relay."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    security: SmtpSecurity = "none"

    def pool_key(self) -> tuple[str, int, str | None, str, str]:
        """Connections are shared only by identical servers and logins (the password by its hash, never kept as a key)."""
        secret = hashlib.sha256((self.password or "").encode()).hexdigest()
        return (self.host.lower(), self.port, self.username, secret, self.security)


# Enhanced status codes (RFC 3463) that say the address itself is bad: no such mailbox or domain, a
# mailbox disabled, a bad address syntax. A 5.7.x (policy: relaying denied, authentication needed) is
# a problem of the sender's setup, and never marks the recipient's address undeliverable.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_BAD_ADDRESS_CODES = (550, 551, 553)


def is_hard_bounce(code: int, message: str) -> bool:
    """Whether an SMTP refusal of a recipient says the address will never take mail."""
    enhanced = _ENHANCED.match(message or "")
    if enhanced:
        cls, subject, detail = enhanced.groups()
        return cls == "5" and (subject == "1" or (subject, detail) == ("2", "1"))
    return code in _BAD_ADDRESS_CODES


class HardBounce(DeliveryError):
    """The server refused the recipient for good (5xx saying the address is bad): the address is undeliverable."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message, transient=False, code="hard_bounce")
        self.address = address


class SmtpPool:
    """Open connections to one SMTP server, reused across messages: at most `size` at once, an idle one closed
    after `idle_seconds` (servers drop idle clients after a few minutes; RFC 5321 asks them to wait 5)."""

    def __init__(self, server: SmtpServer, size: int, timeout: float, idle_seconds: float) -> None:
        self.server, self.timeout, self.idle_seconds = server, timeout, idle_seconds
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self.opened = 0  # connections made, for tests and the bench

    async def _connect(self) -> aiosmtplib.SMTP:
        server = self.server
        client = aiosmtplib.SMTP(
            hostname=server.host, port=server.port, username=server.username, password=server.password,
            use_tls=server.security == "tls", start_tls=server.security == "starttls", timeout=self.timeout,
        )
        await client.connect()
        self.opened += 1
        return client

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < self.idle_seconds:
                return client
            client.close()
        return None

    def _give_back(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            self._idle.append((client, time.monotonic()))

    async def submit(self, sender: str, recipient: str, raw: bytes, utf8: bool) -> str:
        """MAIL, RCPT and DATA on a pooled connection; returns the server's answer to DATA.

        A reused connection the server has meanwhile closed is found at MAIL, before anything of the message
        was sent, and the message goes on a new connection; a failure after MAIL never resends it here.
        """
        options = ["SMTPUTF8"] if utf8 else []
        async with self._slots:
            client = self._take_idle()
            if client is not None:
                try:
                    await client.mail(sender, options=options, encoding="utf-8" if utf8 else "ascii")
                except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError):
                    client.close()
                    client = None
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code != 421:  # 421: the server is closing this connection; a new one may do
                        await self._reset_or_close(client)
                        raise
                    client.close()
                    client = None
                except BaseException:
                    client.close()
                    raise
            if client is None:
                client = await self._connect()
                try:
                    await client.mail(sender, options=options, encoding="utf-8" if utf8 else "ascii")
                except aiosmtplib.SMTPResponseException:
                    await self._reset_or_close(client)
                    raise
                except BaseException:
                    client.close()
                    raise
            try:
                await client.rcpt(recipient, encoding="utf-8" if utf8 else "ascii")
                answer = await client.data(raw)
            except aiosmtplib.SMTPResponseException:
                await self._reset_or_close(client)
                raise
            except BaseException:
                client.close()  # mid-command: the connection's state is unknown
                raise
            self._give_back(client)
            return f"{answer.code} {answer.message}"

    async def _reset_or_close(self, client: aiosmtplib.SMTP) -> None:
        """After a refusal the transaction is abandoned with RSET, and the connection kept if that works."""
        try:
            await client.rset()
        except Exception:
            client.close()
            return
        self._give_back(client)

    async def aclose(self) -> None:
        while self._idle:
            client, _ = self._idle.pop()
            with contextlib.suppress(Exception):
                await client.quit()
            client.close()


class SmtpProvider:
    """Email over SMTP: a pool of connections per server (the workspace's own, or the process-wide relay)."""

    MAX_POOLS = 256  # servers with open connections at once; the least recently used pool is closed first

    def __init__(
        self,
        host: str,
        port: int,
        default_from: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        pool_size: int = 4,
        idle_seconds: float = 30.0,
    ) -> None:
        self.default_server = SmtpServer(host, port, username, password, "starttls" if starttls else "none")
        self.default_from, self.timeout = default_from, timeout
        self.pool_size, self.idle_seconds = pool_size, idle_seconds
        self.pools: OrderedDict[tuple[str, int, str | None, str, str], SmtpPool] = OrderedDict()

    def pool(self, server: SmtpServer) -> SmtpPool:
        """The pool of connections to this server (made on first use)."""
        key = server.pool_key()
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = SmtpPool(server, self.pool_size, self.timeout, self.idle_seconds)
            while len(self.pools) > self.MAX_POOLS:
                _, old = self.pools.popitem(last=False)
                asyncio.get_running_loop().create_task(old.aclose())
        self.pools.move_to_end(key)
        return pool

    def build(self, email: RenderedEmail, send_id: str) -> EmailMessage:
        """The MIME message: text, or multipart/alternative of text and HTML; List-Unsubscribe when a link is given."""
        message = EmailMessage()
        try:
            message["From"] = email.from_address or self.default_from
            message["To"] = email.to
            if email.reply_to:
                message["Reply-To"] = email.reply_to
            message["Subject"] = email.subject
            message["Message-ID"] = make_msgid(idstring=send_id.replace("-", ""), domain="herald.local")
            message["X-Herald-Send-Id"] = send_id
            if email.unsubscribe_url:
                # RFC 8058: one-click unsubscribe is a POST of `List-Unsubscribe=One-Click` to this HTTPS URL.
                message["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
                message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            message.set_content(email.body)
            if email.html is not None:
                message.add_alternative(email.html, subtype="html")
        except (ValueError, TypeError, IndexError) as exc:  # a header the email library refuses: nothing was sent
            raise DeliveryError(f"message refused before sending: {exc}", transient=False, code="invalid_message") from exc
        return message

    async def send(self, email: RenderedEmail, send_id: str, server: SmtpServer | None = None) -> str:
        """Send one email over a pooled connection; returns the Message-ID. A 5xx for a bad address is a HardBounce."""
        message = self.build(email, send_id)
        try:
            sender = message["From"].addresses[0].addr_spec
            utf8 = not (sender + email.to).isascii()
            raw = message.as_bytes(policy=email_policy.SMTPUTF8 if utf8 else email_policy.SMTP)
        except (ValueError, TypeError, IndexError, AttributeError, UnicodeError) as exc:
            raise DeliveryError(f"message refused before sending: {exc}", transient=False, code="invalid_message") from exc
        try:
            await self.pool(server or self.default_server).submit(sender, email.to, raw, utf8)
        except aiosmtplib.SMTPRecipientRefused as exc:
            # 4xx (a full mailbox, greylisting) may pass later; a 5xx naming a bad address is a hard bounce.
            if exc.code < 500:
                raise DeliveryError(f"recipient refused for now: SMTP {exc.code} {exc.message}", transient=True, code="smtp_busy") from exc
            if is_hard_bounce(exc.code, exc.message):
                raise HardBounce(f"hard bounce: SMTP {exc.code} {exc.message}", email.to) from exc
            raise DeliveryError(f"recipient refused: SMTP {exc.code} {exc.message}", transient=False, code="recipient_refused") from exc
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise DeliveryError(f"SMTP unavailable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        except aiosmtplib.SMTPResponseException as exc:
            transient = exc.code < 500
            raise DeliveryError(
                f"SMTP {exc.code}: {exc.message}", transient=transient, code="smtp_busy" if transient else "smtp_refused"
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # The exception's type only: its text names the relay's address, which is no business of the user's timeline.
            raise DeliveryError(f"SMTP unavailable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        return str(message["Message-ID"])

    async def aclose(self) -> None:
        """Close every pooled connection."""
        pools, self.pools = list(self.pools.values()), OrderedDict()
        await asyncio.gather(*(pool.aclose() for pool in pools), return_exceptions=True)


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


# --- push -----------------------------------------------------------------------------------

APNS_TOKEN_REFRESH_SECONDS = 45 * 60  # APNs refuses a provider token older than an hour, and a new one more often than every 20 minutes
APNS_CLIENTS = 64  # HTTP/2 connections kept open, one per team and environment (APNs takes one team's tokens per connection)
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_TOKEN_MARGIN_SECONDS = 300  # an access token is renewed this long before Google says it expires
PUSH_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


@dataclass(frozen=True)
class ApnsCredentials:
    """A team's APNs signing key and the app it pushes to."""

    team_id: str
    key_id: str
    private_key: str
    topic: str
    environment: str = "production"


def _status_error(service: str, status: int, reason: str, retry_after: float | None) -> DeliveryError:
    """The delivery error for a provider's refusal that is not about the device token."""
    if status == 429:
        return DeliveryError(f"{service} is rate limiting ({reason})", transient=True, code="rate_limited", retry_after=retry_after)
    if status >= 500:
        return DeliveryError(f"{service} answered HTTP {status} ({reason})", transient=True, code="provider_unavailable",
                             retry_after=retry_after)
    if status == 413:
        return DeliveryError(f"{service} refused the payload as too large ({reason})", transient=False, code="payload_too_large")
    if status in (401, 403):
        return DeliveryError(f"{service} refused the credentials: {reason}", transient=False, code="provider_auth")
    return DeliveryError(f"{service} refused the push: HTTP {status} {reason}", transient=False, code="provider_rejected")


def _reason_text(value: Any, limit: int = 200) -> str:
    """A provider's reason, as printable text of bounded length (it is stored and shown)."""
    return "".join(c if c.isprintable() else " " for c in str(value))[:limit] if value else "no reason given"


class ApnsProvider:
    """APNs over HTTP/2 with token authentication: an ES256 provider token per team key, reused for
    `APNS_TOKEN_REFRESH_SECONDS`, and a connection per team and environment."""

    def __init__(self, production_url: str, sandbox_url: str, timeout: float) -> None:
        self.urls = {"production": production_url.rstrip("/"), "sandbox": sandbox_url.rstrip("/")}
        self.timeout = timeout
        self._clients: OrderedDict[tuple[str, str], httpx.AsyncClient] = OrderedDict()
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    async def aclose(self) -> None:
        """Close every connection."""
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    def _client(self, credentials: ApnsCredentials) -> httpx.AsyncClient:
        key = (credentials.environment, credentials.team_id)
        client = self._clients.get(key)
        if client is None:
            # HTTP/2 only: over https it is negotiated (ALPN offers only h2), over http (a local sink) it is spoken at once.
            client = httpx.AsyncClient(http1=False, http2=True, timeout=self.timeout, limits=PUSH_LIMITS, trust_env=False)
            self._clients[key] = client
            while len(self._clients) > APNS_CLIENTS:
                _, oldest = self._clients.popitem(last=False)
                asyncio.get_running_loop().create_task(oldest.aclose())
        self._clients.move_to_end(key)
        return client

    def provider_token(self, credentials: ApnsCredentials, now: float | None = None) -> str:
        """The team's provider token (a JWT signed with its .p8 key), made anew once it is `APNS_TOKEN_REFRESH_SECONDS` old."""
        now = time.time() if now is None else now
        cache_key = (credentials.team_id, credentials.key_id, hashlib.sha256(credentials.private_key.encode()).hexdigest())
        cached = self._tokens.get(cache_key)
        if cached is not None and now - cached[1] < APNS_TOKEN_REFRESH_SECONDS:
            return cached[0]
        issued = int(now)
        token = jwt.encode({"iss": credentials.team_id, "iat": issued}, credentials.private_key, algorithm="ES256",
                           headers={"kid": credentials.key_id})
        self._tokens[cache_key] = (token, issued)
        return token

    def forget_token(self, credentials: ApnsCredentials) -> None:
        """Drop the cached provider token (APNs called it expired), so the next request makes a new one."""
        self._tokens = {k: v for k, v in self._tokens.items() if k[:2] != (credentials.team_id, credentials.key_id)}

    async def send(self, credentials: ApnsCredentials, device_token: str, request: ApnsRequest) -> str:
        """Push to one device; returns the apns-id APNs confirmed. DeadToken for a token APNs will never take again."""
        url = f"{self.urls[credentials.environment]}/3/device/{device_token}"
        headers = {**request.headers, "authorization": f"bearer {self.provider_token(credentials)}",
                   "content-type": "application/json"}
        try:
            try:
                response = await self._client(credentials).post(url, content=request.body, headers=headers)
            except httpx.RemoteProtocolError:
                # The connection was closed under this request (an HTTP/2 GOAWAY, which APNs sends when it retires a
                # connection): a stream the server had not begun was not processed, so it goes again at once, on a
                # new connection, instead of waiting for a retry.
                response = await self._client(credentials).post(url, content=request.body, headers=headers)
        except httpx.TransportError as exc:
            raise DeliveryError(f"APNs unreachable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        if response.status_code == 200:
            return response.headers.get("apns-id") or request.headers.get("apns-id", "")
        try:
            reason = _reason_text(orjson.loads(response.content).get("reason"))
        except (orjson.JSONDecodeError, AttributeError):
            reason = "no reason given"
        if response.status_code == 410 or (response.status_code == 400 and reason in ("BadDeviceToken", "DeviceTokenNotForTopic")):
            code = "unregistered" if response.status_code == 410 else "bad_device_token"
            raise DeadToken(f"APNs: the device token is no longer valid ({reason})", code)
        if response.status_code == 403 and reason == "ExpiredProviderToken":
            self.forget_token(credentials)
            raise DeliveryError("APNs called the provider token expired; a new one is made", transient=True, code="provider_auth_expired")
        raise _status_error("APNs", response.status_code, reason, retry_after_seconds(response.headers.get("retry-after")))


class _BlockingRequest(google.auth.transport.Request):
    """google-auth's HTTP transport over a blocking httpx client (used from a worker thread only)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def __call__(
        self, url: str, method: str = "GET", body: bytes | None = None, headers: Mapping[str, str] | None = None,
        timeout: float | None = None, **kwargs: Any,
    ) -> google.auth.transport.Response:
        try:
            response = self.client.request(method, url, content=body, headers=headers, timeout=timeout or self.client.timeout)
        except httpx.HTTPError as exc:
            raise google.auth.exceptions.TransportError(type(exc).__name__) from exc
        return _GoogleResponse(response)


class _GoogleResponse(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class FcmProvider:
    """FCM HTTP v1: an OAuth2 access token minted from the service account (google-auth), reused until
    shortly before it expires, then `POST projects/{project_id}/messages:send`."""

    def __init__(self, base_url: str, timeout: float, token_origins: frozenset[str]) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_origins = token_origins
        self.client = httpx.AsyncClient(timeout=timeout, limits=PUSH_LIMITS, trust_env=False)
        self._minting = httpx.Client(timeout=timeout, trust_env=False)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self.client.aclose()
        self._minting.close()

    @staticmethod
    def _account_key(account: Mapping[str, Any]) -> str:
        return hashlib.sha256(orjson.dumps(dict(account), option=orjson.OPT_SORT_KEYS)).hexdigest()

    async def access_token(self, account: Mapping[str, Any]) -> str:
        """A live access token for the service account, minted (once, however many sends wait) when there is none."""
        key = self._account_key(account)
        cached = self._tokens.get(key)
        if cached is not None and cached[1] - FCM_TOKEN_MARGIN_SECONDS > time.time():
            return cached[0]
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached is not None and cached[1] - FCM_TOKEN_MARGIN_SECONDS > time.time():
                return cached[0]
            if origin_of(str(account.get("token_uri", ""))) not in self.token_origins:
                raise DeliveryError("the service account's token_uri is not on HERALD_FCM_TOKEN_ORIGINS", transient=False,
                                    code="provider_auth")
            token, expires_at = await asyncio.to_thread(self._mint, dict(account))
            self._tokens[key] = (token, expires_at)
            return token

    def _mint(self, account: dict[str, Any]) -> tuple[str, float]:
        """Sign the service account's assertion and trade it for an access token (blocking: run in a thread)."""
        try:
            credentials = google.oauth2.service_account.Credentials.from_service_account_info(account, scopes=[FCM_SCOPE])
            credentials.refresh(_BlockingRequest(self._minting))
        except google.auth.exceptions.RefreshError as exc:
            # The text is Google's (or the token endpoint's) error: invalid_grant, a disabled account, ...
            transient = bool(getattr(exc, "retryable", False))
            raise DeliveryError(f"FCM access token refused: {_reason_text(exc.args[0] if exc.args else exc)}",
                                transient=transient, code="provider_unavailable" if transient else "provider_auth") from exc
        except google.auth.exceptions.TransportError as exc:
            raise DeliveryError(f"FCM token endpoint unreachable: {exc}", transient=True, code="provider_unreachable") from exc
        except (ValueError, KeyError) as exc:
            raise DeliveryError(f"the FCM service account cannot sign: {type(exc).__name__}", transient=False,
                                code="provider_auth") from exc
        expiry = credentials.expiry  # naive UTC, as google-auth keeps it
        expires_at = expiry.replace(tzinfo=UTC).timestamp() if expiry else time.time() + 3000
        return str(credentials.token), expires_at

    def forget_token(self, account: Mapping[str, Any]) -> None:
        self._tokens.pop(self._account_key(account), None)

    async def send(self, account: Mapping[str, Any], message: dict[str, Any]) -> str:
        """Send one message; returns the message name FCM gave it. DeadToken for an unregistered or invalid token."""
        token = await self.access_token(account)
        url = f"{self.base_url}/v1/projects/{account['project_id']}/messages:send"
        try:
            response = await self.client.post(url, content=orjson.dumps(message),
                                              headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
        except httpx.TransportError as exc:
            raise DeliveryError(f"FCM unreachable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        if response.status_code == 200:
            try:
                return str(orjson.loads(response.content).get("name", ""))
            except (orjson.JSONDecodeError, AttributeError):
                return ""
        status, error_code, text, field = _fcm_error(response.content)
        if error_code == "UNREGISTERED" or status == "NOT_FOUND" and error_code is None:
            raise DeadToken(f"FCM: the registration token is no longer valid ({text})", "unregistered")
        if status == "INVALID_ARGUMENT" and (field == "message.token" or "registration token" in text.lower()):
            raise DeadToken(f"FCM: the registration token is not valid ({text})", "bad_device_token")
        if response.status_code == 401:
            self.forget_token(account)  # revoked or expired early: the retry mints a new one
            raise DeliveryError(f"FCM refused the access token ({text})", transient=True, code="provider_auth_expired")
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        raise _status_error("FCM", response.status_code, f"{error_code or status}: {text}", retry_after)


def _fcm_error(content: bytes) -> tuple[str | None, str | None, str, str | None]:
    """An FCM error body's status, FcmError code, message and first invalid field (each None when absent)."""
    try:
        error = orjson.loads(content).get("error") or {}
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    except (orjson.JSONDecodeError, AttributeError):
        return None, None, "no reason given", None
    code = next((d.get("errorCode") for d in details if d.get("errorCode")), None)
    field = next((v.get("field") for d in details for v in d.get("fieldViolations") or [] if isinstance(v, dict)), None)
    return error.get("status"), code, _reason_text(error.get("message")), field


@dataclass(frozen=True)
class TwilioCredentials:
    account_sid: str
    auth_token: str
    from_number: str | None = None
    messaging_service_sid: str | None = None


class InvalidRecipient(DeliveryError):
    """The provider says the number cannot take texts (not a number, unreachable, a landline); `opted_out` when the
    recipient had texted STOP to the sender (Twilio error 21610)."""

    def __init__(self, message: str, code: str, opted_out: bool = False) -> None:
        super().__init__(message, transient=False, code=code)
        self.opted_out = opted_out


# Twilio error codes (https://www.twilio.com/docs/api/errors) that are about the recipient, not the sender.
TWILIO_BAD_NUMBER = {21211: "invalid_number", 21614: "not_mobile", 21612: "unreachable_number", 21408: "region_disabled"}
TWILIO_OPTED_OUT = 21610


class TwilioProvider:
    """SMS over Twilio's REST API (or any compatible one): POST /2010-04-01/Accounts/{sid}/Messages.json, a form
    with To, From or MessagingServiceSid, and Body, under HTTP Basic auth with the account SID and auth token."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.AsyncClient(timeout=timeout, trust_env=False, limits=httpx.Limits(max_keepalive_connections=32))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, credentials: TwilioCredentials, to: str, body: str) -> str:
        """Send one text; returns the message's SID."""
        form = {"To": to, "Body": body}
        if credentials.messaging_service_sid:
            form["MessagingServiceSid"] = credentials.messaging_service_sid
        else:
            form["From"] = credentials.from_number or ""
        url = f"{self.base_url}/2010-04-01/Accounts/{credentials.account_sid}/Messages.json"
        try:
            response = await self.client.post(url, data=form, auth=(credentials.account_sid, credentials.auth_token))
        except httpx.HTTPError as exc:
            raise DeliveryError(f"SMS provider unavailable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        try:
            answer: Any = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        if response.status_code in (200, 201):
            sid = answer.get("sid")
            return str(sid)[:64] if sid else "accepted"
        code, message = answer.get("code"), _reason_text(answer.get("message") or response.reason_phrase)
        said = f"Twilio {response.status_code}" + (f" (error {code})" if code else "") + f": {message}"
        if code == TWILIO_OPTED_OUT:
            raise InvalidRecipient(said, "opted_out", opted_out=True)
        if isinstance(code, int) and code in TWILIO_BAD_NUMBER:
            raise InvalidRecipient(said, TWILIO_BAD_NUMBER[code])
        if response.status_code in (401, 403):
            raise DeliveryError(said, transient=False, code="provider_auth")
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryError(said, transient=True, code=f"http_{response.status_code}",
                                retry_after=retry_after_seconds(response.headers.get("retry-after")))
        raise DeliveryError(said, transient=False, code=f"http_{response.status_code}")
