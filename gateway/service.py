"""Gateway use cases: credentials, request bodies, authentication, forwarding and composition."""

import base64
import binascii
import hashlib
import ipaddress
import re
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import domain, repository
from gateway.domain import ADMIN
from gateway.models import ApiKey, App, Workspace
from gateway.schemas import WorkspaceCreated
from kernel.db import unit_of_work
from kernel.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    is_dependency_outage,
)

# How long after its last successful lookup a write key is still honoured while PostgreSQL is
# unreachable. Write keys are public (they ship inside apps), so serving a slightly old answer is
# safe, and it keeps SDK traffic flowing through a database outage or failover; API keys are
# secret and revocable, so they never get this grace.
STALE_WRITE_KEY_SECONDS = 3600.0


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """A new API key: (the key, shown once; its prefix, shown always; its SHA-256, stored)."""
    key = "hk_" + secrets.token_urlsafe(32)
    return key, key[:8], hash_key(key)


async def create_workspace(session: AsyncSession, name: str) -> WorkspaceCreated:
    """Create a workspace with one app (write key) and one admin API key, returned in the clear once."""
    workspace = Workspace(id=new_id("ws"), name=name)
    write_key = "wk_" + secrets.token_urlsafe(24)
    api_key, prefix, key_hash = new_api_key()
    app = App(id=new_id("app"), workspace_id=workspace.id, name=f"{name} app", write_key=write_key)
    key = ApiKey(
        id=new_id("key"), workspace_id=workspace.id, name="default", prefix=prefix, key_hash=key_hash, scopes=[ADMIN]
    )
    await repository.add_workspace(session, workspace, app, key)
    return WorkspaceCreated(
        workspace_id=workspace.id, name=name, write_key=write_key, api_key=api_key
    )


