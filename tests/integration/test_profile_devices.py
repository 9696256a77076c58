"""Devices on real PostgreSQL: a phone and its push token follow whoever uses it, whatever the order."""

from datetime import timedelta
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from services.profiles.app import build
from services.profiles.config import get_settings
from tests.integration.helpers import running
from tests.integration.test_profile_updates import T0, apply, event, profile

H = timedelta(hours=1)


def phone(device_id: str, token: str | None = None, version: str = "3.2.0", os: str = "18.1") -> dict[str, Any]:
    device: dict[str, Any] = {"id": device_id, "model": "iPhone15,2", "type": "ios"}
    if token:
        device["token"] = token
    return {"app": {"name": "Shop", "version": version}, "device": device, "os": {"name": "iOS", "version": os},
            "locale": "de-DE", "timezone": "Europe/Berlin"}


def history(ws: str) -> list[Any]:
    """Ada's phone; Bob logs in on it later; Ada's new phone; a late event of Ada's from the old phone."""
    return [
        event(ws, user_id="ada", context=phone("d1", "tok-1"), timestamp=T0),
        event(ws, user_id="bob", context=phone("d1", "tok-1", version="3.3.0"), timestamp=T0 + 2 * H),
        event(ws, user_id="ada", context=phone("d2", "tok-2", os="18.2"), timestamp=T0 + 3 * H),
        event(ws, user_id="ada", context=phone("d1", "tok-1"), timestamp=T0 + H),
        event(ws, type="identify", user_id="cy", traits={"push_tokens": [{"app_id": "a", "token": "tok-9", "device_id": "d9"}]},
              timestamp=T0),
    ]


def devices(p: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {d["device_id"]: (d["push_token"], d["push_enabled"], d["app_version"], d["last_seen"]) for d in p["devices"]}


async def test_a_phone_follows_whoever_logged_in_last_whatever_the_order(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    one_by_one, batched = workspace_id, f"{workspace_id}b"
    for e in history(one_by_one):
        await apply(sessions, js, e)
    await apply(sessions, js, *reversed(history(batched)))
    for ws in (one_by_one, batched):
        ada, bob, cy = [await profile(sessions, ws, u) for u in ("ada", "bob", "cy")]
        assert devices(bob) == {"d1": ("tok-1", True, "3.3.0", T0 + 2 * H)}
        assert devices(ada) == {"d2": ("tok-2", True, "3.2.0", T0 + 3 * H)}
        assert devices(cy)["d9"][:2] == ("tok-9", True)
    assert (await profile(sessions, one_by_one, "ada"))["devices"] == [{
        "device_id": "d2", "platform": "ios", "app": "Shop", "app_version": "3.2.0", "os_version": "18.2",
        "model": "iPhone15,2", "locale": "de-DE", "time_zone": "Europe/Berlin", "push_token": "tok-2",
        "push_enabled": True, "last_seen": T0 + 3 * H,
    }]


async def test_a_token_on_a_new_device_id_leaves_the_old_device(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, user_id="ada", context=phone("d1", "tok-1"), timestamp=T0))
    # A reinstall gives the phone a new device id; Bob logs in on it and the token is his now.
    again = event(workspace_id, user_id="bob", context=phone("d1-reinstalled", "tok-1"), timestamp=T0 + H)
    await apply(sessions, js, again)
    await apply(sessions, js, again)  # a redelivery changes nothing
    assert devices(await profile(sessions, workspace_id, "ada")) == {"d1": (None, False, "3.2.0", T0)}
    assert devices(await profile(sessions, workspace_id, "bob")) == {"d1-reinstalled": ("tok-1", True, "3.2.0", T0 + H)}


async def test_an_anonymous_phone_joins_the_user_it_logs_in_as(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, type="identify", user_id="dee", traits={"name": "Dee"}))
    await apply(sessions, js, event(workspace_id, anonymous_id="anon-dee", context=phone("d5", "tok-5")))
    await apply(sessions, js, event(workspace_id, type="identify", user_id="dee", anonymous_id="anon-dee", timestamp=T0 + H))
    assert list(devices(await profile(sessions, workspace_id, "dee"))) == ["d5"]


