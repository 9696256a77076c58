"""A Twilio-compatible SMS endpoint for development: it issues accounts, takes messages as Twilio's REST API does
(HTTP Basic auth with the account SID and auth token; `To`, `From` or `MessagingServiceSid`, `Body`), answers as
Twilio does (201 with a `sid`; 400 with Twilio's error shape for a bad number), and plays incoming texts to a
webhook, signed as Twilio signs them (X-Twilio-Signature)."""

import base64
import binascii
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import phonenumbers
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from kernel.web import JSON
from services.dispatcher.domain import sms_segments, twilio_signature

ERRORS_URL = "https://www.twilio.com/docs/errors/"


def twilio_error(status: int, code: int, message: str) -> JSON:
    """An error as Twilio's REST API writes one."""
    return JSON({"code": code, "message": message, "more_info": f"{ERRORS_URL}{code}", "status": status}, status_code=status)


class SmsSink:
    """Issued accounts (SID -> auth token) and the texts they sent."""

    def __init__(self, keep: Callable[[dict[str, Any]], None]) -> None:
        self.keep = keep
        self.accounts: dict[str, str] = {}

    def restore(self, item: dict[str, Any]) -> None:
        if item.get("kind") == "twilio_account":
            self.accounts[item["account_sid"]] = item["auth_token"]

    def issued(self) -> list[dict[str, Any]]:
        return [{"kind": "twilio_account", "account_sid": s, "auth_token": t} for s, t in self.accounts.items()]


class Inbound(BaseModel):
    url: str = Field(description="the webhook to call, e.g. the SMS channel's inbound_url")
    account_sid: str
    from_number: str = Field(alias="from")
    to: str
    body: str = Field(max_length=1600)


def _e164(value: str) -> bool:
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return value.startswith("+") and phonenumbers.is_valid_number(parsed) and (
        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == value
    )


def sms_routes(sink: SmsSink) -> APIRouter:
    router = APIRouter(prefix="/twilio")

    @router.post("/accounts", status_code=201)
    async def issue() -> dict[str, str]:
        """A new account: its SID and auth token, to save with PUT /api/v1/channels/sms."""
        sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        sink.accounts[sid] = token
        sink.keep({"kind": "twilio_account", "account_sid": sid, "auth_token": token})
        return {"account_sid": sid, "auth_token": token}

    @router.post("/2010-04-01/Accounts/{account_sid}/Messages.json")
    async def send(account_sid: str, request: Request) -> JSON:
        """Create a message, as Twilio's REST API does."""
        user, token = _basic(request.headers.get("authorization"))
        if user != account_sid or account_sid not in sink.accounts or not secrets.compare_digest(sink.accounts[account_sid], token):
            return twilio_error(401, 20003, "Authenticate")
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True))
        to, sender, service, body = (str(form.get(k, "")) for k in ("To", "From", "MessagingServiceSid", "Body"))
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not _e164(to):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to[:40]}")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message")
        if sender and not _e164(sender):
            return twilio_error(400, 21212, f"Invalid 'From' Phone Number: {sender[:40]}")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        sid, now = "SM" + secrets.token_hex(16), datetime.now(UTC)
        counted = sms_segments(body)
        sink.keep({"kind": "sms", "received_at": now.isoformat(), "sid": sid, "account_sid": account_sid, "to": to,
                   "from": sender or None, "messaging_service_sid": service or None, "body": body,
                   "num_segments": counted.segments, "encoding": counted.encoding})
        return JSON({
            "sid": sid, "account_sid": account_sid, "to": to, "from": sender or None, "messaging_service_sid": service or None,
            "body": body, "status": "queued", "direction": "outbound-api", "num_segments": str(counted.segments),
            "date_created": now.strftime("%a, %d %b %Y %H:%M:%S +0000"), "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
        }, status_code=201)

    @router.post("/inbound")
    async def inbound(body: Inbound) -> dict[str, Any]:
        """Play an incoming text to a webhook, signed with the account's auth token as Twilio signs it."""
        token = sink.accounts.get(body.account_sid)
        if token is None:
            return {"status": 404, "body": "no such account"}
        params = [("MessageSid", "SM" + secrets.token_hex(16)), ("SmsSid", ""), ("AccountSid", body.account_sid),
                  ("From", body.from_number), ("To", body.to), ("Body", body.body), ("NumMedia", "0")]
        params[1] = ("SmsSid", params[0][1])
        headers = {"x-twilio-signature": twilio_signature(token, body.url, params)}
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            answer = await client.post(body.url, data=dict(params), headers=headers)
        return {"status": answer.status_code, "body": answer.text}

    return router


def _basic(header: str | None) -> tuple[str, str]:
    if not header or not header.lower().startswith("basic "):
        return "", ""
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password
