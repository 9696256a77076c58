"""The gateway's key cache: fresh answers for `ttl`, and a bounded last-known answer for outages."""

from gateway.service import KeyCache


def test_a_fresh_entry_is_served_and_an_expired_one_only_as_stale() -> None:
    fresh = KeyCache(ttl=60)
    fresh.put("w:key", "ws_1")
    assert fresh.get("w:key") == "ws_1"
    expired = KeyCache(ttl=-10)  # every entry went stale ten seconds ago
    expired.put("w:key", "ws_1")
    assert expired.get("w:key") is None
    assert expired.get_stale("w:key", max_age=60) == "ws_1"
    assert expired.get_stale("w:key", max_age=5) is None, "too old to stand in for PostgreSQL"


def test_a_forgotten_key_has_no_stale_answer_either() -> None:
    cache = KeyCache(ttl=-10)
    cache.put("w:key", "ws_1")
    cache.forget("w:key")
    assert cache.get_stale("w:key", max_age=3600) is None
    assert cache.get_stale("w:never-seen", max_age=3600) is None