async def test_a_dead_token_is_off_until_the_app_registers_it_again(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, user_id="eve", context=phone("d7", "tok-7"), timestamp=T0))
    async with running(build, get_settings, workspace_id) as client:
        dead = await client.post("/api/v1/devices/deactivate", json={"token": "tok-7"})
        assert dead.status_code == 200, dead.text
        eve = (await profile(sessions, workspace_id, "eve"))["profile_id"]
        assert dead.json() == {"deactivated": True, "profile_id": eve, "device_id": "d7"}
        assert (await client.post("/api/v1/devices/deactivate", json={"token": "nobody's"})).json()["deactivated"] is False

        # The SDK keeps sending the dead token: it stays off.
        await apply(sessions, js, event(workspace_id, user_id="eve", context=phone("d7", "tok-7"), timestamp=T0 + H))
        assert devices(await profile(sessions, workspace_id, "eve"))["d7"][:2] == ("tok-7", False)

        registered = await client.post("/api/v1/users/eve/devices", json={
            "device_id": "d7", "platform": "ios", "push_token": "tok-7", "time_zone": "Europe/Paris"})
        assert registered.status_code == 200, registered.text
        assert registered.json()["push_enabled"] is True and registered.json()["time_zone"] == "Europe/Paris"
        body = (await client.get("/api/v1/users/eve")).json()
        assert [(d["device_id"], d["push_enabled"]) for d in body["devices"]] == [("d7", True)]

        # A token registered on another user's device moves there.
        await apply(sessions, js, event(workspace_id, type="identify", user_id="fay", traits={"name": "Fay"}))
        moved = await client.post("/api/v1/users/fay/devices", json={"device_id": "d8", "platform": "android", "push_token": "tok-7"})
        assert moved.status_code == 200 and moved.json()["push_token"] == "tok-7"
        assert devices(await profile(sessions, workspace_id, "eve"))["d7"][:2] == (None, False)

        assert (await client.post("/api/v1/users/nobody/devices", json={"device_id": "x", "platform": "ios"})).status_code == 404
        bad = await client.post("/api/v1/users/eve/devices", json={"device_id": "x", "platform": "ios", "time_zone": "Mars/Base"})
        assert bad.status_code == 400, bad.text
        assert (await client.post("/api/v1/users/eve/devices", json={"device_id": "x", "platform": "symbian"})).status_code == 422


async def test_a_change_names_the_parts_it_wrote_and_a_registration_announces_the_devices(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    from kernel.db import unit_of_work
    from services.profiles import service

    first = event(workspace_id, user_id="gus", event="Application Opened", context=phone("d11"), timestamp=T0)
    same_phone = event(workspace_id, user_id="gus", event="Product Viewed", context=phone("d11"), timestamp=T0)
    server_side = event(workspace_id, user_id="gus", event="Order Completed", properties={"revenue": 5}, timestamp=T0 - H)
    async with unit_of_work(sessions) as s:
        applied = await service.apply_events(s, [first, same_phone, server_side])
    assert [a.changed.changed_parts for a in applied] == [
        ["devices", "sessions"],  # new profile and device; a phone's session starts (first/last seen: its creation)
        [],  # the same phone at the same time: nothing the segmenter reads moved
        ["first_seen", "purchases"],  # an earlier order from a back end
    ]

    changes = await nc.jetstream().subscribe(f"profiles.changed.{workspace_id}", ordered_consumer=True)
    async with running(build, get_settings, workspace_id) as client:
        r = await client.post("/api/v1/users/gus/devices", json={"device_id": "d12", "platform": "android", "push_token": "t12"})
        assert r.status_code == 200, r.text
    announced = orjson.loads((await changes.next_msg(timeout=5)).data)
    assert announced["changed_parts"] == ["devices"] and announced["user_id"] == "gus"
    assert announced["profile_id"] == (await profile(sessions, workspace_id, "gus"))["profile_id"]
