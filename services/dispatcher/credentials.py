"""Channel credentials: what an APNs key or an FCM service account must be to be saved, and their
secrets sealed at rest.

Secrets are encrypted with Fernet (AES-128-CBC with HMAC-SHA256) under `HERALD_SECRETS_KEY`: a
comma-separated list of keys, newest first. The first key encrypts every new write; every key
decrypts (MultiFernet), so a key is rotated by putting a new one first, running
`herald rotate-secrets` (each stored secret re-encrypted under the first key) and then dropping
the old one. Secrets never leave the dispatcher: the API returns what is configured, never the key.
"""

import binascii
import re
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# Apple's team and key ids: ten upper-case letters and digits.
APPLE_ID = re.compile(r"[A-Z0-9]{10}")
# A bundle id (an app's APNs topic), with the suffixes APNs topics may carry (`.voip`, `.complication`).
BUNDLE_ID = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
# A Google Cloud project id: 6 to 30 lower-case letters, digits and hyphens, starting with a letter.
PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
DEV_PREFIX = "dev-"


class UnreadableSecretsKey(ValueError):
    """HERALD_SECRETS_KEY holds something that is not a Fernet key; the message says which entry."""


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys decrypts (a key was dropped too early)."""


class SecretBox:
    """Seals and opens channel secrets; the first key seals, any key opens."""

    def __init__(self, keys: list[Fernet]) -> None:
        if not keys:
            raise UnreadableSecretsKey("HERALD_SECRETS_KEY holds no key")
        self._fernet = MultiFernet(keys)
        self._primary = keys[0]

    @classmethod
    def from_setting(cls, text: str) -> "SecretBox":
        """The box of a `HERALD_SECRETS_KEY` value: comma-separated Fernet keys, newest first."""
        keys: list[Fernet] = []
        for position, entry in enumerate((e.strip() for e in text.split(",")), start=1):
            if not entry:
                continue
            try:
                keys.append(Fernet(entry.removeprefix(DEV_PREFIX)))
            except (ValueError, binascii.Error):
                raise UnreadableSecretsKey(
                    f"HERALD_SECRETS_KEY entry {position} is not a Fernet key (the URL-safe base64 of 32 bytes; "
                    "`herald keys --secrets` makes one)"
                ) from None
        return cls(keys)

    def seal(self, secret: dict[str, Any]) -> str:
        """The secret encrypted under the first key, as text for the database."""
        return self._fernet.encrypt(orjson.dumps(secret)).decode("ascii")

    def open(self, sealed: str) -> dict[str, Any]:
        """A sealed secret as it was saved; SecretUnreadable when no configured key opens it."""
        try:
            value: dict[str, Any] = orjson.loads(self._fernet.decrypt(sealed.encode("ascii")))
        except InvalidToken:
            raise SecretUnreadable("no key of HERALD_SECRETS_KEY decrypts this secret") from None
        return value

    def is_current(self, sealed: str) -> bool:
        """Whether a sealed secret is already under the first key (nothing to rotate)."""
        try:
            self._primary.decrypt(sealed.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def rotate(self, sealed: str) -> str:
        """The same secret sealed under the first key."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SecretUnreadable("no key of HERALD_SECRETS_KEY decrypts this secret") from None


def new_secrets_key() -> str:
    """A fresh Fernet key for HERALD_SECRETS_KEY."""
    return Fernet.generate_key().decode("ascii")


def apns_key_problem(pem: str) -> str | None:
    """Why this text cannot sign APNs provider tokens (None when it can): it must be the `.p8` Apple gave,
    an unencrypted PKCS#8 PEM of a P-256 elliptic-curve key."""
    text = pem.strip()
    if not text.startswith("-----BEGIN PRIVATE KEY-----") and not text.startswith("-----BEGIN EC PRIVATE KEY-----"):
        return "is not a PEM private key: paste the whole .p8 file, from -----BEGIN PRIVATE KEY----- to its END line"
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        return "is not a readable, unencrypted PEM private key (the .p8 file from Apple)"
    except Exception:  # cryptography raises its own errors for malformed ASN.1
        return "is not a readable, unencrypted PEM private key (the .p8 file from Apple)"
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        return "is not an elliptic-curve P-256 key, which APNs token authentication (ES256) needs"
    return None


def service_account_problems(account: dict[str, Any]) -> list[tuple[str, str]]:
    """What keeps a service-account JSON from minting FCM access tokens, as (field, problem) pairs."""
    problems: list[tuple[str, str]] = []
    if account.get("type") != "service_account":
        problems.append(("type", 'must be "service_account" (a key file of a Google Cloud service account)'))
    project = account.get("project_id")
    if not isinstance(project, str) or not PROJECT_ID.fullmatch(project):
        problems.append(("project_id", "must be a Google Cloud project id (6-30 lower-case letters, digits, hyphens)"))
    email = account.get("client_email")
    if not isinstance(email, str) or "@" not in email or len(email) > 320:
        problems.append(("client_email", "must be the service account's email address"))
    token_uri = account.get("token_uri")
    if not isinstance(token_uri, str) or urlsplit(token_uri).scheme not in ("http", "https") or not urlsplit(token_uri).netloc:
        problems.append(("token_uri", "must be the OAuth2 token endpoint's URL"))
    key = account.get("private_key")
    if not isinstance(key, str) or not key.strip().startswith("-----BEGIN"):
        problems.append(("private_key", "must be the PEM private key of the service account"))
    else:
        try:
            loaded = load_pem_private_key(key.strip().encode(), password=None)
        except Exception:  # ValueError, TypeError, or cryptography's own ASN.1 errors
            problems.append(("private_key", "is not a readable, unencrypted PEM private key"))
        else:
            if not isinstance(loaded, rsa.RSAPrivateKey):
                problems.append(("private_key", "is not an RSA key, which Google service accounts sign with (RS256)"))
    key_id = account.get("private_key_id")
    if key_id is not None and not isinstance(key_id, str):
        problems.append(("private_key_id", "must be text"))
    return problems


def origin_of(url: str) -> str:
    """A URL's origin (scheme://host[:port]), lower-cased, for comparing with an allow-list."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
