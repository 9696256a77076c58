"""8. A scheduled campaign to a million users: every send of an occurrence decided and enqueued at once.

The population (profiles with a time zone attribute, one segment's members and an excluded one's) is
written with COPY and INSERT … SELECT. The campaign is made and launched through the gateway, at 09:00 in
each user's local time; its first occurrence is then made due, and the running scheduler decides it:
one INSERT … SELECT of every send (scheduler.repository.Entry). The figure is the time from the
occurrence falling due to all its sends stored, checked against a count by hand.
"""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from bench.harness import Env, Figure

if TYPE_CHECKING:
    from bench.scenarios import Size

Progress = Callable[[float], None]

LABEL = "8. Scheduled campaign"
USERS = {"tiny": 20_000}  # every other size: a million
DEFAULT_USERS = 1_000_000
TARGET_SECONDS = 60.0
# Users' time zones: the valid ones spread over both ends of the day, one no zone can parse, and none.
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati", "America/Los_Angeles",
         "Australia/Sydney", "Asia/Kolkata", "Mars/Olympus_Mons", None)
CHUNK = 200_000


async def load_audience(db: asyncpg.Pool, workspace_id: str, users: int, advance: Progress) -> tuple[str, str]:
    """`users` profiles (COPY), all in one segment and every 20th also in an excluded one (INSERT … SELECT)."""
    now = datetime.now(UTC)
    included, excluded = f"seg_bench_all_{workspace_id[-6:]}", f"seg_bench_out_{workspace_id[-6:]}"
    async with db.acquire() as conn:
        for start in range(0, users, CHUNK):
            ids = range(start, min(users, start + CHUNK))
            await conn.copy_records_to_table("profiles", schema_name="profiles", columns=[
                "workspace_id", "profile_id", "user_id", "traits", "trait_times", "attributes", "attribute_times",
                "first_seen", "last_seen"],
                records=[(workspace_id, f"p{i}", f"u{i}", '{"plan": "pro"}', "{}",
                          f'{{"time_zone": "{ZONES[i % len(ZONES)]}"}}' if ZONES[i % len(ZONES)] else "{}", "{}", now, now)
                         for i in ids])
            advance(0.4 * len(ids) / users)
        for segment_id, name in ((included, "everyone"), (excluded, "opted out of picks")):
            await conn.execute(
                "INSERT INTO segmenter.segments (id, workspace_id, name, filter, ready_at) VALUES ($1, $2, $3, $4, now())",
                segment_id, workspace_id, name, '{"trait": "plan", "op": "exists"}',
            )
        await conn.execute(
            "INSERT INTO segmenter.memberships (workspace_id, segment_id, profile_id, user_id) "
            "SELECT workspace_id, $2, profile_id, user_id FROM profiles.profiles WHERE workspace_id = $1", workspace_id, included,
        )
        await conn.execute(
            "INSERT INTO segmenter.memberships (workspace_id, segment_id, profile_id, user_id) "
            "SELECT workspace_id, $2, profile_id, user_id FROM profiles.profiles WHERE workspace_id = $1 "
            "AND substr(profile_id, 2)::int % 20 = 0", workspace_id, excluded,
        )
        await conn.execute("ANALYZE profiles.profiles; ANALYZE segmenter.memberships")
    advance(0.2)
    return included, excluded


async def scheduled_campaign(env: Env, size: "Size", advance: Progress) -> list[Figure]:
    """A local-time scheduled campaign to a million users: the time to decide and store every send."""
    users = USERS.get(size.name, DEFAULT_USERS)
    ws = await env.workspace("bench-scheduled")
    wid = ws["workspace_id"]
    included, excluded = await load_audience(env.db, wid, users, advance)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    body: dict[str, Any] = {
        "name": "Weekly picks", "channel": "webhook",
        "message": {"url": "https://hooks.example.com/picks", "body": {"user": "{{ user.user_id }}"}},
        "schedule": {"at": f"{day}T09:00:00", "local_time": True},
        "audience": {"segment_ids": [included], "exclude_segment_ids": [excluded]},
    }
    async with env.api(ws) as api:
        made = await api.post("/api/v1/campaigns", json=body)
        made.raise_for_status()
        campaign_id = made.json()["id"]
        (await api.post(f"/api/v1/campaigns/{campaign_id}/launch")).raise_for_status()
    # The occurrence is decided 14 h before its wall-clock time first comes (UTC+14): make it due now.
    expected = users - len(range(0, users, 20))
    with env.cpu_window(LABEL, "one occurrence decided", expected, "send") as budget:
        started = time.perf_counter()
        await env.db.execute("UPDATE scheduler.occurrences SET due_at = now() WHERE campaign_id = $1", campaign_id)
        row = None
        while time.perf_counter() - started < 600:
            row = await env.db.fetchrow("SELECT status, entered, decided_at FROM scheduler.occurrences "
                                        "WHERE campaign_id = $1 AND status <> 'pending'", campaign_id)
            if row is not None:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
    assert row is not None and row["status"] == "done", f"the occurrence was not decided in 600 s: {row}"
    stored = await env.db.fetchval("SELECT count(*) FROM scheduler.sends WHERE campaign_id = $1 AND status = 'scheduled'", campaign_id)
    assert stored == row["entered"] == expected, f"stored {stored}, the occurrence says {row['entered']}, by hand {expected}"
    instants = await env.db.fetchval("SELECT count(DISTINCT due_at) FROM scheduler.sends WHERE campaign_id = $1", campaign_id)
    advance(0.4)
    await env.db.execute("DELETE FROM scheduler.sends WHERE campaign_id = $1", campaign_id)  # not released later by the rest
    return [Figure(
        LABEL, f"decide + enqueue {expected:,} local-time sends (one occurrence)", elapsed, "s",
        target=TARGET_SECONDS, higher_is_better=False,
        note=f"{expected / elapsed:,.0f} sends/s; CPU: PostgreSQL {budget.cpu.get('postgres', 0):.1f} s, scheduler "
             f"{budget.cpu.get('scheduler', 0):.1f} s; {users:,} users in the segment, every 20th excluded; "
             f"{instants} distinct due times (7 zones, the workspace default for none or an unknown one)",
    )]
