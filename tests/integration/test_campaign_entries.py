"""Every kind of campaign entry on real PostgreSQL and NATS: scheduled (once and repeating, at a time in each user's
own time zone), segment entry (SEGMENTS consumed), API-triggered, with re-eligibility, engagement-event triggers and
exception events. The scheduler and the segmenter run in-process; time is passed to the service (`now`), never
waited for."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import Event, MembershipChanged, ResolvedEvent
from kernel.db import unit_of_work
from services.profiles.models import Profile
from services.scheduler import domain, service
from services.scheduler.delivery import repository as delivery_repository
from services.scheduler.models import Campaign, Occurrence, ScheduledSend
from services.scheduler.schemas import TriggerIn
from services.segmenter.models import Membership
from tests.conftest import eventually
from tests.integration import test_campaigns_api

apis = test_campaigns_api.apis  # the scheduler's API and the segmenter's, for this workspace
MESSAGE = {"subject": "Hi {{ user.traits.first_name | default: 'there' }}", "body": "Picks: {{ event.properties.pick }}"}
DAY = "2027-03-01"  # a Monday, far ahead of the wall clock: time is passed to the service, never waited for


async def user(sessions: async_sessionmaker[AsyncSession], workspace_id: str, plan: str, time_zone: str | None = None) -> str:
    """A profile on a plan, in a time zone (or none), written straight into the profiles schema; returns its id."""
    profile_id = f"p_{uuid.uuid4().hex[:12]}"
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Profile).values(
            workspace_id=workspace_id, profile_id=profile_id, user_id=f"u_{profile_id}", traits={"plan": plan},
            trait_times={}, attributes={"time_zone": time_zone} if time_zone else {}, attribute_times={},
            first_seen=datetime.now(UTC), last_seen=datetime.now(UTC),
        ))
    return profile_id


async def segment(segments: httpx.AsyncClient, plan: str) -> str:
    r = await segments.post("/api/v1/segments", json={"name": plan, "filter": {"trait": "plan", "op": "eq", "value": plan}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def launched(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/campaigns", json={"name": "c", "channel": "email", "message": MESSAGE, **fields})
    assert r.status_code == 201, r.text
    launch = await api.post(f"/api/v1/campaigns/{r.json()['id']}/launch")
    assert launch.status_code == 200, launch.text
    return dict(launch.json())


async def sends(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> dict[str, ScheduledSend]:
    """The campaign's sends by profile (the newest per profile)."""
    async with sessions() as s:
        rows = await s.scalars(select(ScheduledSend).where(ScheduledSend.campaign_id == campaign_id).order_by(ScheduledSend.created_at))
        return {r.profile_id: r for r in rows}


