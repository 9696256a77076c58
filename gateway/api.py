"""Gateway routes: Segment-compatible SDK calls and the authenticated internal API."""

import time
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, quote, unquote_to_bytes, urlencode

import httpx
import orjson
import structlog
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import domain, ratelimit, repository, service, streaming
from gateway.config import get_settings
from gateway.domain import Access, Family
from gateway.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut
from gateway.service import ApiGrant
from kernel import signing
from kernel.db import unit_of_work
from kernel.errors import (
    Forbidden,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UpstreamTimeout,
)
from kernel.logging import CORRELATION_HEADER, current_correlation_id
from kernel.web import JSON, Res, Resources

log = structlog.get_logger(__name__)
router = APIRouter()
M = TypeVar("M", bound=BaseModel)

SDK_CALLS = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")
BATCH_CALLS = ("batch", "import")
# The short paths the client SDKs post to: analytics.js / analytics-next send single calls to
# `{apiHost}/t` etc. (and batches to `/b`), the mobile SDKs upload their gzip batches to `/b`.
SDK_SHORT_PATHS = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias", "b": "batch"}
API_BODY_LIMIT = 1024 * 1024
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


def _upstream_headers(request: Request) -> dict[str, str]:
    # Built from scratch, never copied: a client cannot smuggle a workspace or a signature.
    client = request.client.host if request.client else ""
    # A client's headers are passed on only as ASCII the services can read (see printable_header).
    return {
        "content-type": "application/json",
        CORRELATION_HEADER: current_correlation_id() or "",
        "x-forwarded-for": service.forwarded_for(request.headers.get("x-forwarded-for"), client),
        "user-agent": service.printable_header(request.headers.get("user-agent")),
    }


async def _call(
    request: Request, method: str, url: str, workspace_id: str, body: bytes | None = None
) -> httpx.Response:
    """Forward to a service, signed for this workspace and this exact request (kernel.signing)."""
    res: Resources = request.app.state.resources
    assert res.http is not None
    auth = signing.GatewayAuth(request.app.state.signer, workspace_id)
    try:
        return await res.http.request(method, url, content=body, headers=_upstream_headers(request), auth=auth)
    except httpx.TimeoutException as exc:
        if not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):  # it reached the service, which may finish
            upstream = httpx.URL(url).netloc.decode()
            log.warning("upstream_timed_out", upstream=upstream, error_type=type(exc).__name__)
            raise UpstreamTimeout(
                f"an internal service did not answer within {get_settings().upstream_timeout_seconds:g} s; "
                "the request may still take effect: check before repeating it"
            ) from exc
        log.warning("upstream_unreachable", upstream=httpx.URL(url).netloc.decode(), error_type=type(exc).__name__)
        raise Unavailable(f"an internal service is unreachable ({type(exc).__name__})") from exc
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


def _sdk_route(path: str, call: str) -> Any:
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

    sdk_call.__name__ = f"sdk_{path}"
    sdk_call.__doc__ = (
        f"Segment-compatible `{call}` call, authenticated by a write key."
        if path == call
        else f"`{call}` at the short path the client SDKs post to (`/v1/{path}`), authenticated by a write key."
    )
    return sdk_call


# Segment's HTTP Tracking API shapes (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/);
# ingest validates each call, and drops a malformed call of a batch with its reason.
_SDK_BODY = {
    kind: {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": description, "additionalProperties": True,
        **({"required": ["batch"], "properties": {"batch": {"type": "array", "items": {"type": "object"}}}}
           if kind == "batch" else {}),
    }}}}}
    for kind, description in (
        ("call", "one Segment call: userId or anonymousId, and event (track), traits, properties, context, timestamp …"),
        ("batch", "Segment calls under `batch`, each with its `type`; `context`, `integrations` and `sentAt` apply to all"),
    )
}

for _path, _call_name in (*((c, c) for c in SDK_CALLS), *SDK_SHORT_PATHS.items()):
    router.add_api_route(
        f"/v1/{_path}", _sdk_route(_path, _call_name), methods=["POST"], tags=["sdk"],
        openapi_extra=_SDK_BODY["batch" if _call_name in BATCH_CALLS else "call"],
    )

SETTINGS_CACHE_SECONDS = 300


