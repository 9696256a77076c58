"""In-app messages and content cards for apps: a user's feed and their reports of what they did with a message,
authenticated by the app's write key (Basic auth, as the SDK calls, or `writeKey`), with CORS for web apps
(gateway.app.SdkCors covers every /v1 path). The dispatcher keeps the messages and answers both."""

import re
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter, Query, Request, Response

from gateway import service
from gateway.api import _call, _relay, admit, read_limited
from gateway.config import get_settings
from kernel.errors import BadRequest, NotFound, Unauthorized
from kernel.web import Res
from services.dispatcher.inbox.schemas import (
    FEED_LIMIT_DEFAULT,
    FeedChannel,
    FeedLimit,
    Identity,
    InboxEventIn,
    InboxEventOut,
    InboxFeed,
)

router = APIRouter(tags=["sdk"])
MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
EVENT_BODY_LIMIT = 4 * 1024  # a report is a few dozen bytes
WriteKeyQuery = Annotated[
    str | None, Query(alias="writeKey", max_length=service.MAX_KEY_LENGTH, description="the write key, when not in Basic auth")
]


async def _workspace(request: Request, res: Res, key: str | None) -> str:
    """The workspace of the write key given (Basic auth first), counted against its SDK rate limit; 401 without one."""
    key = service.basic_auth_user(request.headers.get("authorization")) or key
    if not key or not service.plausible_key(key):
        raise Unauthorized("no write key: send it as the Basic auth user or as `writeKey`")
    workspace_id = await service.workspace_for_write_key(res.db, request.app.state.key_cache, key)
    admit(request, workspace_id, "sdk")
    return workspace_id


@router.get("/v1/messages", response_model=InboxFeed)
async def inbox_messages(
    request: Request,
    res: Res,
    user_id: Annotated[Identity | None, Query(alias="userId", description="the user, as the app identified them")] = None,
    anonymous_id: Annotated[Identity | None, Query(alias="anonymousId", description="else the anonymous id")] = None,
    channel: Annotated[FeedChannel | None, Query(description="only in-app messages, or only content cards")] = None,
    limit: Annotated[FeedLimit, Query(description="at most this many")] = FEED_LIMIT_DEFAULT,
    write_key: WriteKeyQuery = None,
) -> Response:
    """The in-app messages and content cards this user is eligible for now, rendered: pinned first, then newest;
    none expired or dismissed, and an in-app message only until its impression is reported."""
    workspace_id = await _workspace(request, res, write_key)
    query = {"userId": user_id, "anonymousId": anonymous_id, "channel": channel, "limit": limit}
    params = urlencode({k: v for k, v in query.items() if v is not None})
    url = f"{get_settings().dispatcher_url}/api/v1/inbox/messages?{params}"
    answer = _relay(await _call(request, "GET", url, workspace_id))
    answer.headers["cache-control"] = "no-store"  # one user's messages: no shared cache may keep them
    return answer


_EVENT_SCHEMA: dict[str, Any] = InboxEventIn.model_json_schema()
_EVENT_SCHEMA["properties"]["writeKey"] = {"type": "string", "description": "the write key, when not in Basic auth"}


@router.post(
    "/v1/messages/{message_id}/events", response_model=InboxEventOut,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT_SCHEMA}}}},
)
async def inbox_event(message_id: str, request: Request, res: Res, write_key: WriteKeyQuery = None) -> Response:
    """Report that the user saw (`impression`), clicked (`click`, with `button` for a button) or dismissed
    (`dismissal`) a message: recorded once, and put on their timeline as `$message_viewed`, `$message_clicked` or
    `$message_dismissed`. A message that is not this user's is a 404."""
    raw = await read_limited(request, EVENT_BODY_LIMIT)
    body = service.decode_body(raw, request.headers.get("content-encoding"), EVENT_BODY_LIMIT)
    try:
        report = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", error="invalid_json") from exc
    in_body = report.pop("writeKey", None) if isinstance(report, dict) else None
    workspace_id = await _workspace(request, res, write_key or (in_body if isinstance(in_body, str) else None))
    if not MESSAGE_ID.fullmatch(message_id):
        raise NotFound("no such message for this user")
    url = f"{get_settings().dispatcher_url}/api/v1/inbox/messages/{quote(message_id, safe='')}/events"
    return _relay(await _call(request, "POST", url, workspace_id, orjson.dumps(report)))
