import base64
import gzip

import pytest

from gateway.service import (
    basic_auth_user,
    bearer_token,
    body_write_key,
    decode_body,
    merge_messages,
    public_origin,
    sdk_settings,
)
from kernel.errors import BadRequest, PayloadTooLarge, Unauthorized


def test_gzip_bodies_are_inflated() -> None:
    body = b'{"userId": "u1"}'
    assert decode_body(gzip.compress(body), "gzip", 1024) == body


def test_limit_applies_to_the_inflated_size_so_a_gzip_bomb_is_refused() -> None:
    bomb = gzip.compress(b"{" + b" " * 100_000 + b"}")
    assert len(bomb) < 1024
    with pytest.raises(PayloadTooLarge):
        decode_body(bomb, "gzip", 32 * 1024)


def test_corrupt_gzip_and_unknown_encodings_are_bad_requests() -> None:
    with pytest.raises(BadRequest):
        decode_body(b"not gzip", "gzip", 1024)
    with pytest.raises(BadRequest):
        decode_body(b"{}", "br", 1024)


def test_write_key_from_basic_auth_or_body() -> None:
    header = "Basic " + base64.b64encode(b"wk_abc:").decode()
    assert basic_auth_user(header) == "wk_abc"
    assert basic_auth_user(None) is None
    assert body_write_key(b'{"writeKey": "wk_body"}') == "wk_body"
    with pytest.raises(Unauthorized):
        basic_auth_user("Basic !!!")


def test_bearer_token_is_required_for_the_api() -> None:
    assert bearer_token("Bearer hk_123") == "hk_123"
    for bad in (None, "Basic abc", "Bearer "):
        with pytest.raises(Unauthorized):
            bearer_token(bad)


def test_messages_take_the_delivery_status_when_the_dispatcher_has_one() -> None:
    sends = [
        {"send_id": "a", "status": "requested", "created_at": "2026-01-02"},
        {"send_id": "b", "status": "cancelled", "created_at": "2026-01-01"},
    ]
    deliveries = [{"send_id": "a", "status": "sent", "created_at": "2026-01-02"}]
    merged = merge_messages(sends, deliveries)
    assert [(m["send_id"], m["status"]) for m in merged] == [("a", "sent"), ("b", "cancelled")]


@pytest.mark.parametrize(
    "public_url, scheme, proto, host, expected",
    [
        ("https://events.example.com", "http", None, "10.0.0.5:8000", ("https", "events.example.com")),
        ("https://example.com/herald/", "http", "http", "x", ("https", "example.com/herald")),
        (None, "http", None, "127.0.0.1:8000", ("http", "127.0.0.1:8000")),
        (None, "http", "https", "events.example.com", ("https", "events.example.com")),
        (None, "https", "gopher", "[::1]:8000", ("https", "[::1]:8000")),
        (None, "http", "https, http", "a.example, b.example", ("https", "a.example")),
        (None, "http", None, "evil.example/<script>", ("http", "localhost")),
        (None, "http", None, None, ("http", "localhost")),
    ],
)
def test_sdks_are_pointed_at_the_public_url_or_the_host_they_asked(
    public_url: str | None, scheme: str, proto: str | None, host: str | None, expected: tuple[str, str]
) -> None:
    assert public_origin(public_url, scheme, proto, host) == expected


def test_sdk_settings_send_everything_to_herald_and_nothing_to_segment() -> None:
    settings = sdk_settings("wk_1", "https", "events.example.com")
    assert settings["integrations"] == {
        "Segment.io": {
            "apiKey": "wk_1", "apiHost": "events.example.com/v1", "protocol": "https",
            "unbundledIntegrations": [], "addBundledMetadata": True, "maybeBundledConfigIds": {},
        }
    }
    assert settings["metrics"]["sampleRate"] == 0 and settings["remotePlugins"] == []
