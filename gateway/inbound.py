"""Public webhooks providers call: Twilio's incoming-message webhook (STOP, START, HELP).

A provider cannot present an API key, so these routes take no key: each request is relayed to the
dispatcher, signed for the workspace its path names, and the dispatcher acts only on what the
workspace's provider account signed (X-Twilio-Signature, checked with that account's auth token).
"""

import re
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import orjson
from fastapi import APIRouter, Request, Response

from gateway import service
from gateway.api import _call, _relay, admit, read_limited
from gateway.config import get_settings
from kernel.errors import NotFound

router = APIRouter(tags=["webhooks"])
WORKSPACE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
INBOUND_BODY_LIMIT = 64 * 1024  # an incoming text's form is a few hundred bytes


def called_url(request: Request) -> str:
    """The URL the provider called, as it signed it: under HERALD_PUBLIC_URL when set, else as this request came in
    (X-Forwarded-Proto and -Host honoured, as for the SDK settings)."""
    scheme, host = service.public_origin(
        get_settings().public_url,
        request.url.scheme,
        service.printable_header(request.headers.get("x-forwarded-proto")),
        service.printable_header(request.headers.get("x-forwarded-host") or request.headers.get("host")),
    )
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{scheme}://{host}{request.url.path}{query}"


def twiml(reply: str | None) -> Response:
    """A TwiML answer: a message back, or nothing."""
    inner = f"<Message>{escape(reply)}</Message>" if reply else ""
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>', media_type="text/xml")


@router.post("/v1/sms/inbound/{workspace_id}", include_in_schema=False)
async def sms_inbound(workspace_id: str, request: Request) -> Response:
    """Twilio's incoming-message webhook for a workspace's number: STOP, START and HELP, answered in TwiML."""
    if not WORKSPACE_ID.fullmatch(workspace_id):
        raise NotFound("no such workspace")
    admit(request, workspace_id, "sdk")
    raw = await read_limited(request, INBOUND_BODY_LIMIT)
    params = parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    body = orjson.dumps({"url": called_url(request), "params": params[:200],
                         "signature": service.printable_header(request.headers.get("x-twilio-signature")) or None})
    upstream = await _call(request, "POST", f"{get_settings().dispatcher_url}/api/v1/channels/sms/inbound", workspace_id, body)
    if upstream.status_code != 200:
        return _relay(upstream)
    return twiml(upstream.json().get("reply"))