@router.get("/v1/projects/{write_key}/settings", tags=["sdk"])
async def sdk_settings(write_key: str, request: Request, res: Res) -> Response:
    """The settings analytics-next and the mobile SDKs load from their `cdnURL` / `cdnHost`.

    They name where to send calls (`integrations["Segment.io"]`: `apiHost`, `protocol`), so a
    client configured with only Herald's host sends everything here and nothing to Segment.
    """
    if not service.plausible_key(write_key):
        raise NotFound("no such write key")
    try:
        await service.workspace_for_write_key(res.db, request.app.state.key_cache, write_key)
    except Unauthorized:
        raise NotFound("no such write key") from None
    public_url = get_settings().public_url
    scheme, host = service.public_origin(
        public_url,
        request.url.scheme,
        service.printable_header(request.headers.get("x-forwarded-proto")),
        service.printable_header(request.headers.get("x-forwarded-host") or request.headers.get("host")),
    )
    body = service.sdk_settings(write_key, scheme, host)
    headers = {"cache-control": f"public, max-age={SETTINGS_CACHE_SECONDS}"}
    if not public_url:  # the answer names the host it was asked on
        headers["vary"] = "Host, X-Forwarded-Host, X-Forwarded-Proto"
    return JSON(body, headers=headers)


# --- the internal API: an explicit table of what the services serve -------------------------

Upstream = Literal["ingest", "profiles", "segmenter", "scheduler", "dispatcher", "messages"]
# Every method a client may try; the table decides which of them a route takes (405 otherwise).
API_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
API_PREFIX = b"/api/v1/"


@dataclass(frozen=True)
class ApiRoute:
    """One management route a service serves: its path under /api/v1/, its methods and who answers it."""

    template: str
    methods: tuple[str, ...]
    upstream: Upstream
    family: Family
    streamed: bool = False  # the answer is relayed as it arrives (a user's export), never buffered whole

    @property
    def parts(self) -> list[str]:
        """The template's segments; `{name}` marks a path parameter."""
        return self.template.split("/")


# What ingest, profiles, the segmenter and the scheduler serve under /api/v1 (each service's api.py), and
# the users' messages the gateway composes from the scheduler and the dispatcher. Nothing else
# reaches a service: not its /docs, /openapi.json or /metrics, and no route it does not list here.
API_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("ingest/rejections", ("GET",), "ingest", "ingest"),
    ApiRoute("users", ("GET",), "profiles", "users"),
    ApiRoute("users/{user_id}", ("GET", "DELETE"), "profiles", "users"),
    ApiRoute("users/{user_id}/export", ("GET",), "profiles", "users", streamed=True),
    ApiRoute("erasures/{erasure_id}", ("GET",), "profiles", "users"),
    ApiRoute("users/{user_id}/events", ("GET",), "profiles", "users"),
    ApiRoute("users/{user_id}/devices", ("POST",), "profiles", "users"),
    ApiRoute("users/{user_id}/subscriptions", ("GET", "PUT"), "profiles", "users"),
    ApiRoute("users/{user_id}/consents", ("GET", "POST"), "profiles", "users"),
    ApiRoute("devices/deactivate", ("POST",), "profiles", "users"),
    ApiRoute("attributes", ("GET",), "profiles", "users"),
    ApiRoute("users/{user_id}/messages", ("GET",), "messages", "users"),
    ApiRoute("users/{user_id}/segments", ("GET",), "segmenter", "users"),
    ApiRoute("segments", ("GET", "POST"), "segmenter", "segments"),
    ApiRoute("segments/preview", ("POST",), "segmenter", "segments"),  # before segments/{segment_id}: it would take it
    ApiRoute("segments/{segment_id}", ("GET", "PATCH"), "segmenter", "segments"),
    ApiRoute("segments/{segment_id}/archive", ("POST",), "segmenter", "segments"),
    ApiRoute("segments/{segment_id}/unarchive", ("POST",), "segmenter", "segments"),
    ApiRoute("segments/{segment_id}/reach", ("GET",), "segmenter", "segments"),
    ApiRoute("campaigns", ("GET", "POST"), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}", ("GET", "PATCH"), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}/archive", ("POST",), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}/unarchive", ("POST",), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}/duplicate", ("POST",), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}/launch", ("POST",), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}/pause", ("POST",), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}/trigger", ("POST",), "scheduler", "campaigns"),
    ApiRoute("campaigns/{campaign_id}/stats", ("GET",), "scheduler", "campaigns"),
    ApiRoute("settings/delivery", ("GET", "PUT"), "scheduler", "campaigns"),  # caps, holdout, time zone: the campaigns' policy
    ApiRoute("subscription-groups", ("GET", "POST"), "profiles", "campaigns"),  # the lists campaigns send to
    ApiRoute("subscription-groups/{group_id}", ("GET", "PATCH", "DELETE"), "profiles", "campaigns"),
    ApiRoute("subscription-groups/{group_id}/archive", ("POST",), "profiles", "campaigns"),
    ApiRoute("subscription-groups/{group_id}/unarchive", ("POST",), "profiles", "campaigns"),
    ApiRoute("channels", ("GET",), "dispatcher", "channels"),
    ApiRoute("channels/apns", ("GET", "PUT", "DELETE"), "dispatcher", "channels"),
    ApiRoute("channels/fcm", ("GET", "PUT", "DELETE"), "dispatcher", "channels"),
    ApiRoute("channels/email", ("GET", "PUT", "DELETE"), "dispatcher", "channels"),
    ApiRoute("channels/sms", ("GET", "PUT", "DELETE"), "dispatcher", "channels"),
    ApiRoute("channels/test", ("POST",), "dispatcher", "channels"),
)


