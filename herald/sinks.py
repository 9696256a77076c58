"""Local sinks for development: a real SMTP server and an HTTP webhook catcher.

Everything they receive is listed as JSON at `GET /messages` on the sink's HTTP port (8025 by
default) and appended to `<data dir>/sinks.jsonl`, so a restart keeps the history.
"""

import asyncio
import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Request

from kernel.web import JSON


class Catcher:
    """What the sinks received, in memory and in a JSON-lines file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.emails: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        if path and path.exists():
            for line in path.read_bytes().splitlines():
                item = orjson.loads(line)
                (self.emails if item.get("kind") == "email" else self.webhooks).append(item)

    def keep(self, item: dict[str, Any]) -> None:
        (self.emails if item["kind"] == "email" else self.webhooks).append(item)
        if self.path:
            with self.path.open("ab") as f:
                f.write(orjson.dumps(item) + b"\n")

    def clear(self) -> None:
        self.emails.clear()
        self.webhooks.clear()
        if self.path and self.path.exists():
            self.path.unlink()

    # aiosmtpd handler hook
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain", "html"))
        self.keep(
            {
                "kind": "email",
                "received_at": datetime.now(UTC).isoformat(),
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "subject": str(parsed.get("Subject", "")),
                "message_id": str(parsed.get("Message-ID", "")),
                "send_id": str(parsed.get("X-Herald-Send-Id", "")),
                "body": body.get_content() if body is not None else "",
            }
        )
        return "250 Message accepted for delivery"


def build_http(catcher: Catcher) -> FastAPI:
    """The sink's HTTP side: catches webhooks, lists everything caught."""
    app = FastAPI(title="Herald dev sinks", default_response_class=JSON)

    @app.get("/messages")
    async def messages() -> dict[str, Any]:
        """Every email and webhook caught, oldest first."""
        return {"emails": catcher.emails, "webhooks": catcher.webhooks}

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

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    return app


async def run_sinks(host: str, smtp_port: int, http_port: int, store: Path | None) -> None:
    """Serve the SMTP and HTTP sinks until cancelled."""
    catcher = Catcher(store)
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(catcher, hostname="herald-sink", enable_SMTPUTF8=True), host=host, port=smtp_port
    )
    server = uvicorn.Server(
        uvicorn.Config(build_http(catcher), host=host, port=http_port, log_config=None, access_log=False)
    )
    try:
        await server.serve()
    finally:
        smtp.close()
        await smtp.wait_closed()
