"""Rate-limit decisions: per workspace, per kind, per second, with the other replicas' counts."""

from gateway.ratelimit import KEEP_WINDOWS, RateLimiter

T = 1_800_000_000.95  # late in some wall-clock second: the whole allowance is open


def test_a_workspace_gets_its_limit_per_second_and_then_429_headers() -> None:
    limiter = RateLimiter({"sdk": 3, "api": 1})
    decisions = [limiter.take("ws_a", "sdk", T) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1].headers()
    assert refused == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1", "Retry-After": "1"}
    assert "Retry-After" not in decisions[0].headers()
    assert limiter.take("ws_a", "sdk", T + 1).allowed  # the next second starts afresh


def test_one_workspace_or_kind_never_uses_another_s_allowance() -> None:
    limiter = RateLimiter({"sdk": 2, "api": 1})
    for _ in range(5):
        limiter.take("noisy", "sdk", T)
    assert limiter.take("quiet", "sdk", T).allowed
    assert limiter.take("noisy", "api", T).allowed
    assert not limiter.take("noisy", "api", T).allowed


def test_the_other_replicas_counts_and_a_workspaces_own_limit_apply() -> None:
    limiter = RateLimiter({"sdk": 10, "api": 10}, overrides={"big": {"sdk": 100}})
    limiter.absorb({("ws_a", "sdk", int(T)): 9})
    assert limiter.take("ws_a", "sdk", T).allowed
    assert not limiter.take("ws_a", "sdk", T).allowed
    assert all(limiter.take("big", "sdk", T).allowed for _ in range(100))
    assert not limiter.take("big", "sdk", T).allowed
    assert limiter.limit("big", "api") == 10  # a workspace's own sdk limit leaves its api default


def test_counts_shared_are_this_replicas_recent_windows_only() -> None:
    limiter = RateLimiter({"sdk": 5, "api": 5})
    limiter.take("ws_a", "sdk", T - KEEP_WINDOWS - 2)
    limiter.take("ws_a", "sdk", T)
    limiter.take("ws_a", "sdk", T)
    limiter.absorb({("ws_a", "sdk", int(T)): 7})
    assert limiter.counts(T) == [("ws_a", "sdk", int(T), 2)]


def test_a_second_s_allowance_is_paced_over_the_second_not_taken_at_its_start() -> None:
    limiter = RateLimiter({"sdk": 100, "api": 1})
    start = float(int(T))
    at_once = sum(limiter.take("noisy", "sdk", start).allowed for _ in range(1000))
    assert at_once == 25  # the burst share: a quarter of the limit
    by_half = sum(limiter.take("noisy", "sdk", start + 0.5).allowed for _ in range(1000))
    assert at_once + by_half == 75
    assert sum(limiter.take("noisy", "sdk", start + 0.99).allowed for _ in range(1000)) == 25  # never more than the limit
    refused = limiter.take("noisy", "sdk", start + 0.99)
    assert not refused.allowed and refused.headers()["Retry-After"] == "1"


def test_traffic_spread_over_the_second_at_the_limit_is_never_refused_by_the_pacing() -> None:
    limiter = RateLimiter({"sdk": 50, "api": 1})
    start = float(int(T))
    assert all(limiter.take("steady", "sdk", start + i / 50).allowed for i in range(50))
