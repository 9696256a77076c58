"""HTTP clients (the gateway's, the webhook provider's) split their connection pool in shards, each with its share of the limits."""

import httpx

from kernel.http import ShardedTransport, sharded, sharded_limits


def test_each_shard_has_its_share_of_the_limits_and_at_least_one_connection() -> None:
    each = sharded_limits(httpx.Limits(max_connections=200, max_keepalive_connections=64, keepalive_expiry=7), 8)
    assert (each.max_connections, each.max_keepalive_connections, each.keepalive_expiry) == (25, 8, 7)
    assert sharded_limits(httpx.Limits(max_connections=3, max_keepalive_connections=None), 8).max_connections == 1
    assert sharded_limits(httpx.Limits(max_connections=None), 8).max_connections is None


async def test_requests_go_round_robin_and_closing_closes_every_shard() -> None:
    seen: list[int] = []
    closed: list[int] = []

    class Shard(httpx.MockTransport):
        def __init__(self, n: int) -> None:
            super().__init__(lambda request: seen.append(n) or httpx.Response(204))  # type: ignore[func-returns-value]
            self.n = n

        async def aclose(self) -> None:
            closed.append(self.n)

    async with httpx.AsyncClient(transport=ShardedTransport([Shard(i) for i in range(3)])) as client:
        for _ in range(7):
            assert (await client.post("http://hooks.example/x", content=b"{}")).status_code == 204
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    assert sorted(closed) == [0, 1, 2]


def test_never_more_shards_than_connections() -> None:
    assert len(sharded(httpx.Limits(max_connections=3))._shards) == 3
