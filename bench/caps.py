"""10. Frequency caps: the scheduler's release rate with three caps active against none, in the same run.

Two workspaces alike (profiles with a time zone, one active webhook campaign, one due send per user, two
earlier sends per user in the cap ledger and a third for every fourth user), one with three caps
(webhook 3 a week, any channel 5 a week, any channel 2 a day), one with none. Each workspace's sends are
released by the scheduler's own release path (`service.release_due`, the batch its timer claims), in
the bench process against the stack's PostgreSQL, at an instant ahead of the clock (`now=`), so the
running scheduler does not claim them first and nothing is published: the figure is the policy's
decision rate, not delivery. With caps, each pass locks its users (advisory locks) and reads their
ledger; every fourth user is at the webhook cap and is suppressed.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from bench.harness import Env, Figure
from kernel.db import make_engine, make_sessionmaker, unit_of_work
from services.scheduler import domain
from services.scheduler import service as scheduler
from services.scheduler.config import SchedulerSettings

if TYPE_CHECKING:
    from bench.scenarios import Size

Progress = Callable[[float], None]

LABEL = "10. Frequency caps"
USERS = {"tiny": 2_000}  # every other size
DEFAULT_USERS = 20_000
THREE_CAPS = [{"channel": "webhook", "max": 3, "per_days": 7}, {"channel": "any", "max": 5, "per_days": 7},
              {"channel": "any", "max": 2, "per_days": 1}]
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", None)


async def load(db: asyncpg.Pool, workspace_id: str, users: int, caps: list[dict[str, Any]], at: datetime) -> str:
    """Profiles, the campaign, the workspace's rules, the ledger's history and one due send per user; the campaign id."""
    campaign_id = f"cmp_caps_{workspace_id[-8:]}"
    trigger = orjson.dumps({"message_id": "bench", "name": "Bench", "properties": {}, "timestamp": at.isoformat()}).decode()
    async with db.acquire() as conn:
        await conn.copy_records_to_table("profiles", schema_name="profiles", columns=[
            "workspace_id", "profile_id", "user_id", "traits", "trait_times", "attributes", "attribute_times",
            "first_seen", "last_seen"],
            records=[(workspace_id, f"p{i}", f"u{i}", "{}", "{}",
                      orjson.dumps({"time_zone": ZONES[i % len(ZONES)]} if ZONES[i % len(ZONES)] else {}).decode(), "{}", at, at)
                     for i in range(users)])
        await conn.execute(
            "INSERT INTO scheduler.campaigns (id, workspace_id, name, status, channel, trigger, delay_seconds, cancel_on, "
            "message) VALUES ($1, $2, 'caps', 'active', 'webhook', $3, 0, '[]', $4)",
            campaign_id, workspace_id, '{"event": "Bench", "where": []}',
            '{"url": "https://hooks.example.com/caps", "body": {"user": "{{ user.user_id }}"}}',
        )
        await conn.execute(
            "INSERT INTO scheduler.delivery_settings (workspace_id, frequency_caps, global_control_percent, default_time_zone) "
            "VALUES ($1, $2, 0, 'UTC')", workspace_id, orjson.dumps(caps).decode(),
        )
        await conn.copy_records_to_table("cap_ledger", schema_name="scheduler", columns=[
            "send_id", "workspace_id", "profile_id", "campaign_id", "channel", "sent_at"],
            records=[(f"{workspace_id}-{i}-{k}", workspace_id, f"p{i}", "cmp_earlier", "webhook", at - timedelta(days=2 + k))
                     for i in range(users) for k in range(3 if i % 4 == 0 else 2)])
        await conn.copy_records_to_table("sends", schema_name="scheduler", columns=[
            "send_id", "workspace_id", "campaign_id", "profile_id", "user_id", "channel", "status", "trigger",
            "triggered_at", "due_at"],
            records=[(domain.send_id(campaign_id, "bench", f"p{i}"), workspace_id, campaign_id, f"p{i}", f"u{i}", "webhook",
                      "scheduled", trigger, at, at) for i in range(users)])
        await conn.execute("ANALYZE profiles.profiles; ANALYZE scheduler.cap_ledger; ANALYZE scheduler.sends")
    return campaign_id


async def release_all(env: Env, campaign_id: str, at: datetime, batch: int) -> tuple[float, int]:
    """Release every due send of the campaign pass by pass; the seconds it took and how many passes."""
    engine = make_engine(env.database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    passes = 0
    try:
        started = time.perf_counter()
        while True:
            async with unit_of_work(sessions) as session:
                await scheduler.release_due(session, env.nc, batch, at)
            passes += 1
            left = await env.db.fetchval(
                "SELECT count(*) FROM scheduler.sends WHERE campaign_id = $1 AND status = 'scheduled'", campaign_id)
            if not left:
                return time.perf_counter() - started, passes
    finally:
        await engine.dispose()


async def frequency_caps(env: Env, size: "Size", advance: Progress) -> list[Figure]:
    """Release rate with three caps active against none (same data, same run)."""
    users = USERS.get(size.name, DEFAULT_USERS)
    batch = int(SchedulerSettings.model_fields["due_batch"].default)  # what one timer look claims by default
    at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)  # ahead of every other scenario's sends
    rates: dict[str, float] = {}
    outcomes: dict[str, dict[str, int]] = {}
    for name, caps in (("none", []), ("three caps", THREE_CAPS)):
        ws = await env.workspace(f"bench-caps-{name.replace(' ', '-')}")
        campaign_id = await load(env.db, ws["workspace_id"], users, caps, at)
        advance(0.2)
        elapsed, _ = await release_all(env, campaign_id, at, batch)
        rates[name] = users / elapsed
        outcomes[name] = {r["status"]: r["n"] for r in await env.db.fetch(
            "SELECT status, count(*) AS n FROM scheduler.sends WHERE campaign_id = $1 GROUP BY status", campaign_id)}
        await env.db.execute("DELETE FROM scheduler.sends WHERE campaign_id = $1", campaign_id)
        await env.db.execute("DELETE FROM scheduler.cap_ledger WHERE workspace_id = $1", ws["workspace_id"])
        advance(0.3)
    expected_suppressed = len(range(0, users, 4))
    assert outcomes["none"] == {"requested": users}, outcomes
    assert outcomes["three caps"] == {"requested": users - expected_suppressed, "suppressed": expected_suppressed}, outcomes
    return [
        Figure(LABEL, f"release {users:,} sends, no caps", rates["none"], "sends/s",
               note=f"scheduler.service.release_due, {batch} a pass, one connection; policy: window-free, no holdout"),
        Figure(LABEL, f"release {users:,} sends, three caps active", rates["three caps"], "sends/s",
               baseline="no caps", baseline_value=rates["none"],
               note=f"webhook 3/7 d, any 5/7 d, any 2/1 d; 2–3 ledger rows per user; {expected_suppressed:,} suppressed "
                    f"(frequency_cap) as counted by hand"),
    ]
