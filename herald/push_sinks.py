"""APNs- and FCM-compatible endpoints for the dev sinks: they issue credentials as Apple's and Google's
consoles do, and check each push as the providers do, so a push that passes here is shaped right.

APNs (`/apns`): `POST /apns/keys` issues a team's `.p8` signing key; `POST /apns/3/device/{token}` takes a
push over HTTP/2 only, with a provider token (ES256 JWT) that must verify against an issued key, be
under an hour old and not be replaced on one connection more often than every 20 minutes; the topic,
push type, priority, expiration and collapse-id headers; and a JSON payload with `aps` of at most 4 KB.

FCM (`/fcm`): `POST /fcm/service-accounts` issues a service-account key file whose `token_uri` is this
sink's `/fcm/token`, an OAuth2 endpoint that checks the signed JWT assertion (RS256, issuer, audience,
scope, lifetime) and answers an access token; `POST /fcm/v1/projects/{id}/messages:send` checks the
bearer token, the project and the message's shape and size.

`POST /push/dead-tokens {"token"}` makes a token dead (APNs 410 Unregistered, FCM UNREGISTERED);
`POST /push/outages {"service", "status", "times", "retry_after"}` makes the next requests fail.
"""

import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

APNS_MAX_PAYLOAD = 4096
APNS_TOKEN_MAX_AGE = 3600
APNS_TOKEN_MIN_INTERVAL = 20 * 60
APNS_PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity",
                   "pushtotalk", "controls", "widgets"}
FCM_MAX_PAYLOAD = 4096
FCM_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # the audience Google's clients sign for, whatever token_uri says
FCM_SCOPES = {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
FCM_MESSAGE_KEYS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic", "condition"}
_HEX_TOKEN = re.compile(r"(?:[0-9A-Fa-f]{2}){32,100}")
_DURATION = re.compile(r"\d{1,10}(\.\d{1,9})?s")

Keep = Callable[[dict[str, Any]], None]


def _pem_private(key: Any) -> str:
    return str(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode())


def _pem_public(key: Any) -> str:
    return str(key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def _apns_error(status: int, reason: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    return Response(orjson.dumps({"reason": reason, **extra}), status, headers=headers, media_type="application/json")


def _fcm_error(status: int, code: str, message: str, fcm_code: str | None = None, field_name: str | None = None,
               headers: dict[str, str] | None = None) -> Response:
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code})
    if field_name:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field_name, "description": message}]})
    body = {"error": {"code": status, "message": message, "status": code, "details": details}}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


@dataclass
class Outage:
    status: int
    times: int
    retry_after: int | None = None