async def create_api_key(session: AsyncSession, grant: "ApiGrant", name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """A new key of the grant's workspace with `scopes` (never more than the grant holds); (its row, the key once)."""
    missing = domain.beyond(grant.scopes, scopes)
    if missing:
        raise Forbidden(f"this key cannot grant scopes it does not hold: {', '.join(missing)}", error="scope_not_held")
    key, prefix, key_hash = new_api_key()
    row = ApiKey(
        id=new_id("key"), workspace_id=grant.workspace_id, name=name, prefix=prefix, key_hash=key_hash,
        scopes=sorted(set(scopes)), created_at=datetime.now(UTC),
    )
    await repository.add_api_key(session, row)
    return row, key


async def revoke_api_key(session: AsyncSession, workspace_id: str, key_id: str) -> ApiKey:
    """Revoke a key of the workspace (again: the same answer); 404 if it has none by that id.

    The workspace keeps at least one live key that can manage keys, or nobody could make another.
    """
    keys = await repository.lock_live_api_keys(session, workspace_id)
    row = await repository.api_key(session, workspace_id, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id!r} in this workspace")
    if row.revoked_at is not None:
        return row
    managers = [k for k in keys if domain.can_manage_keys(k.scopes)]
    if managers == [row]:
        raise Conflict(
            "this is the workspace's last key that can manage keys (api_keys:write); create another before revoking it",
            error="last_key",
        )
    row.revoked_at = datetime.now(UTC)
    await session.flush()
    return row


V = TypeVar("V")


class KeyCache(Generic[V]):
    """Remembers key → what it grants for a short time so each call does not hit PostgreSQL.

    An entry is fresh for `ttl` seconds; after that it is only kept as the last known answer, which
    `get_stale` returns for callers that may use it while PostgreSQL is unreachable.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[V, float]] = {}

    def get(self, key: str) -> V | None:
        """What `key` grants if it was looked up less than `ttl` seconds ago."""
        hit = self._entries.get(key)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def get_stale(self, key: str, max_age: float) -> V | None:
        """The last known grant of `key`, if it went stale less than `max_age` seconds ago."""
        hit = self._entries.get(key)
        if hit is None or hit[1] + max_age < time.monotonic():
            return None
        return hit[0]

    def put(self, key: str, value: V) -> None:
        """Remember a successful lookup."""
        if len(self._entries) > 100_000:
            self._entries.clear()
        self._entries[key] = (value, time.monotonic() + self.ttl)

    def forget(self, key: str) -> None:
        """Drop what is known about `key` (PostgreSQL says it no longer exists)."""
        self._entries.pop(key, None)

    def forget_where(self, matches: Callable[[V], bool]) -> None:
        """Drop every entry whose grant `matches` (a key revoked on this replica stops here at once)."""
        for key in [k for k, (value, _) in self._entries.items() if matches(value)]:
            del self._entries[key]


@dataclass(frozen=True)
class ApiGrant:
    """What an API key lets its bearer do: which workspace, as which key, with which scopes."""

    workspace_id: str
    key_id: str
    scopes: tuple[str, ...]


async def workspace_for_write_key(sessions: async_sessionmaker[AsyncSession], cache: KeyCache[str], key: str) -> str:
    """The workspace owning an SDK write key, or 401; while PostgreSQL is unreachable, its last known one.

    Without a recent enough answer to fall back on, the outage propagates (a 503).
    """
    entry = "w:" + key
    workspace = cache.get(entry)
    if workspace is not None:
        return workspace
    try:
        async with unit_of_work(sessions) as session:
            workspace = await repository.workspace_for_write_key(session, key)
    except Exception as exc:
        stale = cache.get_stale(entry, STALE_WRITE_KEY_SECONDS) if is_dependency_outage(exc) else None
        if stale is None:
            raise
        return stale
    if workspace is None:
        cache.forget(entry)
        raise Unauthorized("unknown write key")
    cache.put(entry, workspace)
    return workspace


async def grant_for_api_key(sessions: async_sessionmaker[AsyncSession], cache: KeyCache[ApiGrant], key: str) -> ApiGrant:
    """What an API key grants, or 401 (no stale answers: API keys are revocable secrets).

    Looked up at most once per cache period (seconds) per replica, which also records the key's use:
    a key revoked on any replica stops working everywhere within that period.
    """
    key_hash = hash_key(key)
    grant = cache.get(key_hash)
    if grant is None:
        async with unit_of_work(sessions) as session:
            found = await repository.use_api_key(session, key_hash)
        if found is None:
            raise Unauthorized("unknown or revoked API key", error="unauthorized")
        grant = ApiGrant(found.workspace_id, found.id, tuple(found.scopes))
        cache.put(key_hash, grant)
    return grant


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Un-gzip (if asked) and enforce the size limit on what the JSON really weighs."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise BadRequest(f"body is not valid gzip: {exc}", error="invalid_gzip") from exc
        if len(body) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes")
        return body
    if encoding not in ("", "identity"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    if len(raw) > limit:
        raise PayloadTooLarge(f"body exceeds {limit} bytes")
    return raw


# What a write or API key can look like: Herald issues URL-safe tokens, Segment's keys are
# alphanumeric. Anything else (non-ASCII, control characters, NUL, longer) is refused before a lookup:
# PostgreSQL would refuse a NUL in the query, and no key that long exists.
MAX_KEY_LENGTH = 256


def plausible_key(key: str) -> bool:
    """Whether `key` could be a key at all: 1 to MAX_KEY_LENGTH printable ASCII characters, no spaces."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable() and " " not in key


MAX_FORWARDED_HEADER = 512
MAX_FORWARDED_HOPS = 16


def printable_header(value: str | None, limit: int = MAX_FORWARDED_HEADER) -> str:
    """A client's header value fit to pass on: printable ASCII (anything else becomes `?`), at most `limit` characters.

    Starlette decodes header bytes as Latin-1, and httpx encodes header values as ASCII, so a
    non-ASCII User-Agent would otherwise fail the call to the service.
    """
    text = (value or "")[:limit]
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text)


