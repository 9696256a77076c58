"""Rate limits shared through PostgreSQL: two gateway replicas together keep a workspace's limit."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import ratelimit, repository
from gateway.service import create_workspace
from kernel.db import unit_of_work

T = 1_800_000_000.95  # late in a second: the whole allowance is open (see the pacing)


async def test_two_replicas_together_admit_the_limit_once_they_have_synced(sessions: async_sessionmaker[AsyncSession]) -> None:
    ws = f"ws_{uuid.uuid4().hex[:12]}"
    one, two = ratelimit.RateLimiter({"sdk": 10, "api": 5}), ratelimit.RateLimiter({"sdk": 10, "api": 5})
    assert all(one.take(ws, "sdk", T).allowed for _ in range(6))
    await ratelimit.sync(sessions, one, "replica-one", T)
    await ratelimit.sync(sessions, two, "replica-two", T)
    admitted_by_two = sum(two.take(ws, "sdk", T).allowed for _ in range(10))
    assert admitted_by_two == 4
    await ratelimit.sync(sessions, two, "replica-two", T)
    await ratelimit.sync(sessions, one, "replica-one", T)
    assert not one.take(ws, "sdk", T).allowed  # replica one now knows what two admitted


async def test_a_workspace_s_own_limits_reach_every_replica_on_its_next_sync(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with unit_of_work(sessions) as s:
        created = await create_workspace(s, "limits")
    limiter = ratelimit.RateLimiter({"sdk": 1000, "api": 100})
    async with unit_of_work(sessions) as s:
        assert await repository.set_workspace_rate_limits(s, created.workspace_id, {"sdk": 2})
        assert not await repository.set_workspace_rate_limits(s, "ws_nobody", {"sdk": 2})
    await ratelimit.sync(sessions, limiter, "replica", T)
    assert [limiter.take(created.workspace_id, "sdk", T).allowed for _ in range(3)] == [True, True, False]
    assert limiter.limit(created.workspace_id, "api") == 100
