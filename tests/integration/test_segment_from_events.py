"""From what a phone sends to who is in which segment: events applied by the profiles service, the changes it
announces re-evaluated by the segmenter, on real PostgreSQL. Attributes, devices, location, sessions, time
of use and last seen all come from Segment-spec context, as a mobile SDK sends it."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import Event, MembershipChanged
from kernel.db import unit_of_work
from services.profiles import service as profiles
from services.segmenter import service as segmenter
from services.segmenter.models import Membership

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def opened(workspace_id: str, at: datetime, version: str) -> Event:
    """An `Application Opened` from Ada's iPhone, with the context analytics-swift sends."""
    context: dict[str, Any] = {
        "app": {"name": "Shop", "version": version, "build": "1"},
        "device": {"id": "ada-iphone", "type": "ios", "model": "iPhone15,2", "token": "apns-token-ada"},
        "os": {"name": "iOS", "version": "18.1"},
        "locale": "de-DE", "timezone": "Europe/Berlin",
        "location": {"country": "DE", "city": "Berlin", "latitude": 52.52, "longitude": 13.405},
        "library": {"name": "analytics-swift", "version": "1.5.0"},
    }
    return Event.model_validate({
        "workspace_id": workspace_id, "message_id": uuid.uuid4().hex, "type": "track", "event": "Application Opened",
        "user_id": "ada", "context": context, "timestamp": at, "received_at": at,
    })


async def through(sessions: async_sessionmaker[AsyncSession], event: Event) -> list[MembershipChanged]:
    """The event applied to its profile, then the change it announced re-evaluated, each in its own transaction."""
    async with unit_of_work(sessions) as s:
        applied = await profiles.apply_events(s, [event])
    async with unit_of_work(sessions) as s:
        return await segmenter.reevaluate_many(s, [a.changed for a in applied])


async def test_what_a_phone_sends_puts_its_user_in_segments_and_moves_them_out(
    sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    local = first.astimezone(BERLIN)
    trees = {
        "germany": {"attribute": "country", "op": "eq", "value": "DE"},
        "old iOS app, push on": {"device": "ios", "where": [{"property": "push_enabled", "op": "eq", "value": True},
                                                            {"property": "app_version", "op": "version_lt", "value": "3.10"}]},
        "around Berlin": {"near": {"lat": 52.5, "lon": 13.4, "km": 50}},
        "has a session": {"computed": "sessions.count", "op": "gte", "value": 1},
        "active at this hour": {"active": {"days": [WEEKDAYS[local.weekday()]],
                                           "hours": {"from": local.hour, "to": local.hour + 1}}},
        "seen this week": {"computed": "last_seen", "op": "within_last_days", "value": 7},
        "speaks German": {"attribute": "language", "op": "eq", "value": "de"},
    }
    async with unit_of_work(sessions) as s:
        made = {name: await segmenter.create_segment(s, workspace_id, name, tree) for name, tree in trees.items()}
    names = {segment.id: name for name, segment in made.items()}

    changes = await through(sessions, opened(workspace_id, first, "3.9.0"))
    assert sorted((names[c.segment_id], c.change) for c in changes) == sorted((name, "entered") for name in trees)

    # The app is updated: the device no longer runs an old version, and nothing else moves.
    changes = await through(sessions, opened(workspace_id, first + timedelta(minutes=30), "3.10.1"))
    assert [(names[c.segment_id], c.change) for c in changes] == [("old iOS app, push on", "exited")]
    async with unit_of_work(sessions) as s:
        stored = set(await s.scalars(select(Membership.segment_id).where(Membership.workspace_id == workspace_id)))
    assert {names[i] for i in stored} == set(trees) - {"old iOS app, push on"}
