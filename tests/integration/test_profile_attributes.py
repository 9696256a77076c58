"""Standard attributes on real PostgreSQL: read from context, ranked, order-independent, in the profile JSON."""

import random
from datetime import timedelta
from typing import Any

from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from services.profiles.app import build
from services.profiles.config import get_settings
from tests.integration.helpers import running
from tests.integration.test_profile_updates import T0, apply, event, profile

PHONE = {
    "app": {"name": "Shop", "version": "3.2.0"},
    "device": {"id": "dev-1", "model": "iPhone15,2", "type": "ios"},
    "os": {"name": "iOS", "version": "18.1"},
    "locale": "de-DE",
    "timezone": "Europe/Berlin",
    "ip": "85.214.132.117",
    "location": {"latitude": 52.52, "longitude": 13.405},
    "library": {"name": "analytics-swift"},
}


def history(ws: str) -> list[Any]:
    """A phone user's week: an update, a trip, an explicit language, a late event from before all of it."""
    travel = {**PHONE, "locale": "en-GB", "timezone": "Europe/London", "location": {"latitude": 51.5, "longitude": -0.12}}
    return [
        event(ws, user_id="ada", context=PHONE, timestamp=T0),
        event(ws, user_id="ada", context={**PHONE, "app": {"name": "Shop", "version": "3.3.0"}}, timestamp=T0 + timedelta(hours=1)),
        event(ws, user_id="ada", context=travel, timestamp=T0 + timedelta(days=2)),
        event(ws, type="identify", user_id="ada", traits={"language": "fr", "city": "Paris"}, timestamp=T0 - timedelta(days=9)),
        event(ws, user_id="ada", context={**PHONE, "app": {"name": "Shop", "version": "2.0.0"}, "timezone": "Asia/Tokyo"},
              timestamp=T0 - timedelta(days=30)),
    ]