def forwarded_for(header: str | None, client: str) -> str:
    """The X-Forwarded-For to pass on: the client's list with only IP addresses kept, then the peer's address."""
    hops = []
    for entry in (header or "").split(",")[:MAX_FORWARDED_HOPS]:
        try:
            hops.append(str(ipaddress.ip_address(entry.strip())))
        except ValueError:
            continue
    if client:
        hops.append(client)
    return ", ".join(hops)


def basic_auth_user(authorization: str | None) -> str | None:
    """The user part of an HTTP Basic header (Segment puts the write key there), if any; 401 if malformed."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    encoded = authorization[6:].strip()
    if not encoded.isascii():  # b64decode raises a plain ValueError for those, not binascii.Error
        raise Unauthorized("malformed Basic authorization header")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("malformed Basic authorization header") from exc
    user = decoded.split(":", 1)[0]
    if user and not plausible_key(user):
        raise Unauthorized("malformed write key in the Basic authorization header")
    return user or None


def body_write_key(body: bytes) -> str | None:
    """`writeKey` from a JSON body, for SDKs that send it there instead of in Basic auth; 401 if malformed."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", error="invalid_json") from exc
    if isinstance(parsed, dict) and isinstance(parsed.get("writeKey"), str) and parsed["writeKey"]:
        if not plausible_key(parsed["writeKey"]):
            raise Unauthorized("malformed `writeKey` in the body")
        return str(parsed["writeKey"])
    return None


def bearer_token(authorization: str | None) -> str:
    """The API key from `Authorization: Bearer …`, or 401."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send your API key as `Authorization: Bearer <api key>`")
    token = authorization[7:].strip()
    if not token:
        raise Unauthorized("empty bearer token")
    if not plausible_key(token):
        raise Unauthorized("malformed bearer token")
    return token


def merge_messages(sends: list[dict[str, Any]], deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join the scheduler's send decisions with the dispatcher's delivery log by `send_id`.

    A send the dispatcher has seen takes its delivery status (sent, failed, skipped); a send it
    has not seen keeps the scheduler's (scheduled, cancelled, not_in_audience, requested).
    """
    by_id = {d["send_id"]: d for d in deliveries}
    merged = []
    for send in sends:
        delivery = by_id.pop(send["send_id"], None)
        merged.append({**send, **delivery} if delivery else send)
    merged.extend(by_id.values())
    merged.sort(key=lambda m: m.get("created_at") or "", reverse=True)
    return merged


def public_origin(
    public_url: str | None, scheme: str, forwarded_proto: str | None, host: str | None
) -> tuple[str, str]:
    """The scheme and host SDKs should send to: HERALD_PUBLIC_URL when set, else what the request came in on.

    Behind a proxy that terminates TLS, `X-Forwarded-Proto` tells the scheme; a host that is not a
    plain `host[:port]` falls back to the setting-free default `localhost`.
    """
    if public_url:
        parsed = urlsplit(public_url)
        return parsed.scheme, parsed.netloc + parsed.path.rstrip("/")
    proto = (forwarded_proto or "").split(",")[0].strip().lower()
    chosen = proto if proto in ("http", "https") else scheme
    candidate = (host or "").split(",")[0].strip()
    return chosen, candidate if _HOST.fullmatch(candidate) else "localhost"


_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")


def sdk_settings(write_key: str, scheme: str, host: str) -> dict[str, Any]:
    """What a Segment client loads from its settings CDN, pointing it at Herald (`{host}/v1`) and nowhere else.

    The clients read `integrations["Segment.io"]` for where to send (`apiHost`, without a scheme,
    and `protocol`); the rest keeps every other destination, plugin and Segment's own client
    metrics off, since Herald is the only destination.
    """
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}, "identify": {"__default": {"enabled": True}},
                 "group": {"__default": {"enabled": True}}},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
