"""Channel providers: SMTP email and HTTP webhooks. They deliver; they decide nothing."""

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import httpx
import orjson

from services.dispatcher.domain import RenderedEmail, RenderedWebhook


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
            raise DeliveryError(f"SMTP unavailable: {exc!r}", transient=True, code="provider_unreachable") from exc
        return str(message["Message-ID"])


class WebhookProvider:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(self, hook: RenderedWebhook, send_id: str) -> str:
        """Deliver one webhook; 2xx succeeds, 408/429/5xx and network errors are retried."""
        headers = {
            "content-type": "application/json",
            "idempotency-key": send_id,
            "x-herald-send-id": send_id,
            **hook.headers,
        }
        try:
            request = self.client.build_request(hook.method, hook.url, content=orjson.dumps(hook.body), headers=headers)
        except (httpx.InvalidURL, UnicodeEncodeError, ValueError, TypeError) as exc:
            # A header value outside Latin-1, a malformed URL: the request cannot be built, nothing was sent.
            raise DeliveryError(f"webhook request refused before sending: {exc}", transient=False, code="invalid_message") from exc
        try:
            response = await self.client.send(request)
        except httpx.TransportError as exc:
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}", transient=True, code="provider_unreachable") from exc
        if response.status_code < 300:
            return f"HTTP {response.status_code}"
        transient = response.status_code in (408, 425, 429) or response.status_code >= 500
        raise DeliveryError(
            f"webhook answered HTTP {response.status_code}",
            transient=transient,
            code=f"http_{response.status_code}",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
