"""Standard attributes from an event's context and traits: what is read, what is ignored, who wins."""

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.profiles.context import (
    COORDINATES_OUT_OF_RANGE,
    INVALID_TIME_ZONE,
    IP,
    TRAIT,
    UNKNOWN_LOCALE,
    language_of,
    observe,
    platform_of,
)
from services.profiles.domain import apply_attributes, merge_traits

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
IPHONE = {
    "app": {"name": "Shop", "version": "3.2.0", "build": "320"},
    "device": {"id": "d1", "model": "iPhone15,2", "type": "ios", "manufacturer": "Apple"},
    "os": {"name": "iOS", "version": "18.1"},
    "locale": "de-DE",
    "timezone": "Europe/Berlin",
    "ip": "85.214.132.117",
    "library": {"name": "analytics-swift", "version": "1.6.0"},
}


def values(context: dict[str, Any], traits: dict[str, Any] | None = None) -> dict[str, Any]:
    return {name: value for name, (_, value) in observe(context, traits or {}).attributes.items()}


def test_a_phone_event_says_language_zone_country_app_os_and_model() -> None:
    assert values(IPHONE) == {
        "language": "de", "time_zone": "Europe/Berlin", "country": "DE", "app_name": "Shop", "app_version": "3.2.0",
        "os_name": "iOS", "os_version": "18.1", "device_model": "iPhone15,2",
    }


@pytest.mark.parametrize(
    ("locale", "language"),
    [("de-DE", "de"), ("pt_BR", "pt"), ("en_US_POSIX", "en"), ("zh-Hant-TW", "zh"), ("FR", "fr"), ("iw-IL", "he"),
     ("fil-PH", "fil"), ("en-US.UTF-8", "en"), ("xx-YY", None), ("und", None), ("C", None), ("", None),
     ("de DE", None), ("12-34", None), ("english", None)],
)
def test_a_locale_gives_its_language_or_nothing(locale: str, language: str | None) -> None:
    assert language_of(locale) == language


def test_unusable_values_are_left_out_and_named() -> None:
    seen = observe({"locale": "klingon", "timezone": "Mars/Olympus_Mons", "location": {"latitude": 91, "longitude": 10}}, {})
    assert seen.attributes == {}
    assert sorted(seen.ignored) == sorted([UNKNOWN_LOCALE, INVALID_TIME_ZONE, COORDINATES_OUT_OF_RANGE])
    for bad in ("localtime", "../../etc/passwd", "europe/berlin", 7):
        assert observe({"timezone": bad}, {}).ignored == [INVALID_TIME_ZONE]
    assert observe({"location": {"latitude": "52.5", "longitude": 13.4}}, {}).ignored == [COORDINATES_OUT_OF_RANGE]
    assert observe({"location": {"latitude": float("nan"), "longitude": 13.4}}, {}).ignored == [COORDINATES_OUT_OF_RANGE]


def test_location_is_the_reported_coordinates() -> None:
    assert values({"location": {"latitude": 52.52, "longitude": 13.405, "city": "Berlin", "country": "de"}}) == {
        "location": {"lat": 52.52, "lon": 13.405}, "city": "Berlin", "country": "DE",
    }


def test_explicit_traits_beat_what_the_device_says() -> None:
    seen = observe(IPHONE, {"language": "fr", "time_zone": "Europe/Paris", "address": {"city": "Lyon", "country": "fr"}})
    assert {k: v for k, v in seen.attributes.items() if k in ("language", "time_zone", "city", "country")} == {
        "language": (TRAIT, "fr"), "time_zone": (TRAIT, "Europe/Paris"), "city": (TRAIT, "Lyon"), "country": (TRAIT, "FR"),
    }


def test_the_ip_says_the_country_only_for_a_phone_or_a_browser() -> None:
    assert observe({"ip": "85.214.132.117", "library": {"name": "analytics.js"}}, {}).attributes["country"] == (IP, "DE")
    # A server library's IP is the customer's backend, not where its user is.
    assert "country" not in values({"ip": "85.214.132.117", "library": {"name": "analytics-python"}})
    assert "country" not in values({"ip": "10.1.2.3", "os": {"name": "Android"}})  # private: no country
    assert "country" not in values({"ip": "not an ip", "os": {"name": "Android"}})


@pytest.mark.parametrize(
    ("context", "platform"),
    [({"device": {"type": "ios"}}, "ios"), ({"device": {"type": "Android"}}, "android"), ({"os": {"name": "iPadOS"}}, "ios"),
     ({"library": {"name": "analytics.js"}}, "web"), ({"library": {"name": "analytics-kotlin"}}, "android"),
     ({"library": {"name": "analytics-python"}}, None), ({}, None), ({"device": "ios"}, None)],
)
def test_the_platform_is_read_from_device_os_or_library(context: dict[str, Any], platform: str | None) -> None:
    assert platform_of(context) == platform


def _apply_all(order: list[tuple[dict[str, Any], dict[str, Any], datetime]]) -> tuple[dict[str, Any], dict[str, str]]:
    attributes: dict[str, Any] = {}
    times: dict[str, str] = {}
    for ctx, traits, at in order:
        apply_attributes(attributes, times, observe(ctx, traits).attributes, at)
    return attributes, times


HISTORY = [
    ({"locale": "de-DE", "timezone": "Europe/Berlin", "ip": "85.214.132.117", "os": {"name": "iOS", "version": "17.0"}}, {}, T0),
    ({"locale": "en-GB", "timezone": "Europe/London", "os": {"name": "iOS", "version": "18.1"},
      "location": {"latitude": 51.5, "longitude": -0.12}}, {}, T0 + timedelta(hours=2)),
    ({"ip": "8.8.8.8", "os": {"name": "iOS"}}, {"language": "it"}, T0 - timedelta(days=3)),
    ({"locale": "es-ES", "os": {"name": "iOS", "version": "16.0"}}, {}, T0 - timedelta(days=1)),
]


def test_attributes_converge_whatever_order_events_arrive_in() -> None:
    results = [_apply_all(list(order)) for order in itertools.permutations(HISTORY)]
    assert all(result == results[0] for result in results)
    attributes = results[0][0]
    assert attributes["language"] == "it"  # an explicit trait, although older than every locale
    assert attributes["time_zone"] == "Europe/London" and attributes["os_version"] == "18.1"
    assert attributes["country"] == "DE"  # the newer of two IPs (8.8.8.8, three days before, is US)
    assert attributes["location"]["lat"] == 51.5


def test_merging_two_profiles_folds_attributes_by_rank_and_time() -> None:
    mine, mine_times = _apply_all(HISTORY[:2])
    other, other_times = _apply_all(HISTORY[2:])
    merge_traits(mine, mine_times, other, other_times)
    assert (mine, mine_times) == _apply_all(HISTORY)


def test_the_same_event_twice_writes_nothing_new() -> None:
    attributes, times = _apply_all(HISTORY)
    changed, written = apply_attributes(attributes, times, observe(*HISTORY[1][:2]).attributes, HISTORY[1][2])
    assert changed == [] and not written