def _encode_segment(value: bytes) -> str:
    """One path parameter as a single URL segment that reaches the service as exactly `value`."""
    encoded = quote(value, safe="")
    # quote() leaves dots alone, and a URL parser resolves a "." or ".." segment away (httpx does).
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def _fill(route: ApiRoute, segments: list[bytes]) -> str | None:
    """The upstream path of `route` for these raw request segments, or None if they do not fit it.

    Literal segments compare decoded; each parameter is decoded once and re-encoded whole, so
    `%2F`, `%3F`, `%23`, `%2E%2E` and control characters stay inside that one parameter.
    """
    parts = route.parts
    if len(parts) != len(segments):
        return None
    values = [unquote_to_bytes(segment) for segment in segments]
    if any(not part.startswith("{") and value != part.encode() for part, value in zip(parts, values, strict=True)):
        return None
    out: list[str] = []
    for part, value in zip(parts, values, strict=True):
        if not part.startswith("{"):
            out.append(part)
        elif not value:
            return None
        elif b"/" in value or b"\x00" in value:
            # The services route on the decoded path (uvicorn decodes %2F before routing), so an id
            # with "/" would reach a different route there; and PostgreSQL text cannot hold NUL, so
            # no stored id has one. Both name nothing that can be served.
            name = part.strip("{}").replace("_", " ")
            raise NotFound(f"no such {name}: an id containing '/' or NUL cannot be looked up through the API")
        else:
            out.append(_encode_segment(value))
    return "/".join(out)


def resolve_api_route(raw_path: bytes, method: str) -> tuple[ApiRoute, str]:
    """The table's route for a raw request path (percent-encoding intact) and the path to forward.

    An unknown path is a 404; a known one with a method it does not take is a 405 with `Allow`.
    """
    if not raw_path.startswith(API_PREFIX):
        raise NotFound("no API route at this path; see /docs")
    segments = raw_path[len(API_PREFIX):].split(b"/")
    for route in API_ROUTES:
        upstream_path = _fill(route, segments)
        if upstream_path is None:
            continue
        if method not in route.methods:
            raise StarletteHTTPException(405, headers={"Allow": ", ".join(route.methods)})
        return route, upstream_path
    raise NotFound("no API route at this path; the API serves users, devices, segments, campaigns, channels and ingest rejections (see /docs)")


def _raw_path(request: Request) -> bytes:
    """The request path as the client sent it, percent-encoding intact, below the app's root path."""
    raw: bytes | None = request.scope.get("raw_path")
    if raw is None:  # ASGI leaves raw_path optional; uvicorn always sets it
        raw = quote(request.scope["path"], safe="/").encode()
    root = quote(request.scope.get("root_path", ""), safe="/").encode()
    return raw[len(root):] if root and raw.startswith(root) else raw


def _forwarded_query(request: Request) -> str:
    """The query string, parsed and re-encoded, so that it can only ever be a query."""
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    return f"?{urlencode(pairs)}" if pairs else ""


def _service_for(route: ApiRoute) -> str:
    """The base URL of the service that serves `route`."""
    settings = get_settings()
    services = {
        "ingest": settings.ingest_url,
        "profiles": settings.profiles_url,
        "segmenter": settings.segmenter_url,
        "scheduler": settings.scheduler_url,
        "dispatcher": settings.dispatcher_url,
    }
    return services[route.upstream]


class _AnyCharacters(Convertor[str]):
    """A path parameter of any characters, line feeds included (Starlette's `path` is `.*`, which
    stops at one: a user id with a line feed, stored from an SDK call, could not be read back)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _AnyCharacters())


async def authorized(request: Request, res: Resources, family: Family, access: Access) -> ApiGrant:
    """The bearer's grant, counted against the workspace's API rate limit; 401 without a live key, 403 without the scope."""
    key = service.bearer_token(request.headers.get("authorization"))
    grant = await service.grant_for_api_key(res.db, request.app.state.api_key_cache, key)
    admit(request, grant.workspace_id, "api")
    require_scope(grant, family, access)
    return grant


def require_scope(grant: ApiGrant, family: Family, access: Access) -> None:
    """403 unless the grant's scopes allow `access` to `family`."""
    if not domain.allows(grant.scopes, family, access):
        raise Forbidden(
            f"this API key may not {access} {family.replace('_', ' ')} (it needs the `{family}:{access}` scope)",
            error="missing_scope",
        )


