"""Gateway routes: Segment-compatible SDK calls and the authenticated internal API."""

import re
import time
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Request, Response

from gateway import ratelimit, service
from gateway.config import get_settings
from kernel.errors import NotFound, PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable
from kernel.logging import CORRELATION_HEADER, current_correlation_id
from kernel.web import INTERNAL_TOKEN_HEADER, JSON, WORKSPACE_HEADER, Res, Resources

log = structlog.get_logger(__name__)
router = APIRouter()

SDK_CALLS = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")
BATCH_CALLS = ("batch", "import")
API_BODY_LIMIT = 1024 * 1024
MESSAGES_PATH = re.compile(r"^users/([^/]+)/messages$")
PASSED_RESPONSE_HEADERS = ("content-type", "retry-after", "location")


async def read_limited(request: Request, limit: int) -> bytes:
    """Read the request body, refusing it as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _upstream_headers(request: Request, workspace_id: str) -> dict[str, str]:
    # Built from scratch, never copied: a client cannot smuggle a workspace or internal token.
    res: Resources = request.app.state.resources
    client = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for")
    return {
        "content-type": "application/json",
        INTERNAL_TOKEN_HEADER: res.settings.internal_token.get_secret_value(),
        WORKSPACE_HEADER: workspace_id,
        CORRELATION_HEADER: current_correlation_id() or "",
        "x-forwarded-for": f"{forwarded}, {client}" if forwarded else client,
        "user-agent": request.headers.get("user-agent", ""),
    }


async def _call(
    request: Request, method: str, url: str, workspace_id: str, body: bytes | None = None
) -> httpx.Response:
    res: Resources = request.app.state.resources
    assert res.http is not None
    try:
        return await res.http.request(
            method, url, content=body, headers=_upstream_headers(request, workspace_id)
        )
    except httpx.TransportError as exc:
        log.warning("upstream_unreachable", upstream=httpx.URL(url).netloc.decode(), error_type=type(exc).__name__)
        raise Unavailable(f"an internal service is unreachable ({type(exc).__name__})") from exc


def _relay(upstream: httpx.Response) -> Response:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_RESPONSE_HEADERS}
    return Response(upstream.content, status_code=upstream.status_code, headers=headers)


def admit(request: Request, workspace_id: str, kind: ratelimit.Kind) -> None:
    """Count this request against the workspace's rate limit, or answer 429 with when to retry."""
    decision = request.app.state.limiter.take(workspace_id, kind, time.time())
    if not decision.allowed:
        raise TooManyRequests(
            f"this workspace may make {decision.limit} {kind.upper()} requests per second; retry after Retry-After",
            headers=decision.headers(),
        )


def _sdk_route(call: str) -> Any:
    limit_name = "max_batch_bytes" if call in BATCH_CALLS else "max_call_bytes"

    async def sdk_call(request: Request, res: Res) -> Response:
        settings = get_settings()
        limit: int = getattr(settings, limit_name)
        raw = await read_limited(request, limit)
        body = service.decode_body(raw, request.headers.get("content-encoding"), limit)
        key = service.basic_auth_user(request.headers.get("authorization"))
        key = key or service.body_write_key(body)
        if not key:
            raise Unauthorized(
                "no write key: send it as the Basic auth user or as `writeKey` in the body"
            )
        workspace_id = await service.workspace_for_write_key(res.db, request.app.state.key_cache, key)
        admit(request, workspace_id, "sdk")
        upstream = await _call(request, "POST", f"{settings.ingest_url}/v1/{call}", workspace_id, body)
        return _relay(upstream)

    sdk_call.__name__ = f"sdk_{call}"
    sdk_call.__doc__ = f"Segment-compatible `{call}` call, authenticated by a write key."
    return sdk_call


for _call_name in SDK_CALLS:
    router.add_api_route(f"/v1/{_call_name}", _sdk_route(_call_name), methods=["POST"], tags=["sdk"])


def _service_for(path: str) -> str:
    settings = get_settings()
    head = path.split("/", 1)[0]
    routes = {
        "users": settings.profiles_url,
        "segments": settings.segmenter_url,
        "campaigns": settings.scheduler_url,
    }
    if head not in routes:
        raise NotFound(f"no API resource {head!r}; see /docs")
    return routes[head]


@router.api_route(
    "/api/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], tags=["api"]
)
async def api_proxy(path: str, request: Request, res: Res) -> Response:
    """The internal API (users, segments, campaigns), authenticated by `Authorization: Bearer`."""
    key = service.bearer_token(request.headers.get("authorization"))
    workspace_id = await service.workspace_for_api_key(res.db, request.app.state.key_cache, key)
    admit(request, workspace_id, "api")
    query = f"?{request.url.query}" if request.url.query else ""
    if request.method == "GET" and MESSAGES_PATH.match(path):
        return await _user_messages(request, workspace_id, path + query)
    body = await read_limited(request, API_BODY_LIMIT) if request.method != "GET" else None
    upstream = await _call(
        request, request.method, f"{_service_for(path)}/api/v1/{path}{query}", workspace_id, body
    )
    return _relay(upstream)


async def _user_messages(request: Request, workspace_id: str, path: str) -> Response:
    """Sends to a user with status: the scheduler's decisions joined with the delivery log."""
    settings = get_settings()
    sends = await _call(request, "GET", f"{settings.scheduler_url}/api/v1/{path}", workspace_id)
    deliveries = await _call(request, "GET", f"{settings.dispatcher_url}/api/v1/{path}", workspace_id)
    for upstream in (sends, deliveries):
        if upstream.status_code != 200:
            return _relay(upstream)
    merged = service.merge_messages(sends.json()["messages"], deliveries.json()["messages"])
    return JSON({"messages": merged})