@dataclass
class PushSink:
    """What the push endpoints issued and were told, and the checks they make."""

    keep: Keep
    apns_keys: dict[str, dict[str, str]] = field(default_factory=dict)  # key id -> team id, public PEM
    fcm_accounts: dict[str, dict[str, str]] = field(default_factory=dict)  # client email -> project id, public PEM
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> client email, expiry
    dead_tokens: set[str] = field(default_factory=set)
    outages: dict[str, Outage] = field(default_factory=dict)
    # The provider token each APNs connection (client address and port) last used, and since when.
    connection_tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    apns_tokens_seen: Counter[str] = field(default_factory=Counter)  # key id -> distinct provider tokens
    fcm_tokens_issued: Counter[str] = field(default_factory=Counter)  # client email -> access tokens minted

    def restore(self, item: dict[str, Any]) -> None:
        """Take back an issued key from the sinks' file."""
        if item.get("kind") == "apns_key":
            self.apns_keys[item["key_id"]] = {"team_id": item["team_id"], "public_key": item["public_key"]}
        elif item.get("kind") == "fcm_account":
            self.fcm_accounts[item["client_email"]] = {"project_id": item["project_id"], "public_key": item["public_key"]}

    def issued(self) -> list[dict[str, Any]]:
        """The issued keys as the sinks' file keeps them (public halves only)."""
        return [{"kind": "apns_key", "key_id": k, **v} for k, v in self.apns_keys.items()] + [
            {"kind": "fcm_account", "client_email": k, **v} for k, v in self.fcm_accounts.items()
        ]

    def outage(self, service: str) -> Outage | None:
        """The failure the next request to `service` must get, if one was asked for."""
        current = self.outages.get(service)
        if current is None or current.times <= 0:
            return None
        current.times -= 1
        return current

    # --- APNs ---

    def issue_apns_key(self, team_id: str | None) -> dict[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        team = team_id or secrets.token_hex(5).upper()
        key_id = secrets.token_hex(5).upper()
        self.apns_keys[key_id] = {"team_id": team, "public_key": _pem_public(key)}
        self.keep({"kind": "apns_key", "key_id": key_id, **self.apns_keys[key_id]})
        return {"team_id": team, "key_id": key_id, "private_key": _pem_private(key)}

    def check_provider_token(self, authorization: str | None, connection: tuple[str, str]) -> Response | None:
        """None when the provider token is acceptable; else APNs' answer to it."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return _apns_error(403, "MissingProviderToken")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return _apns_error(403, "InvalidProviderToken")
        known = self.apns_keys.get(str(header.get("kid")))
        if header.get("alg") != "ES256" or known is None:
            return _apns_error(403, "InvalidProviderToken")
        try:
            claims = jwt.decode(token, known["public_key"], algorithms=["ES256"], options={"require": ["iss", "iat"], "verify_iat": False})
        except jwt.PyJWTError:
            return _apns_error(403, "InvalidProviderToken")
        now = time.time()
        if claims["iss"] != known["team_id"] or not isinstance(claims["iat"], int) or claims["iat"] > now + 60:
            return _apns_error(403, "InvalidProviderToken")
        if now - claims["iat"] > APNS_TOKEN_MAX_AGE:
            return _apns_error(403, "ExpiredProviderToken")
        previous = self.connection_tokens.get(connection)
        if previous is None or previous[0] != token:
            if previous is not None and now - previous[1] < APNS_TOKEN_MIN_INTERVAL:
                return _apns_error(429, "TooManyProviderTokenUpdates")
            self.connection_tokens[connection] = (token, now)
            self.apns_tokens_seen[str(header["kid"])] += 1
        return None

    async def apns_push(self, token: str, request: Request) -> Response:
        """One push, checked as APNs checks it."""
        # Read first, whatever the answer: hypercorn's HTTP/2 drops the connection when a request's body
        # arrives for a stream that was already answered.
        body = await request.body()
        if request.scope.get("http_version") != "2":
            return _apns_error(400, "BadRequest", detail="APNs speaks HTTP/2 only")
        client = request.client
        connection = (client.host, str(client.port)) if client else ("?", "?")
        if problem := self.check_provider_token(request.headers.get("authorization"), connection):
            return problem
        if (failing := self.outage("apns")) is not None:
            headers = {"retry-after": str(failing.retry_after)} if failing.retry_after is not None else None
            reason = {429: "TooManyRequests", 500: "InternalServerError"}.get(failing.status, "ServiceUnavailable")
            return _apns_error(failing.status, reason, headers)
        h = request.headers
        if not h.get("apns-topic"):
            return _apns_error(400, "MissingTopic")
        push_type = h.get("apns-push-type", "alert")
        if push_type not in APNS_PUSH_TYPES:
            return _apns_error(400, "InvalidPushType")
        priority = h.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority != "5"):
            return _apns_error(400, "BadPriority")
        if "apns-expiration" in h and not h["apns-expiration"].isdigit():
            return _apns_error(400, "BadExpirationDate")
        if len(h.get("apns-collapse-id", "").encode()) > 64:
            return _apns_error(400, "BadCollapseId")
        if not body:
            return _apns_error(400, "PayloadEmpty")
        if len(body) > APNS_MAX_PAYLOAD:
            return _apns_error(413, "PayloadTooLarge")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _apns_error(400, "BadPayload", detail="not JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return _apns_error(400, "BadPayload", detail="no `aps` dictionary")
        if not _HEX_TOKEN.fullmatch(token):
            return _apns_error(400, "BadDeviceToken")
        if token in self.dead_tokens:
            return _apns_error(410, "Unregistered", timestamp=int(time.time() * 1000))
        apns_id = h.get("apns-id") or str(uuid.uuid4()).upper()
        self.keep({
            "kind": "push", "service": "apns", "received_at": datetime.now(UTC).isoformat(), "token": token,
            "http_version": request.scope.get("http_version"),
            "headers": {k: v for k, v in h.items() if k.startswith("apns-")}, "payload": payload,
        })
        return Response(status_code=200, headers={"apns-id": apns_id})

    # --- FCM ---

    def issue_service_account(self, project_id: str, token_uri: str) -> dict[str, str]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"herald-push-{secrets.token_hex(3)}@{project_id}.iam.gserviceaccount.com"
        self.fcm_accounts[email] = {"project_id": project_id, "public_key": _pem_public(key)}
        self.keep({"kind": "fcm_account", "client_email": email, **self.fcm_accounts[email]})
        return {
            "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
            "private_key": _pem_private(key), "client_email": email, "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
        }

    async def fcm_token(self, request: Request) -> Response:
        """The OAuth2 token endpoint: a JWT-bearer grant whose assertion an issued service account signed."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}

        def refuse(error: str, description: str) -> Response:
            return Response(orjson.dumps({"error": error, "error_description": description}), 400, media_type="application/json")

        if form.get("grant_type") != FCM_GRANT:
            return refuse("unsupported_grant_type", "Invalid grant_type")
        assertion = form.get("assertion", "")
        try:
            issuer = str(jwt.decode(assertion, options={"verify_signature": False}).get("iss"))
        except jwt.PyJWTError:
            return refuse("invalid_grant", "Invalid JWT")
        account = self.fcm_accounts.get(issuer)
        if account is None:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        audience = [str(request.url.replace(query="")), GOOGLE_TOKEN_URL]
        try:
            claims = jwt.decode(assertion, account["public_key"], algorithms=["RS256"], audience=audience,
                                options={"require": ["iss", "aud", "iat", "exp", "scope"]})
        except jwt.InvalidAudienceError:
            return refuse("invalid_grant", "Invalid JWT: audience is not this token endpoint")
        except jwt.PyJWTError:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        if claims["exp"] - claims["iat"] > 3600:
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)")
        if not FCM_SCOPES & set(str(claims["scope"]).split()):
            return refuse("invalid_scope", "the scope does not allow sending FCM messages")
        token = "ya29.sink-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = (issuer, time.time() + 3600)
        self.fcm_tokens_issued[issuer] += 1
        return Response(orjson.dumps({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
                        media_type="application/json")

    async def fcm_send(self, project_id: str, request: Request) -> Response:
        """messages:send, checked as FCM checks it."""
        raw = await request.body()
        authorization = request.headers.get("authorization", "")
        granted = self.access_tokens.get(authorization[7:]) if authorization.startswith("Bearer ") else None
        if granted is None or granted[1] < time.time():
            return _fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "THIRD_PARTY_AUTH_ERROR")
        if self.fcm_accounts[granted[0]]["project_id"] != project_id:
            return _fcm_error(403, "PERMISSION_DENIED", "The caller does not have permission", "SENDER_ID_MISMATCH")
        if (failing := self.outage("fcm")) is not None:
            headers = {"retry-after": str(failing.retry_after)} if failing.retry_after is not None else None
            status, code = {429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), 500: ("INTERNAL", "INTERNAL")}.get(
                failing.status, ("UNAVAILABLE", "UNAVAILABLE"))
            return _fcm_error(failing.status, status, "The service is currently unavailable.", code, headers=headers)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return _fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. `message` is required.", field_name="message")
        if problem := fcm_message_problem(message):
            return _fcm_error(400, "INVALID_ARGUMENT", problem[1], "INVALID_ARGUMENT", problem[0])
        token = message.get("token")
        if isinstance(token, str) and token in self.dead_tokens:
            return _fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        name = f"projects/{project_id}/messages/0:{time.time_ns()}%{secrets.token_hex(8)}"
        self.keep({"kind": "push", "service": "fcm", "received_at": datetime.now(UTC).isoformat(), "token": token,
                   "project_id": project_id, "message": message, "name": name})
        return Response(orjson.dumps({"name": name}), media_type="application/json")