async def all_sends(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> list[ScheduledSend]:
    async with sessions() as s:
        return list(await s.scalars(select(ScheduledSend).where(ScheduledSend.campaign_id == campaign_id)))


async def occurrences(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> list[Occurrence]:
    async with sessions() as s:
        return list(await s.scalars(select(Occurrence).where(Occurrence.campaign_id == campaign_id).order_by(Occurrence.wall_at)))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def event(workspace_id: str, name: str, properties: dict[str, Any], at: datetime | None) -> Event:
    now = datetime.now(UTC)
    return Event(
        workspace_id=workspace_id, message_id=uuid.uuid4().hex, type="track", event=name, properties=properties,
        timestamp=at or now, received_at=now,
    )


async def performed(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str, profile_id: str, name: str,
    at: datetime | None = None, **props: Any,
) -> None:
    """The scheduler handles a resolved event of this profile, done `at` (now), as its PROFILES consumer would."""
    async with unit_of_work(sessions) as s:
        await service.on_events(s, nc, [(ResolvedEvent(workspace_id=workspace_id, profile_id=profile_id, event=event(workspace_id, name, props, at)), None)])


async def test_a_local_time_schedule_sends_at_nine_in_every_user_s_own_time_zone(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    api, segments = apis
    berlin = await user(sessions, workspace_id, "pro", "Europe/Berlin")
    new_york = await user(sessions, workspace_id, "pro", "America/New_York")
    tokyo = await user(sessions, workspace_id, "pro", "Asia/Tokyo")
    kiritimati = await user(sessions, workspace_id, "pro", "Pacific/Kiritimati")
    nowhere = await user(sessions, workspace_id, "pro")
    unknown_zone = await user(sessions, workspace_id, "pro", "Mars/Olympus_Mons")
    churned = await user(sessions, workspace_id, "pro", "Europe/Berlin")
    free = await user(sessions, workspace_id, "free", "Europe/Berlin")
    async with unit_of_work(sessions) as s:  # users without a valid time zone get the workspace's default
        await delivery_repository.save_settings(s, workspace_id, {
            "frequency_caps": [], "global_control_percent": 0, "default_time_zone": "America/Sao_Paulo",
        })
    pro, leaving = await segment(segments, "pro"), await segment(segments, "leaving")
    async with unit_of_work(sessions) as s:  # one pro user is also in the excluded segment
        await s.execute(insert(Membership).values(
            workspace_id=workspace_id, segment_id=leaving, profile_id=churned, user_id=None,
        ))
    campaign = await launched(
        api, schedule={"at": f"{DAY}T09:00:00", "local_time": True, "repeat": {"every": "week", "days": ["mon", "wed"]}},
        audience={"segment_ids": [pro], "exclude_segment_ids": [leaving]}, cancel_on=["Purchased"],
    )
    assert campaign["entry"] == "scheduled"
    [first] = await occurrences(sessions, campaign["id"])
    # Decided when 09:00 first comes anywhere (UTC+14), so nobody's 09:00 has passed yet.
    assert first.status == "pending" and first.due_at == utc(f"{DAY}T09:00:00") - timedelta(hours=14)

    assert await service.decide_due_occurrences(sessions, first.due_at - timedelta(seconds=1), workspace_id) == 0
    assert await service.decide_due_occurrences(sessions, first.due_at, workspace_id) == 6

    decided = await sends(sessions, campaign["id"])
    assert set(decided) == {berlin, new_york, tokyo, kiritimati, nowhere, unknown_zone}  # not the excluded, not free
    due = {profile: send.due_at for profile, send in decided.items()}
    assert due[berlin] == utc(f"{DAY}T08:00:00")
    assert due[new_york] == utc(f"{DAY}T14:00:00")
    assert due[tokyo] == utc(f"{DAY}T00:00:00")
    assert due[kiritimati] == utc(f"{DAY}T09:00:00") - timedelta(hours=14)
    assert due[nowhere] == due[unknown_zone] == utc(f"{DAY}T12:00:00")  # São Paulo, the workspace default
    assert {s.status for s in decided.values()} == {"scheduled"}
    assert decided[berlin].send_id == domain.entry_send_id(campaign["id"], first.id, berlin)
    assert free not in decided

    # The next occurrence is Wednesday's, a durable row; deciding again adds nothing.
    done, following = await occurrences(sessions, campaign["id"])
    assert (done.status, done.entered) == ("done", 6)
    assert (following.wall_at, following.status) == (datetime.fromisoformat("2027-03-03T09:00:00"), "pending")
    assert await service.decide_due_occurrences(sessions, first.due_at + timedelta(hours=1), workspace_id) == 0

    # An exception event between the decision and the send cancels that user's pending send.
    await performed(sessions, nc, workspace_id, new_york, "Purchased", at=utc(f"{DAY}T05:00:00"))
    assert (await sends(sessions, campaign["id"]))[new_york].status == "cancelled"
    assert (await sends(sessions, campaign["id"]))[tokyo].status == "scheduled"

    # The audience is checked again, live, when a send falls due: Tokyo's user moved to the free plan meanwhile.
    async with unit_of_work(sessions) as s:
        await s.execute(update(Profile).where(Profile.profile_id == tokyo).values(traits={"plan": "free"}))
    async with unit_of_work(sessions) as s:
        await service.release_due(s, nc, 1000, due[tokyo], workspace_id)
    released = await sends(sessions, campaign["id"])
    assert (released[tokyo].status, released[tokyo].reason) == ("not_in_audience", f"not in segment {pro} when the send was due")
    assert released[kiritimati].status == "requested" and released[berlin].status == "scheduled"


async def test_an_occurrence_decided_late_sends_next_day_to_those_whose_time_passed(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    api, _ = apis
    berlin = await user(sessions, workspace_id, "pro", "Europe/Berlin")
    los_angeles = await user(sessions, workspace_id, "pro", "America/Los_Angeles")
    campaign = await launched(api, schedule={"at": f"{DAY}T09:00:00", "local_time": True})
    late = utc(f"{DAY}T10:30:00")  # Berlin's 09:00 (08:00 UTC) passed 2.5 h ago: more than the grace
    assert await service.decide_due_occurrences(sessions, late, workspace_id) == 2
    due = {p: s.due_at for p, s in (await sends(sessions, campaign["id"])).items()}
    assert due[berlin] == utc("2027-03-02T08:00:00")
    assert due[los_angeles] == utc(f"{DAY}T17:00:00")
    [once] = await occurrences(sessions, campaign["id"])
    assert once.status == "done"  # a one-off schedules nothing after


async def test_a_fixed_time_zone_schedule_sends_everyone_at_one_instant_and_repeats_monthly(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    api, _ = apis
    anyone = await user(sessions, workspace_id, "free", "Asia/Tokyo")
    campaign = await launched(
        api, schedule={"at": "2027-01-31T09:30:00", "time_zone": "Europe/Lisbon", "repeat": {"every": "month"}},
    )
    [first] = await occurrences(sessions, campaign["id"])
    assert first.due_at == utc("2027-01-31T09:30:00")  # Lisbon is UTC in winter
    assert await service.decide_due_occurrences(sessions, first.due_at, workspace_id) == 1  # no audience: every user
    assert (await sends(sessions, campaign["id"]))[anyone].due_at == first.due_at
    _, february = await occurrences(sessions, campaign["id"])
    assert february.wall_at == datetime.fromisoformat("2027-02-28T09:30:00")  # the 31st is the month's last day


async def test_pausing_holds_occurrences_and_archiving_drops_them(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    api, _ = apis
    await user(sessions, workspace_id, "pro", "Europe/Berlin")
    campaign = await launched(api, schedule={"at": f"{DAY}T09:00:00", "repeat": {"every": "day"}})
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/pause")).status_code == 200
    assert await service.decide_due_occurrences(sessions, utc(f"{DAY}T09:00:00"), workspace_id) == 0
    assert await all_sends(sessions, campaign["id"]) == []
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/archive")).status_code == 200
    assert await occurrences(sessions, campaign["id"]) == []


async def test_entering_a_segment_enters_the_campaign_once_per_entry(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    api, segments = apis
    vip, blocked = await segment(segments, "vip"), await segment(segments, "blocked")
    campaign = await launched(
        api, segment_entry={"segment_id": vip}, audience={"exclude_segment_ids": [blocked]}, delay_seconds=3600,
    )
    assert campaign["entry"] == "segment_entry"
    welcome, excluded = await user(sessions, workspace_id, "x"), await user(sessions, workspace_id, "x")
    async with unit_of_work(sessions) as s:
        await s.execute(insert(Membership).values(
            workspace_id=workspace_id, segment_id=blocked, profile_id=excluded, user_id=None,
        ))
    cause = uuid.uuid4().hex
    changes = [
        MembershipChanged(workspace_id=workspace_id, segment_id=vip, profile_id=p, change="entered", at=datetime.now(UTC), cause_message_id=cause)
        for p in (welcome, excluded)
    ]
    other_segment = MembershipChanged(
        workspace_id=workspace_id, segment_id=blocked, profile_id=welcome, change="entered", at=datetime.now(UTC), cause_message_id=cause,
    )
    js = nc.jetstream()
    await bus.publish_contracts(js, [*changes, other_segment])
    await bus.publish_contracts(js, changes)  # a redelivery: one send still
    sent = await eventually(lambda: sends(sessions, campaign["id"]))
    assert set(sent) == {welcome}
    assert sent[welcome].status == "scheduled" and sent[welcome].trigger["name"] == "$segment_entered"
    assert sent[welcome].due_at - sent[welcome].triggered_at == timedelta(hours=1)
    assert len(await all_sends(sessions, campaign["id"])) == 1


async def test_an_api_trigger_enters_listed_users_once_per_trigger_id_with_their_properties(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    api, segments = apis
    ada, bob, free = [await user(sessions, workspace_id, plan) for plan in ("pro", "pro", "free")]
    pro = await segment(segments, "pro")  # its members are stored when it is made
    campaign = await launched(api, audience={"segment_ids": [pro]})
    assert campaign["entry"] == "api"
    body = {
        "trigger_id": "order-42", "properties": {"pick": "shoes", "shop": "Berlin"},
        "recipients": [
            {"user_id": f"u_{ada}", "properties": {"pick": "boots"}}, {"user_id": "nobody"},
            {"user_id": f"u_{bob}"}, {"user_id": f"u_{ada}"}, {"user_id": f"u_{free}"},
        ],
    }
    r = await api.post(f"/api/v1/campaigns/{campaign['id']}/trigger", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["trigger_id"], answer["entered"], answer["suppressed"], answer["already"]) == ("order-42", 2, 0, 0)
    assert [(e["index"], e["error"]) for e in answer["errors"]] == [
        (1, "no such user in this workspace"), (3, "listed twice in this call"), (4, "not in the campaign's audience"),
    ]
    sent = await sends(sessions, campaign["id"])
    assert sent[ada].trigger["properties"] == {"pick": "boots", "shop": "Berlin"}  # the recipient's over the call's
    assert sent[bob].trigger["properties"] == {"pick": "shoes", "shop": "Berlin"}
    assert sent[ada].trigger["name"] == "$api_triggered" and sent[ada].status == "scheduled"

    again = await api.post(f"/api/v1/campaigns/{campaign['id']}/trigger", json=body)
    assert (again.json()["entered"], again.json()["already"]) == (0, 2)
    everyone = await api.post(f"/api/v1/campaigns/{campaign['id']}/trigger", json={"audience": True, "trigger_id": "all"})
    assert everyone.status_code == 200, everyone.text
    assert (everyone.json()["entered"], everyone.json()["already"]) == (2, 0)
    assert len(await all_sends(sessions, campaign["id"])) == 4


async def test_api_trigger_refusals_name_the_problem(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    api, _ = apis
    triggered = await launched(api, trigger={"event": "Bought"})
    r = await api.post(f"/api/v1/campaigns/{triggered['id']}/trigger", json={"audience": True})
    assert r.status_code == 409 and "trigger" in r.json()["detail"]
    draft = await api.post("/api/v1/campaigns", json={"name": "d", "channel": "email", "message": MESSAGE})
    r = await api.post(f"/api/v1/campaigns/{draft.json()['id']}/trigger", json={"audience": True})
    assert r.status_code == 409 and "launch" in r.json()["detail"]
    for body, loc in [
        ({}, ["body", "recipients"]),
        ({"recipients": [{"user_id": "a"}] * 101}, ["body", "recipients"]),
        ({"audience": True, "trigger_id": "bad id!"}, ["body", "trigger_id"]),
        ({"audience": True, "colour": "red"}, ["body", "colour"]),
    ]:
        r = await api.post(f"/api/v1/campaigns/{draft.json()['id']}/trigger", json=body)
        assert r.status_code == 422, (body, r.text)
        assert loc in [e["loc"] for e in r.json()["detail"]], r.text
    assert (await api.post("/api/v1/campaigns/cmp_nope/trigger", json={"audience": True})).status_code == 404


async def test_re_eligibility_suppresses_a_re_entry_with_the_reason(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    api, _ = apis
    ada = await user(sessions, workspace_id, "pro")
    once = await launched(api, trigger={"event": "Bought"}, max_sends_per_user=1)
    weekly = await launched(api, reeligible_after_days=7)
    as_today = await launched(api, trigger={"event": "Bought"})
    for _ in range(2):
        await performed(sessions, nc, workspace_id, ada, "Bought")
    statuses = sorted((s.status, s.rule) for s in await all_sends(sessions, once["id"]))
    assert statuses == [("scheduled", None), ("suppressed", "reeligibility")]
    [suppressed] = [s for s in await all_sends(sessions, once["id"]) if s.status == "suppressed"]
    assert suppressed.reason == "already sent 1 time(s): max_sends_per_user is 1"
    assert [s.status for s in await all_sends(sessions, as_today["id"])] == ["scheduled", "scheduled"]  # the default

    for trigger_id in ("first", "second"):
        r = await api.post(f"/api/v1/campaigns/{weekly['id']}/trigger", json={"trigger_id": trigger_id, "recipients": [{"user_id": f"u_{ada}"}]})
        assert r.status_code == 200, r.text
    assert (r.json()["entered"], r.json()["suppressed"]) == (0, 1)
    [refused] = [s for s in await all_sends(sessions, weekly["id"]) if s.status == "suppressed"]
    assert refused.rule == "reeligibility" and "re-eligible 7 day(s) after" in (refused.reason or "")
    async with unit_of_work(sessions) as s:  # eight days on, the user is eligible again
        later = await service.trigger_campaign(
            s, workspace_id, weekly["id"],
            TriggerIn.model_validate({"trigger_id": "third", "recipients": [{"user_id": f"u_{ada}"}]}),
            now=datetime.now(UTC) + timedelta(days=8),
        )
    assert (later.entered, later.suppressed) == (1, 0)


async def test_engagement_events_trigger_only_when_allowed_and_never_their_own_campaign(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], nc: NATS, workspace_id: str
) -> None:
    api, _ = apis
    refused = await api.post(
        "/api/v1/campaigns", json={"name": "loop", "channel": "email", "message": MESSAGE, "trigger": {"event": "$message_opened"}}
    )
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "trigger"], refused.text
    follow_up = await launched(api, trigger={"event": "$message_opened", "allow_engagement_events": True})
    ada = await user(sessions, workspace_id, "pro")
    await performed(sessions, nc, workspace_id, ada, "$message_opened", campaign_id=follow_up["id"], send_id="s1")
    assert await all_sends(sessions, follow_up["id"]) == []  # its own send's open never triggers it
    await performed(sessions, nc, workspace_id, ada, "$message_opened", campaign_id="cmp_other", send_id="s2")
    assert [s.status for s in await all_sends(sessions, follow_up["id"])] == ["scheduled"]


@pytest.mark.parametrize(("fields", "loc"), [
    ({"schedule": {"at": "2020-01-01T09:00:00"}}, ["body", "schedule", "at"]),
    ({"schedule": {"at": "2020-01-01T09:00:00", "local_time": True}}, ["body", "schedule", "at"]),
    ({"schedule": {"at": f"{DAY}T09:00:00", "time_zone": "Europe/Atlantis"}}, ["body", "schedule", "time_zone"]),
    ({"schedule": {"at": f"{DAY}T09:00:00+01:00"}}, ["body", "schedule", "at"]),
    ({"schedule": {"at": f"{DAY}T09:00:00", "repeat": {"every": "day", "days": ["mon"]}}}, ["body", "schedule", "repeat"]),
    ({"schedule": {"at": f"{DAY}T09:00:00", "repeat": {"every": "week", "days": []}}}, ["body", "schedule", "repeat", "days"]),
    ({"schedule": {"at": f"{DAY}T09:00:00", "repeat": {"every": "fortnight"}}}, ["body", "schedule", "repeat", "every"]),
    ({"schedule": {"at": f"{DAY}T09:00:00"}, "trigger": {"event": "x"}}, ["body", "schedule"]),
    ({"segment_entry": {"segment_id": "seg_x"}, "trigger": {"event": "x"}}, ["body", "segment_entry"]),
    ({"schedule": {"at": f"{DAY}T09:00:00"}, "delay_seconds": 60}, ["body", "delay_seconds"]),
    ({"segment_entry": {"segment_id": "seg_nope"}}, ["body", "segment_entry", "segment_id"]),
    ({"audience": {"segment_ids": ["seg_nope"]}}, ["body", "audience", "segment_ids", 0]),
    ({"reeligible_after_days": -1}, ["body", "reeligible_after_days"]),
    ({"max_sends_per_user": 0}, ["body", "max_sends_per_user"]),
])
async def test_bad_entries_are_a_422_naming_the_field(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], fields: dict[str, Any], loc: list[Any]
) -> None:
    api, _ = apis
    r = await api.post("/api/v1/campaigns", json={"name": "bad", "channel": "email", "message": MESSAGE, **fields})
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]], r.text


async def test_an_occurrence_that_cannot_be_decided_waits_without_holding_back_the_others(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    api, _ = apis
    anyone = await user(sessions, workspace_id, "free")
    broken = await launched(api, schedule={"at": f"{DAY}T08:00:00"})
    fine = await launched(api, schedule={"at": f"{DAY}T09:00:00"})
    async with unit_of_work(sessions) as s:  # a stored schedule no rule can read (written by hand)
        await s.execute(update(Campaign).where(Campaign.id == broken["id"]).values(schedule={"at": "not a time"}))
    decided_at = utc(f"{DAY}T09:00:00")
    assert await service.decide_due_occurrences(sessions, decided_at, workspace_id) == 1
    assert set(await sends(sessions, fine["id"])) == {anyone}
    [waiting] = await occurrences(sessions, broken["id"])
    assert waiting.status == "pending" and waiting.due_at == decided_at + service.OCCURRENCE_RETRY


async def test_two_replicas_deciding_at_once_decide_each_occurrence_once(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    api, _ = apis
    everyone = {await user(sessions, workspace_id, "free") for _ in range(30)}
    campaign = await launched(api, schedule={"at": f"{DAY}T09:00:00", "repeat": {"every": "day"}})
    at = utc(f"{DAY}T09:00:00")
    entered = await asyncio.gather(*(service.decide_due_occurrences(sessions, at, workspace_id) for _ in range(2)))
    assert sorted(entered) == [0, 30]  # one replica claimed it; the other skipped the locked row
    assert set(await sends(sessions, campaign["id"])) == everyone and len(await all_sends(sessions, campaign["id"])) == 30
    assert [(o.status, o.entered) for o in await occurrences(sessions, campaign["id"])] == [("done", 30), ("pending", None)]
