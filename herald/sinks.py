"""Local sinks for development: a real SMTP server, an HTTP webhook catcher, APNs- and FCM-compatible
push endpoints and a Twilio-compatible SMS endpoint that check requests as the providers do.

Everything they receive is listed as JSON at `GET /messages` on the sink's HTTP port (8025 by
default) and appended to `<data dir>/sinks.jsonl`, so a restart keeps the history. The HTTP port
speaks HTTP/1.1 and HTTP/2 (cleartext, prior knowledge, as the APNs client does); see
`herald.push_sinks` for the push side.
"""

import asyncio
import email
import email.policy
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Request
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from pydantic import BaseModel, Field

from herald.push_sinks import PushSink, push_routes
from herald.sms_sink import SmsSink, sms_routes
from kernel.web import JSON

# Headers of a caught email that /messages shows.
EMAIL_HEADERS = ("From", "To", "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version")
# What the JSON-lines file holds, by kind; the push sink's issued keys come back to it on a restart.
LISTS = {"email": "emails", "webhook": "webhooks", "push": "pushes", "sms": "texts"}


class Catcher:
    """What the sinks received, in memory and in a JSON-lines file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.emails: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        self.pushes: list[dict[str, Any]] = []
        self.texts: list[dict[str, Any]] = []
        self.sms = SmsSink(self.keep)
        self.bounces: dict[str, str] = {}  # address -> the SMTP reply its RCPT gets
        self.smtp_connections = 0
        self.push = PushSink(self.keep)
        if path and path.exists():
            for line in path.read_bytes().splitlines():
                item = orjson.loads(line)
                if item.get("kind") in LISTS:
                    getattr(self, LISTS[item["kind"]]).append(item)
                else:
                    self.push.restore(item)
                    self.sms.restore(item)

    def keep(self, item: dict[str, Any]) -> None:
        if item["kind"] in LISTS:
            getattr(self, LISTS[item["kind"]]).append(item)
        if self.path:
            with self.path.open("ab") as f:
                f.write(orjson.dumps(item) + b"\n")

    def clear(self) -> None:
        """Forget what was caught (issued push credentials stay valid)."""
        self.emails.clear()
        self.webhooks.clear()
        self.pushes.clear()
        self.texts.clear()
        if self.path and self.path.exists():
            self.path.unlink()
            for item in [*self.push.issued(), *self.sms.issued()]:
                self.keep(item)

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        """Refuse an address on the bounce list as a mail server does (a hard bounce by default), else take it."""
        refusal = self.bounces.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        text = parsed.get_body(preferencelist=("plain",))
        html = parsed.get_body(preferencelist=("html",))
        self.keep(
            {
                "kind": "email",
                "received_at": datetime.now(UTC).isoformat(),
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "subject": str(parsed.get("Subject", "")),
                "message_id": str(parsed.get("Message-ID", "")),
                "send_id": str(parsed.get("X-Herald-Send-Id", "")),
                "body": text.get_content() if text is not None else "",
                "html": html.get_content() if html is not None else None,
                "content_type": parsed.get_content_type(),
                "parts": [part.get_content_type() for part in parsed.walk()],
                "headers": {name: str(parsed[name]) for name in EMAIL_HEADERS if name in parsed},
                "connection": id(session),  # which SMTP connection carried it: pooled sends share one
            }
        )
        return "250 Message accepted for delivery"


class Bounce(BaseModel):
    address: str = Field(max_length=320)
    code: int = Field(550, ge=400, le=599)
    message: str = Field("5.1.1 <mailbox> User unknown", max_length=200, pattern=r"^[\x20-\x7e]*$")


def smtp_server(catcher: Catcher) -> SMTP:
    """One SMTP connection's protocol handler, counted (to see connections reused)."""
    catcher.smtp_connections += 1
    return SMTP(catcher, hostname="herald-sink", enable_SMTPUTF8=True)


def build_http(catcher: Catcher) -> FastAPI:
    """The sink's HTTP side: catches webhooks, lists everything caught."""
    app = FastAPI(title="Herald dev sinks", default_response_class=JSON)

    @app.get("/messages")
    async def messages() -> dict[str, Any]:
        """Every email, webhook, push and text caught, oldest first."""
        return {"emails": catcher.emails, "webhooks": catcher.webhooks, "pushes": catcher.pushes, "texts": catcher.texts}

    @app.delete("/messages", status_code=204)
    async def clear() -> None:
        """Forget everything caught."""
        catcher.clear()

    @app.api_route("/webhooks/{path:path}", methods=["POST", "PUT", "PATCH"])
    async def webhook(path: str, request: Request) -> dict[str, bool]:
        """Catch a webhook call at any path under /webhooks/."""
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        catcher.keep(
            {
                "kind": "webhook",
                "received_at": datetime.now(UTC).isoformat(),
                "method": request.method,
                "path": "/webhooks/" + path,
                "headers": {k: v for k, v in request.headers.items() if k.startswith(("x-", "idempotency", "content-type"))},
                "body": body,
            }
        )
        return {"ok": True}

    @app.post("/email/bounces", status_code=204)
    async def bounce(body: Bounce) -> None:
        """From now on, refuse mail to this address at RCPT with this reply (a hard bounce by default)."""
        catcher.bounces[body.address.lower()] = f"{body.code} {body.message}"

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    app.include_router(push_routes(catcher.push))
    app.include_router(sms_routes(catcher.sms))
    return app


@asynccontextmanager
async def serving_http(app: FastAPI, host: str, port: int) -> AsyncIterator[None]:
    """Serve an ASGI app over HTTP/1.1 and cleartext HTTP/2 (hypercorn) while the block runs."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 2.0
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        while not server.done():  # hypercorn has no "started" flag: wait for the port to answer
            try:
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        yield
    finally:
        stop.set()
        with suppress(asyncio.CancelledError):
            await server


async def run_sinks(host: str, smtp_port: int, http_port: int, store: Path | None) -> None:
    """Serve the SMTP and HTTP sinks until SIGTERM or SIGINT."""
    catcher = Catcher(store)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    smtp = await loop.create_server(lambda: smtp_server(catcher), host=host, port=smtp_port)
    try:
        async with serving_http(build_http(catcher), host, http_port):
            await stop.wait()
    finally:
        smtp.close()
        await smtp.wait_closed()
