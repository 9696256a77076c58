"""A campaign's results on the real stack's PostgreSQL and NATS: a variant experiment (two variants, a control
group, the global holdout) whose stats match a hand count; engagement and conversions counted once however often
their events arrive; bad goals refused; the automatic winner decided by its durable timer.

The send decisions are written as the delivery policy records them (variant, status, rule), so that the hand
count below is exact; everything after (engagement and goal events) travels as resolved events over PROFILES to
the scheduler running in-process, and the stats are read through its API.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import Event, ResolvedEvent
from kernel.db import unit_of_work
from services.scheduler.app import build as build_scheduler
from services.scheduler.config import get_settings as scheduler_settings
from services.scheduler.models import Campaign, ScheduledSend
from services.scheduler.results import service as results
from tests.conftest import eventually
from tests.integration.helpers import running

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
T0 = TODAY - timedelta(hours=14)  # yesterday 10:00 UTC: when the sends were decided
YESTERDAY, TODAY_ = T0.date().isoformat(), TODAY.date().isoformat()
GOAL = {"event": "Order Completed", "where": [{"property": "total", "op": "gt", "value": 50}], "within_hours": 72}


def campaign_body(**fields: Any) -> dict[str, Any]:
    return {"name": "Weekly picks", "channel": "email", "trigger": {"event": "Signed Up"},
            "message": {"subject": "Picks", "body": "For you"}, **fields}


async def sends(sessions: async_sessionmaker[AsyncSession], workspace_id: str, campaign_id: str,
                rows: list[tuple[str, str, str | None, str | None]]) -> None:
    """Send decisions as the policy records them: (profile, status, variant, rule), decided at T0."""
    async with unit_of_work(sessions) as s:
        await s.execute(insert(ScheduledSend), [{
            "send_id": f"snd_{campaign_id}_{profile}", "workspace_id": workspace_id, "campaign_id": campaign_id,
            "profile_id": profile, "user_id": profile, "channel": "email", "status": status, "variant": variant,
            "rule": rule, "reason": rule, "trigger": {"message_id": f"m_{profile}", "name": "Signed Up", "properties": {},
                                                     "timestamp": T0.isoformat()},
            "triggered_at": T0, "created_at": T0, "updated_at": T0,
            # one still waiting is due tomorrow, so the running scheduler leaves it waiting
            "due_at": T0 if status != "scheduled" else TODAY + timedelta(days=2),
        } for profile, status, variant, rule in rows])


def event(workspace_id: str, profile: str, name: str, at: datetime, **properties: Any) -> ResolvedEvent:
    return ResolvedEvent(workspace_id=workspace_id, profile_id=profile, user_id=profile, event=Event(
        workspace_id=workspace_id, message_id=uuid.uuid4().hex, type="track", user_id=profile, event=name,
        properties=properties, timestamp=at, received_at=at,
    ))


def outcome(workspace_id: str, campaign_id: str, profile: str, what: str, at: datetime, **extra: Any) -> ResolvedEvent:
    return event(workspace_id, profile, f"$message_{what}", at, campaign_id=campaign_id,
                 send_id=f"snd_{campaign_id}_{profile}", channel="email", **extra)


def order(workspace_id: str, profile: str, at: datetime, total: int = 80) -> ResolvedEvent:
    return event(workspace_id, profile, "Order Completed", at, total=total)


@pytest.fixture
async def api(workspace_id: str, infra: Any) -> Any:
    async with running(build_scheduler, scheduler_settings, workspace_id) as client:
        yield client


async def test_goal_windows_must_be_positive_and_an_experiment_needs_a_goal_for_conversions(api: httpx.AsyncClient) -> None:
    for hours in (0, -3):
        r = await api.post("/api/v1/campaigns", json=campaign_body(conversion={**GOAL, "within_hours": hours}))
        assert r.status_code == 422, r.text
        assert any(e["loc"][-2:] == ["conversion", "within_hours"] for e in r.json()["detail"]), r.text
    r = await api.post("/api/v1/campaigns", json=campaign_body(experiment={"auto_winner_after_hours": 24}))
    assert r.status_code == 422 and "conversion goal" in r.text, r.text
    r = await api.post("/api/v1/campaigns", json=campaign_body(conversion={**GOAL, "within_hours": 0.5}))
    assert r.status_code == 422, r.text
    r = await api.post("/api/v1/campaigns", json=campaign_body(conversion=GOAL))
    assert r.status_code == 201, r.text
    assert r.json()["conversion"] == GOAL


async def test_a_variant_experiment_matches_a_hand_count(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    r = await api.post("/api/v1/campaigns", json=campaign_body(conversion=GOAL))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/launch")).status_code == 200
    A, B, C = [f"a{i}" for i in range(12)], [f"b{i}" for i in range(10)], [f"c{i}" for i in range(10)]
    await sends(sessions, workspace_id, cid, [
        *[(p, "requested", "A", None) for p in A[:10]],
        *[(p, "suppressed", "A", "frequency_cap") for p in A[10:]],
        *[(p, "requested", "B", None) for p in B],
        *[(p, "suppressed", "control", "control") for p in C],
        ("g0", "suppressed", "global_control", "global_control"),
        ("p0", "scheduled", None, None),
    ])
    ws, h = workspace_id, lambda n: T0 + timedelta(hours=n)
    events = [
        # Variant A's outcomes carry their variant (C3); B's do not: the send's is used.
        *[outcome(ws, cid, p, "sent", h(1), variant="A") for p in A[:10]],
        *[outcome(ws, cid, p, "delivered", h(1), variant="A") for p in A[:8]],
        outcome(ws, cid, "a8", "bounced", h(1), variant="A"), outcome(ws, cid, "a9", "failed", h(1), variant="A"),
        *[outcome(ws, cid, p, "opened", h(1), variant="A") for p in A[:5]],
        outcome(ws, cid, "a0", "opened", h(5), variant="A"),  # opened again: one send opened
        *[outcome(ws, cid, p, "clicked", h(1), variant="A") for p in A[:3]],
        *[outcome(ws, cid, p, "sent", h(1)) for p in B],
        *[outcome(ws, cid, p, "delivered", h(1)) for p in B],
        *[outcome(ws, cid, p, "opened", h(1)) for p in B[:4]],
        outcome(ws, cid, "b0", "clicked", h(1)),
        outcome(ws, cid, "b1", "unsubscribed", h(20)),  # today
        event(ws, "a1", "$message_opened", h(1), campaign_id=cid, send_id="snd_forged"),  # no such send
        event(ws, "a1", "$message_opened", h(1), campaign_id="cmp_other", send_id=f"snd_{cid}_a1"),  # not its campaign
        # Conversions: Order Completed over 50 within 72 h after the send or the holdout.
        *[order(ws, p, h(2)) for p in A[:6]],
        order(ws, "a0", h(3)),  # a second order: one user
        order(ws, "a6", h(2), total=20),  # not the goal
        order(ws, "a7", h(73)),  # after the window
        order(ws, "a8", h(-1)),  # before the send
        order(ws, "a10", h(2)),  # capped: neither sent nor held out
        order(ws, "p0", h(2)),  # not decided yet
        order(ws, "b2", h(2)), order(ws, "b0", h(15)), order(ws, "b1", h(16)),
        order(ws, "c0", h(2)), order(ws, "c1", h(16)),
        order(ws, "g0", h(2)),
        event(ws, "c2", "Product Viewed", h(2), total=80),
    ]
    await bus.publish_contracts(nc.jetstream(), events)

    async def counted() -> dict[str, Any] | None:
        r = await api.get(f"/api/v1/campaigns/{cid}/stats")
        assert r.status_code == 200, r.text
        stats = r.json()
        done = stats["totals"]["converted"] == 12 and stats["totals"]["unsubscribed"] == 1 and stats["totals"]["opened"] == 9
        return stats if done else None

    stats = await eventually(counted, timeout=20)
    expected_totals = {
        "entered": 34, "suppressed": 13, "suppressed_by_rule": {"frequency_cap": 2, "control": 10, "global_control": 1},
        "sent": 20, "delivered": 18, "failed": 1, "bounced": 1, "opened": 9, "clicked": 4, "dismissed": 0,
        "unsubscribed": 1, "converted": 12,
    }
    assert stats["totals"] == expected_totals
    assert stats["triggered"] == 34
    assert stats["by_status"] == {"requested": 20, "suppressed": 13, "scheduled": 1}
    assert stats["conversion"] == GOAL
    arms = {v["variant"]: v for v in stats["variants"]}
    assert set(arms) == {"A", "B", "control", "global_control", "default"}
    zero: dict[str, Any] = dict.fromkeys(expected_totals, 0) | {"suppressed_by_rule": {}}
    assert arms["A"]["totals"] == zero | {"entered": 12, "suppressed": 2, "suppressed_by_rule": {"frequency_cap": 2},
                                          "sent": 10, "delivered": 8, "failed": 1, "bounced": 1, "opened": 5,
                                          "clicked": 3, "converted": 6}
    assert arms["B"]["totals"] == zero | {"entered": 10, "sent": 10, "delivered": 10, "opened": 4, "clicked": 1,
                                          "unsubscribed": 1, "converted": 3}
    assert arms["control"]["totals"] == zero | {"entered": 10, "suppressed": 10, "suppressed_by_rule": {"control": 10},
                                                "converted": 2}
    assert arms["global_control"]["totals"]["converted"] == 1 and arms["default"]["totals"]["entered"] == 1
    assert [arms[a]["recipients"] for a in ("A", "B", "control", "global_control", "default")] == [10, 10, 10, 1, 0]
    # 6/10: Wilson (0.6 + 0.19207) / 1.38415 ± 1.41601 · √(0.024 + 0.0096037) = 0.57225 ± 0.25957
    assert arms["A"]["conversion_rate"] == pytest.approx({"rate": 0.6, "low": 0.31267, "high": 0.83182}, abs=1e-5)
    assert arms["B"]["conversion_rate"]["rate"] == 0.3 and arms["default"]["conversion_rate"] is None
    # A against control (2/10): pooled 0.4, se √(0.4 · 0.6 · 0.2) = 0.21909, z = 0.4 / 0.21909 = 1.82574, p = 0.06789
    assert arms["A"]["uplift"] == pytest.approx({"against": "control", "absolute": 0.4, "relative": 2.0,
                                                 "z": 1.82574, "p_value": 0.06789, "significant": False}, abs=1e-5)
    assert arms["B"]["uplift"]["relative"] == pytest.approx(0.5) and arms["control"]["uplift"] is None
    days = {(v["variant"], d["day"]): d for v in stats["variants"] for d in v["daily"]}
    assert days[("A", YESTERDAY)] | {"day": None} == arms["A"]["totals"] | {"day": None}
    assert {k: days[("B", YESTERDAY)][k] for k in ("entered", "sent", "converted", "unsubscribed")} == \
        {"entered": 10, "sent": 10, "converted": 1, "unsubscribed": 0}
    assert days[("B", TODAY_)] == zero | {"day": TODAY_, "converted": 2, "unsubscribed": 1}
    assert days[("control", TODAY_)]["converted"] == 1 and days[("control", YESTERDAY)]["converted"] == 1
    assert stats["experiment"] is None

    # Every event delivered again (a redelivery, a replay): nothing counts twice.
    async with unit_of_work(sessions) as s:
        await results.record(s, events)
    again = (await api.get(f"/api/v1/campaigns/{cid}/stats")).json()
    assert again["totals"] == expected_totals and again["variants"] == stats["variants"]


async def test_the_automatic_winner_is_decided_by_its_timer_and_then_every_send_uses_it(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    cid = f"cmp_{uuid.uuid4().hex[:12]}"
    async with unit_of_work(sessions) as s:
        s.add(Campaign(
            id=cid, workspace_id=workspace_id, name="Subject lines", status="active", channel="email",
            trigger={"event": "Signed Up", "where": []}, audience=None, delay_seconds=0, cancel_on=[],
            message={"subject": "Hi", "body": "x"}, control_percent=10,
            variants=[{"name": "A", "weight": 45, "message": {"subject": "A", "body": "x"}},
                      {"name": "B", "weight": 45, "message": {"subject": "B", "body": "x"}}],
            experiment={"auto_winner_after_hours": 24, "metric": "clicked"},
        ))
    users = {"A": [f"a{i}" for i in range(200)], "B": [f"b{i}" for i in range(200)]}
    await sends(sessions, workspace_id, cid, [(p, "requested", arm, None) for arm, ps in users.items() for p in ps])
    clicks = [outcome(workspace_id, cid, p, "clicked", T0 + timedelta(hours=1)) for p in users["A"][:60] + users["B"][:40]]
    now = datetime.now(UTC)
    async with unit_of_work(sessions) as s:
        await results.record(s, clicks)
        assert await results.decide_due_experiments(s, now) == 0  # its timer starts now
    async with unit_of_work(sessions) as s:
        assert await results.decide_due_experiments(s, now + timedelta(hours=23)) == 0
        assert await results.winners(s, [cid]) == {}
    pending = (await api.get(f"/api/v1/campaigns/{cid}/stats")).json()["experiment"]
    assert pending["status"] == "pending" and pending["winner"] is None
    assert datetime.fromisoformat(pending["decides_at"]) == pytest.approx(now + timedelta(hours=24), abs=timedelta(seconds=1))
    async with unit_of_work(sessions) as s:
        assert await results.decide_due_experiments(s, now + timedelta(hours=24, seconds=1)) == 1
    async with unit_of_work(sessions) as s:
        assert await results.decide_due_experiments(s, now + timedelta(hours=48)) == 0  # decided once
        assert await results.winners(s, [cid]) == {cid: "A"}
    decided = (await api.get(f"/api/v1/campaigns/{cid}/stats")).json()["experiment"]
    # 60/200 vs 40/200 clicked: pooled 0.25, se 0.043301, z 2.30940, p 0.02092 < 0.05
    assert decided["winner"] == "A" and decided["status"] == "decided"
    assert decided["p_value"] == pytest.approx(0.02092, abs=1e-5)


async def test_an_experiment_run_by_the_scheduler_counts_what_its_policy_decided(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    """Through the scheduler end to end: triggers enter users, the delivery policy assigns arms at release (the control
    group held out), and the stats count the conversions of every third user against the arms as decided."""
    variants = [{"name": n, "weight": 45, "message": {"subject": n, "body": "x"}} for n in ("A", "B")]
    r = await api.post("/api/v1/campaigns", json=campaign_body(
        variants=variants, control_percent=10, conversion=GOAL, experiment={"auto_winner_after_hours": 24},
    ))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/launch")).status_code == 200
    people = [f"u{i}" for i in range(120)]  # a control group of none: 0.9¹²⁰ ≈ 3e-6
    now = datetime.now(UTC)
    await bus.publish_contracts(nc.jetstream(), [event(workspace_id, p, "Signed Up", now) for p in people])

    async def decided() -> dict[str, tuple[str, str | None]] | None:
        async with sessions() as s:
            rows = (await s.execute(
                select(ScheduledSend.profile_id, ScheduledSend.status, ScheduledSend.variant)
                .where(ScheduledSend.campaign_id == cid, ScheduledSend.status != "scheduled")
            )).all()
        return {p: (st, v) for p, st, v in rows} if len(rows) == len(people) else None

    arms = await eventually(decided, timeout=30)
    assert {st for st, v in arms.values() if v == "control"} <= {"suppressed"}
    assert {st for st, v in arms.values() if v != "control"} == {"requested"}
    assert {v for _, v in arms.values()} == {"A", "B", "control"}
    buyers = people[::3]
    later = datetime.now(UTC) + timedelta(seconds=1)
    await bus.publish_contracts(nc.jetstream(), [order(workspace_id, p, later) for p in buyers])
    by_arm = {name: [p for p, (_, v) in arms.items() if v == name] for name in ("A", "B", "control")}
    hand = {name: (sum(p in buyers for p in ps), len(ps)) for name, ps in by_arm.items()}

    async def counted() -> dict[str, Any] | None:
        stats = (await api.get(f"/api/v1/campaigns/{cid}/stats")).json()
        return stats if stats["totals"]["converted"] == len(buyers) else None

    stats = await eventually(counted, timeout=20)
    got = {v["variant"]: v for v in stats["variants"]}
    assert stats["totals"]["entered"] == len(people)
    assert stats["totals"]["suppressed_by_rule"] == {"control": hand["control"][1]}
    for name, (converted, n) in hand.items():
        assert (got[name]["totals"]["converted"], got[name]["recipients"]) == (converted, n)
        assert got[name]["conversion_rate"]["rate"] == pytest.approx(converted / n)
    for name in ("A", "B"):
        c, n = hand[name]
        cc, cn = hand["control"]
        assert got[name]["uplift"]["absolute"] == pytest.approx(c / n - cc / cn)
    assert stats["experiment"] is None or stats["experiment"]["status"] == "pending"
