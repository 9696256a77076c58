"""The delivery policy at release on real PostgreSQL and NATS (issue 15): workspace rules through the API,
campaign fields checked when saved, and every rule applied to sends being released — caps across
campaigns and channels (and held by several replicas releasing at once), the global and campaign
control groups, variants, windows in each user's time zone, quiet hours, rate limits and locales.

Time is controlled, not waited for: sends are due at fixed instants in 2021 and released `now=` then,
so no other test's sends (due around the real clock) are claimed by these passes.
"""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import SendRequested
from kernel.db import make_engine, make_sessionmaker, unit_of_work
from services.profiles.models import Device, Profile
from services.scheduler import domain, service
from services.scheduler.app import build as build_scheduler
from services.scheduler.config import get_settings as scheduler_settings
from services.scheduler.delivery import domain as policy
from services.scheduler.delivery.models import CapLedger, DeliverySettings
from services.scheduler.models import Campaign, ScheduledSend
from tests.conftest import Infra
from tests.integration.helpers import running

MONDAY_NOON = datetime(2021, 3, 1, 12, 0, tzinfo=UTC)
PUSH = {"title": "Hi", "body": "default"}
EMAIL = {"subject": "Hi", "body": "default"}


# --- helpers


async def settings(sessions: async_sessionmaker[AsyncSession], workspace_id: str, **fields: Any) -> None:
    values = {"frequency_caps": [], "global_control_percent": 0, "default_time_zone": "UTC", **fields}
    async with unit_of_work(sessions) as s:
        s.add(DeliverySettings(workspace_id=workspace_id, **values))


async def campaign(sessions: async_sessionmaker[AsyncSession], workspace_id: str, channel: str = "push", **fields: Any) -> str:
    campaign_id = f"cmp_{uuid.uuid4().hex[:12]}"
    async with unit_of_work(sessions) as s:
        s.add(Campaign(**{
            "id": campaign_id, "workspace_id": workspace_id, "name": "c", "status": "active", "channel": channel,
            "trigger": {"event": "Bought", "where": []}, "audience": None, "delay_seconds": 0, "cancel_on": [],
            "message": PUSH if channel == "push" else EMAIL, **fields,
        }))
    return campaign_id


async def profile(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str, attributes: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None, device_locale: str | None = None,
) -> str:
    profile_id = f"p_{uuid.uuid4().hex}"
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile).values(
            workspace_id=workspace_id, profile_id=profile_id, user_id=profile_id, traits=traits or {}, trait_times={},
            attributes=attributes or {}, attribute_times={}, first_seen=MONDAY_NOON, last_seen=MONDAY_NOON,
        ))
        if device_locale:
            s.add(Device(workspace_id=workspace_id, device_id=f"d_{uuid.uuid4().hex}", profile_id=profile_id,
                         platform="ios", locale=device_locale, last_seen=MONDAY_NOON))
    return profile_id


async def due(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str, campaign_id: str, profile_id: str,
    channel: str = "push", at: datetime = MONDAY_NOON,
) -> str:
    send_id = domain.send_id(campaign_id, uuid.uuid4().hex, profile_id)
    async with unit_of_work(sessions) as s:
        s.add(ScheduledSend(
            send_id=send_id, workspace_id=workspace_id, campaign_id=campaign_id, profile_id=profile_id,
            user_id=profile_id, channel=channel, status="scheduled",
            trigger={"message_id": "m", "name": "Bought", "properties": {}, "timestamp": at.isoformat()},
            triggered_at=at, due_at=at,
        ))
    return send_id


async def release(sessions: async_sessionmaker[AsyncSession], nc: NATS, now: datetime, limit: int = 1000) -> list[SendRequested]:
    async with unit_of_work(sessions) as s:
        return await service.release_due(s, nc, limit, now)


