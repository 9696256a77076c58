"""Channel providers: SMTP email and HTTP webhooks. They deliver; they decide nothing."""

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import httpx
import orjson

from services.dispatcher.domain import RenderedEmail, RenderedWebhook


class DeliveryError(Exception):
    """A provider refused or failed; `transient` says whether a retry may succeed."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


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
        message["From"] = email.from_address or self.default_from
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Message-ID"] = make_msgid(idstring=send_id.replace("-", ""), domain="herald.local")
        message["X-Herald-Send-Id"] = send_id
        message.set_content(email.body)
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
            raise DeliveryError(f"recipient refused: {exc}", transient=False) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.code}: {exc.message}", transient=exc.code < 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"SMTP unavailable: {exc!r}", transient=True) from exc
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
            response = await self.client.request(
                hook.method, hook.url, content=orjson.dumps(hook.body), headers=headers
            )
        except httpx.TransportError as exc:
            raise DeliveryError(f"webhook unreachable: {exc!r}", transient=True) from exc
        if response.status_code < 300:
            return f"HTTP {response.status_code}"
        transient = response.status_code in (408, 425, 429) or response.status_code >= 500
        raise DeliveryError(f"webhook answered HTTP {response.status_code}", transient=transient)
