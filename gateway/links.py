"""The public links in messages: an email's open pixel, its click redirects and one-click unsubscribe.

Whoever holds a message holds its links, so these routes take no key. Each link is a token the dispatcher
signed with HERALD_LINK_KEY (kernel.signing's link tokens) naming the workspace, the send, the user and the
channel (and, for a click, the address it leads to): a token that does not verify under the key, for its
purpose, is a 404, so nobody can forge an unsubscribe, count opens for another send or make this gateway
redirect anywhere a message did not link to. What the link says happened is relayed to the dispatcher,
signed for the workspace the token names, which records it on the user's timeline.

An open or a click is served even when it cannot be recorded (the image and the redirect matter more to
the reader than the count); an unsubscribe is confirmed only once the profiles service holds it.
"""

import base64
import re
from html import escape
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.api import _call, admit, read_limited
from gateway.config import get_settings
from kernel import signing
from kernel.errors import HeraldError, NotFound

log = structlog.get_logger(__name__)
router = APIRouter(tags=["links"])

# The smallest transparent GIF: 1×1, one colour, fully transparent.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
WORKSPACE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
UNSUBSCRIBE_BODY_LIMIT = 4096  # RFC 8058's body is `List-Unsubscribe=One-Click`
NOT_CACHED = {"cache-control": "no-store, private", "referrer-policy": "no-referrer"}
PAGE_HEADERS = {
    **NOT_CACHED,
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
}


def verified(purpose: str, token: str) -> dict[str, Any]:
    """The claims of a link token of `purpose` that verifies under HERALD_LINK_KEY; NotFound for anything else."""
    key = get_settings().link_key
    claims = signing.read_link_token(signing.link_key_bytes(key.get_secret_value()), purpose, token) if key else None
    if (
        claims is None
        or not isinstance(claims.get("w"), str) or not WORKSPACE_ID.fullmatch(claims["w"])
        or not isinstance(claims.get("s"), str) or not isinstance(claims.get("c"), str)
        or not isinstance(claims.get("u"), str | None)
    ):
        raise NotFound("no such link")
    if purpose == "click" and not (isinstance(claims.get("l"), str) and claims["l"].lower().startswith(("http://", "https://"))):
        raise NotFound("no such link")
    return claims


async def record(request: Request, kind: str, claims: dict[str, Any]) -> int:
    """Relay what a link says happened to the dispatcher, signed for the token's workspace; its HTTP status."""
    body = {"kind": kind, "send_id": claims["s"], "user_id": claims["u"], "channel": claims["c"]}
    if kind == "click":
        body |= {"url": claims["l"], "link": claims.get("i")}
    if kind == "unsubscribe" and isinstance(claims.get("g"), str):
        body["group_id"] = claims["g"]
    upstream = await _call(
        request, "POST", f"{get_settings().dispatcher_url}/api/v1/engagement", claims["w"], orjson.dumps(body)
    )
    return upstream.status_code


async def record_quietly(request: Request, kind: str, claims: dict[str, Any]) -> None:
    """Record an open or a click if possible; the reader gets the image or the page either way."""
    try:
        status = await record(request, kind, claims)
    except HeraldError as exc:
        status = exc.status_code
    if status != 200:
        log.warning("engagement_not_recorded", kind=kind, workspace_id=claims["w"], send_id=claims["s"], status=status)


@router.get("/v1/links/o/{token}", include_in_schema=False)
async def open_pixel(token: str, request: Request) -> Response:
    """An email's open pixel: a 1×1 transparent GIF; its loading records `$message_opened` (once per send)."""
    claims = verified("open", token)
    admit(request, claims["w"], "sdk")
    await record_quietly(request, "open", claims)
    return Response(PIXEL, media_type="image/gif", headers=NOT_CACHED)


@router.get("/v1/links/c/{token}", include_in_schema=False)
async def click(token: str, request: Request) -> Response:
    """A wrapped link of an email: records `$message_clicked` (and the open it implies), then redirects to the
    address the message linked to."""
    claims = verified("click", token)
    admit(request, claims["w"], "sdk")
    await record_quietly(request, "click", claims)
    return RedirectResponse(claims["l"], status_code=302, headers=NOT_CACHED)


def page(title: str, text: str, form: bool = False, status_code: int = 200) -> HTMLResponse:
    """A small page that needs no script: a title, a sentence and, for confirming, a button that posts."""
    button = (
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>' if form else ""
    )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;"
        "margin:4rem auto;padding:0 1rem;color:#222}button{font:inherit;padding:.5rem 1.25rem;cursor:pointer}</style>"
        f"</head><body><h1>{escape(title)}</h1><p>{escape(text)}</p>{button}</body></html>"
    )
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


@router.get("/v1/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe_page(token: str) -> HTMLResponse:
    """The page an email's unsubscribe link opens: it asks to confirm (a GET changes nothing: mail scanners follow links)."""
    claims = verified("unsubscribe", token)
    what = "this list" if claims.get("g") else f"these {escape(claims['c'])} messages"
    return page("Unsubscribe", f"Stop receiving {what}?", form=True)


@router.post("/v1/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058: the mail client's POST of `List-Unsubscribe=One-Click`), and the landing
    page's button: the profiles service records it, then the page says so."""
    claims = verified("unsubscribe", token)
    admit(request, claims["w"], "sdk")
    await read_limited(request, UNSUBSCRIBE_BODY_LIMIT)
    try:
        status = await record(request, "unsubscribe", claims)
    except HeraldError as exc:
        status = exc.status_code
    if status != 200:
        log.warning("unsubscribe_not_recorded", workspace_id=claims["w"], send_id=claims["s"], status=status)
        return page("Please try again", "Your unsubscribe could not be recorded just now. Please try again in a minute.",
                    form=True, status_code=503)
    return page("You are unsubscribed", "You will not receive these messages any more.")
