"""Braze-compatible user routes at Braze's own paths, so a Braze server integration keeps working when pointed
at Herald: authenticated by an API key (Bearer, `users:write`), handed to ingest, which stores before answering."""

from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.api import API_BODY_LIMIT, _call, _relay, authorized, read_limited
from gateway.config import get_settings
from kernel.web import Res

router = APIRouter(tags=["braze"])


def _body(description: str, arrays: tuple[str, ...]) -> dict[str, Any]:
    schema = {"type": "object", "description": description, "additionalProperties": False,
              "properties": {name: {"type": "array", "items": {"type": "object"}} for name in arrays}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _forward(request: Request, res: Res, path: str) -> Response:
    grant = await authorized(request, res, "users", "write")
    body = await read_limited(request, API_BODY_LIMIT)
    return _relay(await _call(request, "POST", f"{get_settings().ingest_url}/braze/{path}", grant.workspace_id, body))


@router.post("/users/track", openapi_extra=_body(
    "Braze's /users/track: up to 75 attribute, event and purchase objects, each with external_id, user_alias or email",
    ("attributes", "events", "purchases")))
async def braze_track(request: Request, res: Res) -> Response:
    """Braze-compatible `/users/track`: 201 with the counts processed and each refused object's error."""
    return await _forward(request, res, "users/track")


@router.post("/users/identify", openapi_extra=_body(
    "Braze's /users/identify: alias-only (or email-only) profiles to merge into an external id",
    ("aliases_to_identify", "emails_to_identify")))
async def braze_identify(request: Request, res: Res) -> Response:
    """Braze-compatible `/users/identify`: merge alias-only profiles into an external id."""
    return await _forward(request, res, "users/identify")
