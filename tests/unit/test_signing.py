"""The gateway's request signatures: key formats, rotation, and what a service refuses."""

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from pydantic import ValidationError

from gateway.config import GatewaySettings
from kernel import signing
from kernel.settings import HeraldSettings

PRIVATE, PUBLIC = signing.new_key_pair()


def check(verifier: signing.Verifier, token: str, method: str = "GET", target: str = "/api/v1/users/a", body: bytes = b"") -> str:
    return verifier.verify(token, method, target, body)


def test_a_signature_names_its_workspace_and_binds_the_request() -> None:
    token = signing.Signer(PRIVATE).sign("ws_a", "post", "/v1/track?x=1", b'{"a":1}')
    verifier = signing.Verifier.from_setting(PUBLIC)
    assert verifier.verify(token, "POST", "/v1/track?x=1", b'{"a":1}') == "ws_a"
    for method, target, body in [("GET", "/v1/track?x=1", b'{"a":1}'), ("POST", "/v1/track", b'{"a":1}'), ("POST", "/v1/track?x=1", b'{"a":2}')]:
        with pytest.raises(signing.BadSignature):
            verifier.verify(token, method, target, body)


def test_signatures_are_short_lived_with_leeway_for_clocks_that_disagree() -> None:
    signer, verifier = signing.Signer(PRIVATE), signing.Verifier.from_setting(PUBLIC)
    slightly_old = signer.sign("ws", "GET", "/api/v1/users/a", now=time.time() - signing.LIFETIME_SECONDS - signing.LEEWAY_SECONDS + 3)
    assert check(verifier, slightly_old) == "ws"
    expired = signer.sign("ws", "GET", "/api/v1/users/a", now=time.time() - signing.LIFETIME_SECONDS - signing.LEEWAY_SECONDS - 3)
    with pytest.raises(signing.BadSignature, match="expired"):
        check(verifier, expired)


def test_services_trust_several_keys_while_the_gateway_s_key_is_rotated() -> None:
    new_private, new_public = signing.new_key_pair()
    both = signing.Verifier.from_setting(f"{PUBLIC}, {new_public}")
    for key in (PRIVATE, new_private):
        assert check(both, signing.Signer(key).sign("ws", "GET", "/api/v1/users/a")) == "ws"
    with pytest.raises(signing.BadSignature, match="does not trust"):
        check(signing.Verifier.from_setting(PUBLIC), signing.Signer(new_private).sign("ws", "GET", "/api/v1/users/a"))


def test_keys_are_read_as_base64url_or_pem_as_openssl_writes_them() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    token = signing.Signer(pem).sign("ws", "GET", "/x")
    assert signing.Verifier.from_setting(public_pem).verify(token, "GET", "/x", b"") == "ws"
    assert signing.Verifier.from_setting(signing.public_key_text(pem)).verify(token, "GET", "/x", b"") == "ws"


@pytest.mark.parametrize("text, words", [
    ("", "no public key"),
    ("not a key", "base64url of 32 bytes"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "readable \\(unencrypted\\) PEM key"),
])
def test_an_unreadable_public_key_says_what_was_expected(text: str, words: str) -> None:
    with pytest.raises(signing.UnreadableKey, match=words):
        signing.Verifier.from_setting(text)


def test_a_signing_key_of_another_kind_is_refused_by_name() -> None:
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(signing.UnreadableKey, match="not an Ed25519 key"):
        signing.load_private_key(pem)


def test_a_malformed_or_unsigned_token_is_refused_never_an_error() -> None:
    verifier = signing.Verifier.from_setting(PUBLIC)
    for token in ["", "x", "a.b.c", "eyJhbGciOiJub25lIiwia2lkIjoiIn0.e30.", "\x00" * 10]:
        with pytest.raises(signing.BadSignature):
            check(verifier, token)


def test_the_gateway_refuses_to_start_with_a_signing_key_no_service_trusts() -> None:
    _, other_public = signing.new_key_pair()
    with pytest.raises(ValidationError, match="does not go with any of HERALD_GATEWAY_PUBLIC_KEYS"):
        GatewaySettings(gateway_signing_key=PRIVATE, gateway_public_keys=other_public, database_url="postgresql://x/y")  # type: ignore[arg-type]
    GatewaySettings(gateway_signing_key=PRIVATE, gateway_public_keys=f"{other_public},{PUBLIC}", database_url="postgresql://x/y")  # type: ignore[arg-type]


def test_production_refuses_the_published_development_keys() -> None:
    dev_private, dev_public = (f"{signing.DEV_PREFIX}{k}" for k in signing.new_key_pair())
    assert HeraldSettings(gateway_public_keys=dev_public, env="development")  # the dev overlay's
    with pytest.raises(ValidationError, match="HERALD_GATEWAY_PUBLIC_KEYS holds a development placeholder"):
        HeraldSettings(gateway_public_keys=dev_public, env="production")
    with pytest.raises(ValidationError, match="HERALD_GATEWAY_SIGNING_KEY is a development placeholder"):
        GatewaySettings(gateway_signing_key=dev_private, gateway_public_keys=PUBLIC, env="production", database_url="postgresql://x/y")  # type: ignore[arg-type]