def _validated(model: type[M], body: bytes) -> M:
    """A request body as `model`, or the 422 naming each field (read after authentication, never before)."""
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False), body=None) from exc


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


@router.post("/api/v1/api-keys", status_code=201, tags=["api-keys"], openapi_extra=_body_schema(ApiKeyCreate))
async def create_api_key(request: Request, res: Res) -> ApiKeyCreated:
    """Create an API key with scopes no wider than the caller's; the key is in this answer only."""
    grant = await authorized(request, res, "api_keys", "write")
    body = _validated(ApiKeyCreate, await read_limited(request, API_BODY_LIMIT))
    async with unit_of_work(res.db) as session:
        row, key = await service.create_api_key(session, grant, body.name, list(body.scopes))
        return ApiKeyCreated.model_validate({**ApiKeyOut.model_validate(row).model_dump(), "key": key})


@router.get("/api/v1/api-keys", tags=["api-keys"])
async def list_api_keys(request: Request, res: Res) -> ApiKeyList:
    """The workspace's API keys, newest first: name, prefix, scopes, when made, last used and revoked."""
    grant = await authorized(request, res, "api_keys", "read")
    async with unit_of_work(res.db) as session:
        rows = await repository.api_keys_of(session, grant.workspace_id)
        return ApiKeyList(api_keys=[ApiKeyOut.model_validate(row) for row in rows])


@router.delete("/api/v1/api-keys/{key_id}", tags=["api-keys"])
async def revoke_api_key(key_id: str, request: Request, res: Res) -> ApiKeyOut:
    """Revoke a key: refused at once here, and on every other gateway replica within HERALD_API_KEY_CACHE_SECONDS."""
    grant = await authorized(request, res, "api_keys", "write")
    async with unit_of_work(res.db) as session:
        row = await service.revoke_api_key(session, grant.workspace_id, key_id)
        revoked = ApiKeyOut.model_validate(row)
    request.app.state.api_key_cache.forget_where(lambda g: g.key_id == key_id)
    return revoked


@router.api_route("/api/v1/{path:anything}", methods=API_METHODS, include_in_schema=False)
async def api_proxy(path: str, request: Request, res: Res) -> Response:
    """The internal API (users, segments, campaigns), authenticated by `Authorization: Bearer`.

    `path` is matched as the client sent it, never decoded first: each id in it is forwarded
    percent-encoded, so it reaches the service as that literal id.
    """
    key = service.bearer_token(request.headers.get("authorization"))
    grant = await service.grant_for_api_key(res.db, request.app.state.api_key_cache, key)
    workspace_id = grant.workspace_id
    admit(request, workspace_id, "api")
    route, upstream_path = resolve_api_route(_raw_path(request), request.method)
    require_scope(grant, route.family, domain.access_of(request.method))
    query = _forwarded_query(request)
    if route.upstream == "messages":
        return await _user_messages(request, workspace_id, upstream_path + query)
    if route.streamed:
        return await streaming.relay_stream(
            request, f"{_service_for(route)}/api/v1/{upstream_path}{query}", workspace_id, _upstream_headers(request)
        )
    body = await read_limited(request, API_BODY_LIMIT) if request.method != "GET" else None
    upstream = await _call(
        request, request.method, f"{_service_for(route)}/api/v1/{upstream_path}{query}", workspace_id, body
    )
    return _relay(upstream)


async def _user_messages(request: Request, workspace_id: str, path: str) -> Response:
    """Sends to a user with status: the scheduler's decisions joined with the delivery log.

    `path` is already encoded by `resolve_api_route`, with its query.
    """
    settings = get_settings()
    sends = await _call(request, "GET", f"{settings.scheduler_url}/api/v1/{path}", workspace_id)
    if sends.status_code != 200:
        return _relay(sends)
    page = sends.json()["messages"]
    # The deliveries of exactly this page's sends: a page of the delivery log by its own order
    # would miss some of them (a delayed send is delivered after newer ones) and add others.
    lookup = orjson.dumps({"send_ids": [m["send_id"] for m in page]})
    deliveries = await _call(request, "POST", f"{settings.dispatcher_url}/api/v1/deliveries/lookup", workspace_id, lookup)
    if deliveries.status_code != 200:
        return _relay(deliveries)
    return JSON({"messages": service.merge_messages(page, deliveries.json()["messages"])})
