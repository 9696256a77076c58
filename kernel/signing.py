"""Requests the gateway vouches for.

The gateway authenticates every caller (a write key or an API key), and every request it forwards
to a service carries a short-lived Ed25519 signature over what it decided: the workspace, and the
request itself. A service acts only on a request with a valid signature, for the workspace the
signature names. Services hold only the gateway's public key(s), so none of them, and nothing that
can read their environment, can make a request another service would accept; a signature seen in
transit is good only for the same method, path, query and body, for `LIFETIME_SECONDS`.

The signature is a JWT (`EdDSA`) in the `X-Herald-Gateway-Signature` header:
- header `kid`: the signing key's id, so services can hold an old and a new key while rotating;
- claims `ws` (workspace), `htm` (method), `htu` (path and query exactly as sent), `bh` (SHA-256 of
  the body, base64url), `iat`, `exp`; checked with `LEEWAY_SECONDS` for clocks that disagree.

Keys are written as base64url of the 32 raw bytes (`herald keys` makes a pair) or as PEM (what
`openssl genpkey -algorithm ed25519` writes). Key material that begins with `dev-` is a published
development placeholder, refused with `HERALD_ENV=production`.
"""

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER = "X-Herald-Gateway-Signature"
ALGORITHM = "EdDSA"
ISSUER = "herald-gateway"
LIFETIME_SECONDS = 30
LEEWAY_SECONDS = 10
DEV_PREFIX = "dev-"
CLAIMS = ("ws", "htm", "htu", "bh", "iat", "exp")


class UnreadableKey(ValueError):
    """Key material that cannot be read; the message says what was expected."""


class BadSignature(Exception):
    """A request the gateway did not sign, or not this request; the message says which check failed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _load(text: str, what: str, from_raw: Callable[[bytes], Any], from_pem: Callable[[bytes], Any], kind: type) -> Any:
    """One written key (base64url of 32 raw bytes, or PEM) as a key of `kind`; UnreadableKey saying why not."""
    text = text.strip().removeprefix(DEV_PREFIX)
    if not text.startswith("-----BEGIN"):
        try:
            raw = _unb64(text)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise UnreadableKey(f"{what} is neither PEM nor the base64url of 32 bytes (make a pair with `herald keys`)")
        return from_raw(raw)
    try:
        key = from_pem(text.encode())
    except (ValueError, TypeError) as exc:
        raise UnreadableKey(f"{what} is not a readable (unencrypted) PEM key ({exc})") from None
    if not isinstance(key, kind):
        raise UnreadableKey(f"{what} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_private_key(text: str) -> Ed25519PrivateKey:
    pem = partial(serialization.load_pem_private_key, password=None)
    key: Ed25519PrivateKey = _load(text, "the signing key", Ed25519PrivateKey.from_private_bytes, pem, Ed25519PrivateKey)
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    pem = serialization.load_pem_public_key
    key: Ed25519PublicKey = _load(text, "a public key", Ed25519PublicKey.from_public_bytes, pem, Ed25519PublicKey)
    return key


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 8 bytes of its SHA-256, in hex."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def written_keys(text: str) -> list[str]:
    """The comma-separated keys of a setting (PEM has no commas)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def new_key_pair() -> tuple[str, str]:
    """A fresh (signing key, public key), both base64url of their 32 raw bytes."""
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return _b64(raw), _b64(public_bytes(private.public_key()))


def public_key_text(signing_key: str) -> str:
    """The base64url public key that goes with a written signing key."""
    return _b64(public_bytes(load_private_key(signing_key).public_key()))


def body_hash(body: bytes) -> str:
    return _b64(hashlib.sha256(body).digest())