async def test_a_phone_s_events_become_the_profile_s_attributes(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    await apply(sessions, nc.jetstream(), *history(workspace_id))
    seen = await profile(sessions, workspace_id, "ada")
    assert seen["attributes"] == {
        "language": "fr",  # the explicit trait beats every locale, however new
        "city": "Paris",
        "time_zone": "Europe/London",
        "country": "DE",
        "location": {"lat": 51.5, "lon": -0.12, "at": (T0 + timedelta(days=2)).isoformat()},
        "app_name": "Shop",
        "app_version": "3.2.0",  # the trip's event still runs 3.2.0; the late 2.0.0 loses to it
        "os_name": "iOS",
        "os_version": "18.1",
        "device_model": "iPhone15,2",
    }
    async with running(build, get_settings, workspace_id) as client:
        body = (await client.get("/api/v1/users/ada")).json()
    assert set(body) >= {"user_id", "profile_id", "anonymous_ids", "aliases", "traits", "attributes", "computed"}
    assert body["attributes"]["time_zone"] == "Europe/London" and body["attributes"]["location"]["lat"] == 51.5


async def test_attributes_converge_whatever_order_and_batching(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    one_by_one, shuffled, batched = workspace_id, f"{workspace_id}s", f"{workspace_id}b"
    for e in history(one_by_one):
        await apply(sessions, js, e)
    events = history(shuffled)
    random.Random(7).shuffle(events)
    for e in events:
        await apply(sessions, js, e)
    await apply(sessions, js, *reversed(history(batched)))
    expected = (await profile(sessions, one_by_one, "ada"))["attributes"]
    assert (await profile(sessions, shuffled, "ada"))["attributes"] == expected
    assert (await profile(sessions, batched, "ada"))["attributes"] == expected


async def test_a_merge_folds_the_anonymous_attributes_in(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, type="identify", user_id="bo", traits={"country": "NL"}))
    await apply(sessions, js, event(workspace_id, anonymous_id="anon-bo", context=PHONE, timestamp=T0 + timedelta(hours=1)))
    await apply(sessions, js, event(workspace_id, type="identify", user_id="bo", anonymous_id="anon-bo"))
    merged = (await profile(sessions, workspace_id, "bo"))["attributes"]
    assert merged["country"] == "NL" and merged["language"] == "de" and merged["device_model"] == "iPhone15,2"


def _ignored(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_profiles_ignored_values_total", {"reason": reason}) or 0.0


async def test_bad_values_are_counted_and_the_event_still_lands_once(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    before = {r: _ignored(r) for r in ("invalid_time_zone", "unknown_locale", "coordinates_out_of_range")}
    bad = event(workspace_id, user_id="cy", event="Opened",
                context={"timezone": "Mars/Base", "locale": "xx-XX", "location": {"latitude": 123, "longitude": 0},
                         "os": {"name": "Android", "version": "15"}})
    await apply(sessions, js, bad)
    await apply(sessions, js, bad)  # a redelivery: applied, counted and ignored once
    seen = await profile(sessions, workspace_id, "cy")
    assert seen["attributes"] == {"os_name": "Android", "os_version": "15"}
    assert seen["computed"]["event_counts"] == {"Opened": 1}
    assert {r: _ignored(r) - n for r, n in before.items()} == {
        "invalid_time_zone": 1, "unknown_locale": 1, "coordinates_out_of_range": 1,
    }


async def test_the_change_names_the_attributes_whose_value_changed(sessions, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    from kernel.db import unit_of_work
    from services.profiles import service

    first = event(workspace_id, user_id="di", context=PHONE, timestamp=T0)
    same = event(workspace_id, user_id="di", context=PHONE, timestamp=T0 + timedelta(hours=1))
    moved = event(workspace_id, user_id="di", context={**PHONE, "timezone": "Europe/Vienna"}, timestamp=T0 + timedelta(hours=2))
    async with unit_of_work(sessions) as s:
        applied = await service.apply_events(s, [first, same, moved])
    assert applied[0].changed.changed_attributes == sorted(
        ["language", "time_zone", "country", "location", "app_name", "app_version", "os_name", "os_version", "device_model"]
    )
    assert applied[1].changed.changed_attributes == []  # the same values again (their times moved)
    assert applied[2].changed.changed_attributes == ["time_zone"]


async def test_a_profile_query_answers_the_parts_it_asks_for(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    from kernel import bus
    from kernel.contracts import PROFILE_QUERY_SUBJECT, ProfileQuery, ProfileSnapshot

    await apply(sessions, nc.jetstream(), event(workspace_id, user_id="eve", event="Application Opened", context=PHONE),
                event(workspace_id, type="identify", user_id="eve", traits={"plan": "pro"}, timestamp=T0 + timedelta(hours=1)))
    profile_id = (await profile(sessions, workspace_id, "eve"))["profile_id"]
    async with running(build, get_settings, workspace_id):
        async def ask(**parts: Any) -> ProfileSnapshot:
            query = ProfileQuery(workspace_id=workspace_id, profile_id=profile_id, **parts)
            return await bus.request(nc, PROFILE_QUERY_SUBJECT, query, ProfileSnapshot)

        default = await ask()
        everything = await ask(parts=["traits", "attributes", "devices", "computed", "subscriptions"])
        devices_only = await ask(parts=["devices"])
    assert default.traits == {"plan": "pro"}  # what a query without parts always had: cheap to read
    assert default.attributes.language is None and default.devices == [] and default.computed.event_counts == {}
    assert everything.attributes.language == "de" and everything.attributes.location is not None
    assert [d.device_id for d in everything.devices] == ["dev-1"] and everything.devices[0].platform == "ios"
    assert everything.computed.event_counts == {"Application Opened": 1, "identify": 1}
    assert everything.computed.sessions.count == 1 and everything.computed.purchases.currency == "USD"
    assert devices_only.traits == {} and [d.device_id for d in devices_only.devices] == ["dev-1"]
