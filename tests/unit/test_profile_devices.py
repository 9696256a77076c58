"""Device rules: what an event says about its device, whose device it is, and who holds a push token."""

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from services.profiles.devices import PUSH_TOKEN_WITHOUT_DEVICE, DeviceReport, Devices, reports

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
IPHONE = {
    "app": {"name": "Shop", "version": "3.2.0"},
    "device": {"id": "d1", "model": "iPhone15,2", "type": "ios", "token": "tok-1"},
    "os": {"name": "iOS", "version": "18.1"},
    "locale": "de-DE",
    "timezone": "Europe/Berlin",
}


def test_an_event_with_a_device_id_reports_the_device() -> None:
    found, ignored = reports(IPHONE, {}, "ios")
    assert ignored == []
    assert found == [DeviceReport("d1", {
        "platform": "ios", "app": "Shop", "app_version": "3.2.0", "os_version": "18.1", "model": "iPhone15,2",
        "locale": "de-DE", "time_zone": "Europe/Berlin", "push_token": "tok-1",
    })]


def test_no_device_id_no_device() -> None:
    assert reports({"device": {"model": "Pixel 9", "token": "t"}, "os": {"name": "Android"}}, {}, "android") == ([], [])
    assert reports({"library": {"name": "analytics.js"}, "userAgent": "Mozilla/5.0"}, {}, "web") == ([], [])


def test_braze_shaped_push_tokens_are_reports_when_they_name_a_device() -> None:
    found, ignored = reports({}, {"push_tokens": [
        {"app_id": "app_1", "token": "tok-9", "device_id": "d9"},
        {"app_id": "app_1", "token": "tok-orphan"},
        {"token": 12},
        "nonsense",
    ]}, None)
    assert found == [DeviceReport("d9", {"push_token": "tok-9"})]
    assert ignored == [PUSH_TOKEN_WITHOUT_DEVICE, "wrong_type", "wrong_type"]


Step = tuple[str, str, dict[str, Any], datetime]  # device, profile, fields, time


def _play(steps: list[Step] | tuple[Step, ...]) -> dict[str, tuple[Any, ...]]:
    devices = Devices([])
    for device_id, profile_id, fields, at in steps:
        devices.apply(DeviceReport(device_id, fields), profile_id, at)
    return {
        d.device_id: (d.profile_id, d.push_token, d.push_enabled, d.app_version, d.last_seen, d.times.get("push_token"))
        for d in devices.by_id.values()
    }


H = timedelta(hours=1)
PHONE_CHANGES_HANDS: list[Step] = [
    ("d1", "ada", {"platform": "ios", "app_version": "3.2.0", "push_token": "tok-1"}, T0),
    ("d1", "bob", {"app_version": "3.3.0", "push_token": "tok-1"}, T0 + 2 * H),  # Bob logs in on Ada's phone
    ("d1", "ada", {"app_version": "3.2.1"}, T0 + H),  # Ada's late event from before
    ("d2", "ada", {"platform": "ios", "push_token": "tok-2"}, T0 + H),
    ("d2", "ada", {"push_token": "tok-3"}, T0 + 3 * H),  # the token rotates
    ("d3", "cy", {"platform": "android", "push_token": "tok-2"}, T0 + 2 * H),  # a reinstall took tok-2 over
]


def test_devices_and_tokens_converge_whatever_order_reports_arrive_in() -> None:
    results = {str(order): _play(order) for order in itertools.permutations(PHONE_CHANGES_HANDS)}
    first = next(iter(results.values()))
    assert all(result == first for result in results.values())
    assert first["d1"][:4] == ("bob", "tok-1", True, "3.3.0")
    assert first["d2"][:3] == ("ada", "tok-3", True)
    assert first["d3"][:3] == ("cy", "tok-2", True)


def test_a_token_claimed_by_another_device_leaves_the_first() -> None:
    result = _play([("d1", "ada", {"push_token": "t"}, T0), ("d9", "bob", {"push_token": "t"}, T0 + H)])
    assert result["d1"][1:3] == (None, False) and result["d9"][:3] == ("bob", "t", True)


def test_a_dead_token_stays_off_until_registered_again() -> None:
    devices = Devices([])
    devices.apply(DeviceReport("d1", {"push_token": "t"}), "ada", T0)
    devices.deactivate("t")
    devices.apply(DeviceReport("d1", {"push_token": "t"}), "ada", T0 + H)  # the SDK keeps sending it
    assert devices.by_id["d1"].push_token == "t" and not devices.by_id["d1"].push_enabled
    devices.apply(DeviceReport("d1", {"push_token": "t2"}), "ada", T0 + 2 * H)  # a new token is live
    assert devices.by_id["d1"].push_enabled
    devices.deactivate("t2")
    devices.apply(DeviceReport("d1", {"push_token": "t2"}, register=True), "ada", T0 + 3 * H)
    assert devices.by_id["d1"].push_enabled
    assert devices.deactivate("unknown") is None


def test_a_merge_moves_the_devices_to_the_survivor() -> None:
    devices = Devices([])
    devices.apply(DeviceReport("d1", {}), "anon", T0)
    devices.move("anon", "ada")
    assert devices.by_id["d1"].profile_id == "ada"
