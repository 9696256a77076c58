"""Per-workspace rate limits, shared by every gateway replica through PostgreSQL.

Each replica counts the requests it admits per workspace, per kind of traffic (`sdk`, `api`) and
per one-second window, in memory, so admitting a request costs no I/O. Twice a second it adds its
counts to `gateway.rate_counts` and reads what the other replicas admitted in the same windows.
A request is admitted while this replica's count plus the others' last known count stays under
the workspace's limit: the limit holds across replicas to within one sync interval. If PostgreSQL
is unreachable each replica goes on with what it knows (it fails open, it does not stop ingestion).

Within a second the allowance is paced: a quarter of the limit (`BURST_SHARE`) may come at once,
the rest as the second goes by (a tenth of the way through it, 35 % may have been admitted). Unpaced, a workspace sending
at ten times its limit had its whole allowance admitted in the first ~0.1 s of every second, and
every other workspace's requests in that tenth waited behind it (`make bench`, fairness). Traffic
at or under the limit that is spread over the second is never refused by the pacing.

The decision is pure (`RateLimiter`); the sync loop is the only I/O.
"""

import asyncio
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import repository
from kernel.db import unit_of_work

log = structlog.get_logger(__name__)

Kind = Literal["sdk", "api"]
KINDS: tuple[Kind, ...] = ("sdk", "api")
KEEP_WINDOWS = 5  # seconds of counts kept in memory and in the table
BURST_SHARE = 0.25  # of a second's limit that may be admitted at once, ahead of the pace (a tool's burst of calls)


@dataclass(frozen=True)
class Decision:
    """Whether a request is admitted, and what the X-RateLimit-* headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers (and Retry-After when refused)."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(max(1, math.ceil(self.reset_seconds))),
        }
        if not self.allowed:
            headers["Retry-After"] = headers["X-RateLimit-Reset"]
        return headers


@dataclass
class RateLimiter:
    """Admit requests per workspace and kind within a per-second limit; pure, no I/O."""

    defaults: dict[Kind, int]
    overrides: dict[str, dict[Kind, int]] = field(default_factory=dict)
    local: dict[tuple[str, Kind, int], int] = field(default_factory=lambda: defaultdict(int))
    others: dict[tuple[str, Kind, int], int] = field(default_factory=dict)

    def limit(self, workspace_id: str, kind: Kind) -> int:
        """The workspace's own limit for this kind, or the default."""
        return self.overrides.get(workspace_id, {}).get(kind, self.defaults[kind])

    def take(self, workspace_id: str, kind: Kind, now: float) -> Decision:
        """Admit (and count) one request at time `now` (seconds), or refuse it."""
        window = int(now)
        limit = self.limit(workspace_id, kind)
        key = (workspace_id, kind, window)
        used = self.local[key] + self.others.get(key, 0)
        reset = window + 1 - now
        paced = math.ceil(limit * min(1.0, now - window + BURST_SHARE))
        if used >= min(limit, paced):
            return Decision(False, limit, 0, reset)  # none now, whichever bound refused it
        self.local[key] += 1
        return Decision(True, limit, max(0, limit - used - 1), reset)

    def counts(self, now: float) -> list[tuple[str, Kind, int, int]]:
        """This replica's counts of the recent windows, to share: (workspace, kind, window, count)."""
        self.prune(now)
        return [(ws, kind, window, n) for (ws, kind, window), n in self.local.items() if n]

    def absorb(self, others: dict[tuple[str, Kind, int], int]) -> None:
        """What the other replicas admitted, as last read."""
        self.others = dict(others)

    def prune(self, now: float) -> None:
        """Forget windows older than KEEP_WINDOWS seconds."""
        oldest = int(now) - KEEP_WINDOWS
        for key in [k for k in self.local if k[2] < oldest]:
            del self.local[key]


async def sync(sessions: async_sessionmaker[AsyncSession], limiter: RateLimiter, replica: str, now: float) -> None:
    """Share this replica's counts, read the others' and each workspace's own limits."""
    async with unit_of_work(sessions) as session:
        await repository.add_rate_counts(session, replica, limiter.counts(now))
        limiter.absorb(await repository.other_rate_counts(session, replica, int(now) - KEEP_WINDOWS))
        limiter.overrides = await repository.workspace_rate_limits(session)
        await repository.prune_rate_counts(session, int(now) - KEEP_WINDOWS)


async def run_sync(
    sessions: async_sessionmaker[AsyncSession], limiter: RateLimiter, replica: str, stop: asyncio.Event,
    interval: float = 0.5,
) -> None:
    """Until stopped: sync every `interval` seconds; an outage is logged once and the limits hold locally."""
    failing = False
    while not stop.is_set():
        try:
            # Windows are wall-clock seconds, so that every replica's window N is the same second.
            await sync(sessions, limiter, replica, time.time())
            if failing:
                log.info("rate_limit_sync_recovered")
            failing = False
        except Exception as exc:
            if not failing:
                log.warning("rate_limit_sync_failing", error=repr(exc))
            failing = True
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            continue