class Signer:
    """Signs what the gateway forwards."""

    def __init__(self, signing_key: str) -> None:
        self._key = load_private_key(signing_key)
        self._headers = {"kid": key_id(self._key.public_key())}

    def sign(self, workspace_id: str, method: str, target: str, body: bytes = b"", *, now: float | None = None) -> str:
        """A signature for one request: `target` is its path and query exactly as sent."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": ISSUER, "ws": workspace_id, "htm": method.upper(), "htu": target, "bh": body_hash(body),
            "iat": issued, "exp": issued + LIFETIME_SECONDS,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers=self._headers)


class GatewayAuth(httpx.Auth):
    """Signs each request of an httpx client for one workspace: how the gateway calls a service."""

    requires_request_body = True

    def __init__(self, signer: Signer, workspace_id: str) -> None:
        self.signer, self.workspace_id = signer, workspace_id

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers[HEADER] = self.signer.sign(self.workspace_id, request.method, target, request.content)
        yield request


@dataclass(frozen=True)
class Verifier:
    """Checks a service's incoming requests against the gateway's public key(s)."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def from_setting(cls, text: str) -> "Verifier":
        keys = {key_id(k): k for k in map(load_public_key, written_keys(text))}
        if not keys:
            raise UnreadableKey("no public key given")
        return cls(keys)

    def verify(self, token: str, method: str, target: str, body: bytes) -> str:
        """The workspace a valid signature names; BadSignature saying which check failed otherwise."""
        if not token:
            raise BadSignature("no gateway signature; call Herald through the gateway")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise BadSignature("the gateway signature is malformed") from None
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise BadSignature("the gateway signature names a key this service does not trust")
        try:
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM], issuer=ISSUER, leeway=LEEWAY_SECONDS,
                options={"require": [*CLAIMS, "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise BadSignature("the gateway signature has expired") from None
        except jwt.PyJWTError as exc:
            raise BadSignature(f"the gateway signature is not valid ({type(exc).__name__})") from None
        if claims["iat"] > time.time() + LEEWAY_SECONDS:
            raise BadSignature("the gateway signature is issued in the future")
        if claims["htm"] != method.upper() or claims["htu"] != target:
            raise BadSignature("the gateway signed a different request")
        if claims["bh"] != body_hash(body):
            raise BadSignature("the body is not the one the gateway signed")
        workspace = claims["ws"]
        if not isinstance(workspace, str) or not workspace:
            raise BadSignature("the gateway signature names no workspace")
        return workspace


# --- public links ---------------------------------------------------------------------------
# The links in messages (an email's open pixel, its wrapped links, one-click unsubscribe) are served by the
# gateway to anyone who holds them, without a key: each is a token that names what it is about, signed with
# HMAC-SHA256 under HERALD_LINK_KEY, which the dispatcher (that makes them) and the gateway (that serves them)
# share. A token is `CLAIMS.MAC`: CLAIMS the unpadded base64url of its JSON claims, MAC the unpadded base64url
# of the HMAC of the purpose's context followed by CLAIMS. A link whose claims or MAC were altered, or a token
# made for another purpose, does not verify.

LINK_CONTEXTS = {
    "unsubscribe": b"herald-unsubscribe:",
    "open": b"herald-open:",
    "click": b"herald-click:",
}
MAX_LINK_TOKEN = 8192  # a click token carries its address; past this it is not one of ours


def link_token(key: bytes, purpose: str, claims: Mapping[str, Any]) -> str:
    """A signed token for one public link of `purpose` (unsubscribe, open, click)."""
    body = _b64(orjson.dumps(dict(claims))).encode()
    return f"{body.decode()}.{_b64(hmac.digest(key, LINK_CONTEXTS[purpose] + body, 'sha256'))}"


def read_link_token(key: bytes, purpose: str, token: str) -> dict[str, Any] | None:
    """The claims of a token `link_token` made under this key for this purpose, or None when it is not one."""
    body, _, mac = token.partition(".")
    if not body or not mac or len(token) > MAX_LINK_TOKEN or not body.isascii() or not mac.isascii():
        return None
    expected = _b64(hmac.digest(key, LINK_CONTEXTS[purpose] + body.encode(), "sha256"))
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        return None
    try:
        claims = orjson.loads(_unb64(body))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def link_key_bytes(text: str) -> bytes:
    """The HMAC key of a written HERALD_LINK_KEY."""
    return text.strip().encode()