async def sends(sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> dict[str, ScheduledSend]:
    async with sessions() as s:
        rows = await s.scalars(select(ScheduledSend).where(ScheduledSend.workspace_id == workspace_id))
        return {r.send_id: r for r in rows}


# --- the workspace's rules and the campaign's fields, through the API


@pytest.fixture
async def api(workspace_id: str, infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build_scheduler, scheduler_settings, workspace_id) as client:
        yield client


async def test_delivery_settings_are_read_replaced_and_checked(api: httpx.AsyncClient) -> None:
    first = await api.get("/api/v1/settings/delivery")
    assert first.status_code == 200, first.text
    assert first.json() | {"updated_at": None} == {
        "frequency_caps": [], "global_control_percent": 0, "default_time_zone": "UTC", "quiet_hours_attribute": None,
        "updated_at": None,
    }
    rules = {
        "frequency_caps": [{"channel": "push", "max": 3, "per_days": 7}, {"channel": "any", "max": 5, "per_days": 7}],
        "global_control_percent": 5, "default_time_zone": "Europe/Berlin", "quiet_hours_attribute": "quiet_hours",
    }
    put = await api.put("/api/v1/settings/delivery", json=rules)
    assert put.status_code == 200, put.text
    got = (await api.get("/api/v1/settings/delivery")).json()
    assert {k: got[k] for k in rules} == rules and got["updated_at"]
    base = {"frequency_caps": [], "global_control_percent": 0}
    refused: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [
        (("default_time_zone",), base | {"default_time_zone": "Mars/Olympus"}),
        (("global_control_percent",), base | {"global_control_percent": 100}),
        (("frequency_caps", 0, "channel"), base | {"frequency_caps": [{"channel": "fax", "max": 1, "per_days": 1}]}),
        (("frequency_caps", 0, "per_days"), base | {"frequency_caps": [{"channel": "push", "max": 1, "per_days": 0}]}),
        (("frequency_caps",), base | {"frequency_caps": [{"channel": "push", "max": 1, "per_days": 7}] * 2}),
        (("surprise",), base | {"surprise": 1}),
        (("frequency_caps",), {"global_control_percent": 0}),  # a replacement says what the caps are
    ]
    for loc, bad in refused:
        r = await api.put("/api/v1/settings/delivery", json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert ["body", *loc] in [d["loc"] for d in r.json()["detail"]], r.text
    assert (await api.get("/api/v1/settings/delivery")).json() == got  # nothing refused changed anything


def push_campaign(**fields: Any) -> dict[str, Any]:
    return {"name": "Picks", "channel": "push", "trigger": {"event": "Bought"}, "message": PUSH, **fields}


async def test_campaign_delivery_fields_are_stored_and_bad_ones_refused_naming_the_field(api: httpx.AsyncClient) -> None:
    fields = {
        "transactional": False,
        "delivery": {"window": {"start": "09:00", "end": "21:00", "days": ["mon", "fri"], "outside": "drop"}, "rate_per_minute": 100},
        "variants": [{"name": "A", "weight": 45, "message": {"title": "A", "body": "{{ user.traits.first_name }}"}},
                     {"name": "B", "weight": 45, "message": {"title": "B", "body": "b"},
                      "locales": {"de": {"title": "B-de", "body": "b"}}}],
        "control_percent": 10,
        "locales": {"pt-BR": {"title": "Oi", "body": "br"}},
    }
    r = await api.post("/api/v1/campaigns", json=push_campaign(**fields))
    assert r.status_code == 201, r.text
    stored = (await api.get(f"/api/v1/campaigns/{r.json()['id']}")).json()
    assert stored["delivery"] == fields["delivery"] and stored["control_percent"] == 10
    assert [v["name"] for v in stored["variants"]] == ["A", "B"] and stored["variants"][1]["locales"]["de"]["title"] == "B-de"
    assert stored["locales"]["pt-BR"]["title"] == "Oi" and stored["transactional"] is False

    campaign_id = r.json()["id"]
    bad_edit = await api.patch(f"/api/v1/campaigns/{campaign_id}", json={"control_percent": 20})
    assert bad_edit.status_code == 422 and ["body", "variants"] in [d["loc"] for d in bad_edit.json()["detail"]], bad_edit.text
    edited = await api.patch(f"/api/v1/campaigns/{campaign_id}", json={"control_percent": 20, "variants": [
        {"name": "A", "weight": 40, "message": PUSH}, {"name": "B", "weight": 40, "message": PUSH}]})
    assert edited.status_code == 200 and edited.json()["control_percent"] == 20, edited.text
    copy = await api.post(f"/api/v1/campaigns/{campaign_id}/duplicate")
    assert copy.status_code == 201 and copy.json()["variants"] == edited.json()["variants"], copy.text

    window = {"start": "09:00", "end": "21:00"}
    two = [{"name": "A", "weight": 50, "message": PUSH}, {"name": "B", "weight": 50, "message": PUSH}]
    refused: list[tuple[dict[str, Any], list[Any], str]] = [
        ({"delivery": {"window": {"start": "09:00", "end": "09:00"}}}, ["delivery", "window"], "never open"),
        ({"delivery": {"window": window | {"days": []}}}, ["delivery", "window"], "at least one day"),
        ({"delivery": {"window": window | {"start": "9am"}}}, ["delivery", "window", "start"], "pattern"),
        ({"delivery": {"window": window | {"outside": "later"}}}, ["delivery", "window", "outside"], "wait"),
        ({"delivery": {"rate_per_minute": 0}}, ["delivery", "rate_per_minute"], "greater than"),
        ({"variants": two, "control_percent": 10}, ["variants"], "must add up to 90"),
        ({"variants": two[:1]}, ["variants"], "must add up to 100"),
        ({"control_percent": 100}, ["control_percent"], "less than or equal to 99"),
        ({"variants": [two[0], two[0] | {"weight": 50}]}, ["variants", 1, "name"], "two variants"),
        ({"variants": [{"name": "control", "weight": 100, "message": PUSH}]}, ["variants", 0, "name"], "reserved"),
        ({"variants": [{"name": "A", "weight": 100, "message": {"title": "{{ oops"}}]}, ["variants", 0, "message", "title"], ""),
        ({"locales": {"pt-BR": {"title": 5}}}, ["locales", "pt-BR", "title"], ""),
        ({"locales": {"not a locale": PUSH}}, ["locales", "not a locale", "[key]"], "pattern"),
    ]
    for bad, loc, words in refused:
        r = await api.post("/api/v1/campaigns", json=push_campaign(**bad))
        assert r.status_code == 422, (bad, r.text)
        problems = {tuple(d["loc"]): d["msg"] for d in r.json()["detail"]}
        assert ("body", *loc) in problems, (bad, r.text)
        assert words in problems[("body", *loc)], (bad, r.text)


# --- the rules at release


async def test_frequency_caps_count_across_campaigns_and_channels_and_spare_transactional(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await settings(sessions, workspace_id, frequency_caps=[
        {"channel": "push", "max": 2, "per_days": 7}, {"channel": "any", "max": 3, "per_days": 7}])
    pushes = [await campaign(sessions, workspace_id) for _ in range(2)]
    email = await campaign(sessions, workspace_id, channel="email")
    receipts = await campaign(sessions, workspace_id, transactional=True)
    user = await profile(sessions, workspace_id)
    day = timedelta(days=1)
    first = await due(sessions, workspace_id, pushes[0], user, at=MONDAY_NOON)
    second = await due(sessions, workspace_id, pushes[1], user, at=MONDAY_NOON + day)
    third = await due(sessions, workspace_id, pushes[0], user, at=MONDAY_NOON + 2 * day)
    mail = await due(sessions, workspace_id, email, user, "email", at=MONDAY_NOON + 2 * day)
    mail_again = await due(sessions, workspace_id, email, user, "email", at=MONDAY_NOON + 3 * day)
    receipt = await due(sessions, workspace_id, receipts, user, at=MONDAY_NOON + 3 * day)
    after_a_week = await due(sessions, workspace_id, pushes[1], user, at=MONDAY_NOON + 7 * day + timedelta(hours=1))
    for at in (MONDAY_NOON, MONDAY_NOON + day, MONDAY_NOON + 2 * day, MONDAY_NOON + 3 * day):
        await release(sessions, nc, at)
    rows = await sends(sessions, workspace_id)
    assert [rows[s].status for s in (first, second, mail)] == ["requested"] * 3
    assert rows[third].status == "suppressed" and rows[third].rule == "frequency_cap"
    assert "at most 2 push messages per 7 days" in (rows[third].reason or "")
    assert rows[mail_again].status == "suppressed" and "at most 3 messages per 7 days" in (rows[mail_again].reason or "")
    assert rows[receipt].status == "requested" and rows[receipt].rule is None  # transactional: not capped
    # a week after the first push, one push is free again (the first has left the 7 days)
    await release(sessions, nc, MONDAY_NOON + 7 * day + timedelta(hours=1))
    assert (await sends(sessions, workspace_id))[after_a_week].status == "requested"


async def test_global_control_variants_and_campaign_control_are_stable_ranges_of_the_bucket(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await settings(sessions, workspace_id, global_control_percent=20)
    variants = [{"name": "A", "weight": 40, "message": {"title": "A", "body": "a"}},
                {"name": "B", "weight": 40, "message": {"title": "B", "body": "b"}}]
    experiment = await campaign(sessions, workspace_id, variants=variants, control_percent=20)
    receipts = await campaign(sessions, workspace_id, transactional=True)
    users = [await profile(sessions, workspace_id) for _ in range(60)]
    experiment_sends = {await due(sessions, workspace_id, experiment, u): u for u in users}
    receipt_sends = {await due(sessions, workspace_id, receipts, u): u for u in users}
    requested = {r.send_id: r for r in await release(sessions, nc, MONDAY_NOON)}
    rows = await sends(sessions, workspace_id)
    arms: Counter[str | None] = Counter()
    for send_id, user in experiment_sends.items():
        row, bucket = rows[send_id], policy.bucket(workspace_id, user)
        if bucket < 2000:
            assert (row.status, row.rule, row.variant) == ("suppressed", "global_control", "global_control")
            continue
        arm = policy.arm(policy.position(bucket, experiment), 20, variants)
        arms[arm] += 1
        assert row.variant == arm
        if arm == "control":
            assert (row.status, row.rule) == ("suppressed", "control")
        else:
            assert row.status == "requested" and requested[send_id].variant == arm
            assert requested[send_id].message.title == arm  # type: ignore[union-attr]
    assert set(arms) >= {"A", "B"}
    # transactional: the holdout does not apply, and there are no variants
    assert all(rows[s].status == "requested" and rows[s].variant is None for s in receipt_sends)
    assert all(requested[s].transactional for s in receipt_sends)


async def test_delivery_window_in_each_users_time_zone_with_quiet_hours_and_drop(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    await settings(sessions, workspace_id, default_time_zone="Asia/Kolkata", quiet_hours_attribute="quiet_hours")
    weekdays = {"window": {"start": "09:00", "end": "21:00", "days": ["mon", "tue", "wed", "thu", "fri"], "outside": "wait"}}
    waits = await campaign(sessions, workspace_id, delivery=weekdays)
    drops = await campaign(sessions, workspace_id, delivery={"window": weekdays["window"] | {"outside": "drop"}})
    zones = {
        "berlin": await profile(sessions, workspace_id, {"time_zone": "Europe/Berlin"}),  # 13:00: open
        "tokyo": await profile(sessions, workspace_id, {"time_zone": "Asia/Tokyo"}),  # 21:00: just closed
        "la": await profile(sessions, workspace_id, {"time_zone": "America/Los_Angeles"}),  # 04:00: not yet
        "default": await profile(sessions, workspace_id, {"time_zone": "Not/AZone"}),  # Kolkata 17:30: open
        "quiet": await profile(sessions, workspace_id, {"time_zone": "UTC"}, {"quiet_hours": "11:00-14:00"}),
    }
    sent = {name: await due(sessions, workspace_id, waits, user) for name, user in zones.items()}
    dropped = await due(sessions, workspace_id, drops, zones["tokyo"])
    first = {r.send_id for r in await release(sessions, nc, MONDAY_NOON)}
    rows = await sends(sessions, workspace_id)
    assert first == {sent["berlin"], sent["default"]}
    expected = {"tokyo": MONDAY_NOON + timedelta(hours=12), "la": MONDAY_NOON + timedelta(hours=5),
                "quiet": MONDAY_NOON + timedelta(hours=2)}
    for name, until in expected.items():
        row = rows[sent[name]]
        assert (row.status, row.rule, row.due_at) == ("scheduled", "delivery_window", until), name
    assert "quiet hours" in (rows[sent["quiet"]].reason or "") and "Asia/Tokyo" in (rows[sent["tokyo"]].reason or "")
    assert rows[dropped].status == "suppressed" and rows[dropped].rule == "delivery_window"
    # nothing goes before its opening; each goes when it opens
    assert await release(sessions, nc, MONDAY_NOON + timedelta(hours=1)) == []
    assert {r.send_id for r in await release(sessions, nc, MONDAY_NOON + timedelta(hours=2))} == {sent["quiet"]}
    assert {r.send_id for r in await release(sessions, nc, MONDAY_NOON + timedelta(hours=5))} == {sent["la"]}
    assert {r.send_id for r in await release(sessions, nc, MONDAY_NOON + timedelta(hours=12))} == {sent["tokyo"]}
    assert (await sends(sessions, workspace_id))[sent["tokyo"]].rule is None


async def test_rate_limit_spreads_sends_over_minutes_and_drops_none(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    paced = await campaign(sessions, workspace_id, delivery={"rate_per_minute": 5})
    sent = [await due(sessions, workspace_id, paced, await profile(sessions, workspace_id)) for _ in range(12)]
    released = [len(await release(sessions, nc, MONDAY_NOON + timedelta(minutes=m))) for m in range(4)]
    assert released == [5, 5, 2, 0]
    rows = await sends(sessions, workspace_id)
    assert all(rows[s].status == "requested" for s in sent)


async def test_rate_limit_is_shared_by_passes_within_a_minute(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    paced = await campaign(sessions, workspace_id, delivery={"rate_per_minute": 4})
    for _ in range(6):
        await due(sessions, workspace_id, paced, await profile(sessions, workspace_id))
    # three passes of two sends each within the same minute: the minute's allowance is 4 in all
    counts = [len(await release(sessions, nc, MONDAY_NOON + timedelta(seconds=10 * i), limit=2)) for i in range(3)]
    assert sum(counts) == 4, counts
    rows = list((await sends(sessions, workspace_id)).values())
    held = [r for r in rows if r.status == "scheduled"]
    assert len(held) == 2 and all(r.rule == "rate_limit" and r.due_at == MONDAY_NOON + timedelta(minutes=1) for r in held)


async def test_localized_content_follows_the_users_locale_with_fallbacks(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    locales = {"pt-BR": {"title": "Oi", "body": "br"}, "pt": {"title": "Olá", "body": "pt"}, "de": {"title": "Hallo", "body": "de"}}
    localized = await campaign(sessions, workspace_id, locales=locales)
    users = {
        "br": await profile(sessions, workspace_id, {"language": "pt"}, device_locale="pt_BR"),
        "pt": await profile(sessions, workspace_id, {"language": "pt"}),
        "de": await profile(sessions, workspace_id, {"language": "de"}, device_locale="en_US"),
        "fr": await profile(sessions, workspace_id, {"language": "fr"}),
        "none": await profile(sessions, workspace_id),
    }
    sent = {await due(sessions, workspace_id, localized, user): name for name, user in users.items()}
    titles = {sent[r.send_id]: r.message.title for r in await release(sessions, nc, MONDAY_NOON)}  # type: ignore[union-attr]
    assert titles == {"br": "Oi", "pt": "Olá", "de": "Hallo", "fr": "Hi", "none": "Hi"}


# --- several replicas at once


async def test_caps_hold_when_several_replicas_release_to_the_same_users_at_once(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    """Four replicas (an engine each) release small batches concurrently; every user has six sends due across
    three campaigns and two channels; the caps (2 a week on any channel) let exactly two through per user."""
    await settings(sessions, workspace_id, frequency_caps=[{"channel": "any", "max": 2, "per_days": 7}])
    campaigns = [await campaign(sessions, workspace_id), await campaign(sessions, workspace_id),
                 await campaign(sessions, workspace_id, channel="email")]
    users = [await profile(sessions, workspace_id) for _ in range(25)]
    for _ in range(2):
        for user in users:
            for c in campaigns:
                await due(sessions, workspace_id, c, user, "email" if c == campaigns[2] else "push")
    engines = [make_engine(infra.database_url, pool_size=2) for _ in range(4)]
    passes: Counter[int] = Counter()

    async def replica(index: int) -> None:
        makers = make_sessionmaker(engines[index])
        while True:
            async with unit_of_work(makers) as s:
                await service.release_due(s, nc, 7, MONDAY_NOON)
                passes[index] += 1
                await asyncio.sleep(0)  # let the other replicas interleave before this one commits
            if not await remaining():
                return

    async def remaining() -> int:
        async with sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(ScheduledSend).where(
                ScheduledSend.workspace_id == workspace_id, ScheduledSend.status == "scheduled")) or 0)

    try:
        await asyncio.wait_for(asyncio.gather(*(replica(i) for i in range(4))), timeout=120)
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(1 for n in passes.values() if n > 1) >= 2, passes  # replicas really took turns
    rows = list((await sends(sessions, workspace_id)).values())
    per_user = Counter(r.profile_id for r in rows if r.status == "requested")
    assert set(per_user.values()) == {2} and len(per_user) == len(users), per_user
    assert Counter(r.rule for r in rows if r.status == "suppressed") == {"frequency_cap": 4 * len(users)}
    async with sessions() as s:
        ledger = Counter(await s.scalars(select(CapLedger.profile_id).where(CapLedger.workspace_id == workspace_id)))
    assert ledger == per_user