def _strings(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def fcm_message_problem(message: dict[str, Any]) -> tuple[str, str] | None:
    """(field, description) of the first thing FCM would refuse in a message, or None."""
    if unknown := set(message) - FCM_MESSAGE_KEYS:
        name = sorted(unknown)[0]
        return f"message.{name}", f"Invalid JSON payload received. Unknown name \"{name}\" at 'message'"
    targets = [k for k in ("token", "topic", "condition") if k in message]
    if len(targets) != 1:
        return "message", "Exactly one of token, topic or condition must be given"
    token = message.get("token")
    if "token" in targets and (not isinstance(token, str) or len(token) < 20 or any(c.isspace() for c in token)):
        return "message.token", "The registration token is not a valid FCM registration token"
    if "data" in message and not _strings(message["data"]):
        return "message.data", "Invalid value at 'message.data': every value must be a string"
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or set(notification) - {"title", "body", "image"} or not all(
        isinstance(v, str) for v in notification.values()
    ):
        return "message.notification", "Invalid value at 'message.notification'"
    if len(orjson.dumps({"notification": notification, "data": message.get("data", {})})) > FCM_MAX_PAYLOAD:
        return "message", "Message is too big"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "message.android", "Invalid value at 'message.android'"
    if "ttl" in android and (not isinstance(android["ttl"], str) or not _DURATION.fullmatch(android["ttl"])):
        return "message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)"
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "message.android.priority", "Invalid value at 'message.android.priority'"
    if "notification" in android and not isinstance(android["notification"], dict):
        return "message.android.notification", "Invalid value at 'message.android.notification'"
    apns = message.get("apns", {})
    if not isinstance(apns, dict) or not _strings(apns.get("headers", {})):
        return "message.apns.headers", "Invalid value at 'message.apns.headers'"
    if "payload" in apns and not (isinstance(apns["payload"], dict) and isinstance(apns["payload"].get("aps", {}), dict)):
        return "message.apns.payload", "Invalid value at 'message.apns.payload'"
    webpush = message.get("webpush", {})
    if not isinstance(webpush, dict) or not _strings(webpush.get("headers", {})):
        return "message.webpush.headers", "Invalid value at 'message.webpush.headers'"
    link = (webpush.get("fcm_options") or {}).get("link")
    if link is not None and (not isinstance(link, str) or not link.startswith("https://")):
        return "message.webpush.fcm_options.link", "The link must be an https URL"
    return None


class IssueApnsKey(BaseModel):
    team_id: str | None = Field(None, pattern=r"^[A-Z0-9]{10}$")


class IssueServiceAccount(BaseModel):
    project_id: str = Field("herald-dev", pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


class DeadToken(BaseModel):
    token: str = Field(min_length=1, max_length=4096)


class OutageIn(BaseModel):
    service: Literal["apns", "fcm"]
    status: Literal[429, 500, 503] = 503
    times: int = Field(1, ge=0, le=1000)
    retry_after: int | None = Field(None, ge=0, le=86400)


def push_routes(sink: PushSink) -> APIRouter:
    """The sink's APNs and FCM endpoints, and the knobs tests and walkthroughs turn."""
    router = APIRouter()

    @router.post("/apns/keys", status_code=201)
    async def issue_apns_key(body: IssueApnsKey | None = None) -> dict[str, str]:
        """A new APNs signing key (.p8 PEM) with its key id and team id, as Apple's developer site issues one."""
        return sink.issue_apns_key(body.team_id if body else None)

    @router.post("/apns/3/device/{token}")
    async def apns_push(token: str, request: Request) -> Response:
        """APNs' provider API: one push to one device token."""
        return await sink.apns_push(token, request)

    @router.post("/fcm/service-accounts", status_code=201)
    async def issue_service_account(request: Request, body: IssueServiceAccount | None = None) -> dict[str, str]:
        """A new service-account key file for a Firebase project; its token_uri is this sink's token endpoint."""
        token_uri = str(request.url_for("fcm_token"))
        return sink.issue_service_account((body or IssueServiceAccount()).project_id, token_uri)

    @router.post("/fcm/token", name="fcm_token")
    async def fcm_token(request: Request) -> Response:
        """OAuth2 token endpoint for service-account assertions (JWT bearer grant)."""
        return await sink.fcm_token(request)

    @router.post("/fcm/v1/projects/{project_id}/messages:send")
    async def fcm_send(project_id: str, request: Request) -> Response:
        """FCM HTTP v1 messages:send."""
        return await sink.fcm_send(project_id, request)

    @router.post("/push/dead-tokens", status_code=204)
    async def dead_token(body: DeadToken) -> None:
        """From now on APNs answers 410 Unregistered and FCM UNREGISTERED for this token."""
        sink.dead_tokens.add(body.token)

    @router.post("/push/outages", status_code=204)
    async def outage(body: OutageIn) -> None:
        """The next `times` pushes to `service` fail with `status` (and Retry-After, if given)."""
        sink.outages[body.service] = Outage(body.status, body.times, body.retry_after)

    @router.get("/push/auth")
    async def auth_counts() -> dict[str, dict[str, int]]:
        """How many APNs provider tokens each key was seen with, and FCM access tokens each account was given."""
        return {"apns_provider_tokens": dict(sink.apns_tokens_seen), "fcm_access_tokens": dict(sink.fcm_tokens_issued)}

    return router
