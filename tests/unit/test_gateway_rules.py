import base64
import gzip

import pytest

from gateway.service import (
    basic_auth_user,
    bearer_token,
    body_write_key,
    decode_body,
    merge_messages,
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
