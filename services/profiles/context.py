"""What an event's `context` says about its user and device, read once, validated, with no I/O.

The standard attributes (Braze's sense) an event implies, each with a *rank*: an explicit trait (2)
beats what the device reports in `context` (1), which beats what the IP address suggests (0). A
profile keeps, per attribute, the value of the highest rank and, within a rank, the newest event
(`domain.apply_attributes`), so profiles converge whatever order events arrive in. A value that
cannot be used (an unknown locale, a time zone `zoneinfo` does not know, coordinates off the globe)
is left out and named in `ignored`, never a reason to refuse the event.
"""

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, available_timezones

import iptocc

Platform = Literal["ios", "android", "web"]
TRAIT, DEVICE, IP = 2, 1, 0  # ranks: who says it

# Ignored-value reasons (the `reason` label of the profiles service's counter).
UNKNOWN_LOCALE = "unknown_locale"
INVALID_TIME_ZONE = "invalid_time_zone"
COORDINATES_OUT_OF_RANGE = "coordinates_out_of_range"
WRONG_TYPE = "wrong_type"

MAX_TEXT = 256  # an attribute's text; longer is not a name, a version or a model

# ISO 639-1, the language codes Braze's `language` takes.
LANGUAGES = frozenset(
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee "
    "el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is "
    "it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms "
    "mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk "
    "sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi "
    "yo za zh zu".split()
)
# Codes older Android and Java still send, and the three-letter languages phones offer with no two-letter code.
LANGUAGE_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "fil": "fil", "yue": "yue", "haw": "haw", "ceb": "ceb",
                    "ckb": "ckb", "gsw": "gsw"}
_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*(?:[.@][A-Za-z0-9_.@=-]*)?")

MOBILE_OS = {"ios": "ios", "ipados": "ios", "iphone os": "ios", "android": "android"}
LIBRARIES: dict[str, Platform] = {
    "analytics.js": "web", "analytics-next": "web", "@segment/analytics-next": "web",
    "analytics-ios": "ios", "analytics-android": "android", "analytics-kotlin": "android",
}


@dataclass(slots=True)
class Observation:
    """The standard attributes one event implies, and what it carried that could not be used."""

    platform: Platform | None = None
    # name -> (rank, value)
    attributes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


@lru_cache(maxsize=4096)
def language_of(locale: str) -> str | None:
    """The ISO 639-1 language of a locale ("de-DE", "pt_BR", "en_US_POSIX", "de") or None if unknown."""
    match = _LOCALE.fullmatch(locale.strip())
    if match is None:
        return None
    code = match.group(1).lower()
    if code in LANGUAGE_ALIASES:
        return LANGUAGE_ALIASES[code]
    return code if code in LANGUAGES else None


@cache
def _zone_names() -> frozenset[str]:
    # Read once (about 0.1 s): a set lookup per event afterwards, with no file touched for a bad name.
    return frozenset(available_timezones() - {"localtime", "Factory"})


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The IANA time zone of that name, or None if `zoneinfo` does not know it."""
    return ZoneInfo(name) if name in _zone_names() else None


def country_of_ip(ip: str) -> str | None:
    """The ISO 3166-1 country an IP address is allocated to (offline; None for private or unknown ones)."""
    try:
        return iptocc.country_code(ip)
    except (ValueError, TypeError):
        return None


def platform_of(context: dict[str, Any]) -> Platform | None:
    """ios, android or web, from the device type, else the OS name, else the library; None for a server."""
    device, os_, library = context.get("device"), context.get("os"), context.get("library")
    if isinstance(device, dict) and isinstance(kind := device.get("type"), str):
        if (found := MOBILE_OS.get(kind.lower())) is not None:
            return found  # type: ignore[return-value]
    if isinstance(os_, dict) and isinstance(name := os_.get("name"), str):
        if (found := MOBILE_OS.get(name.lower())) is not None:
            return found  # type: ignore[return-value]
    if isinstance(library, dict) and isinstance(name := library.get("name"), str):
        return LIBRARIES.get(name.lower())
    return None


def _text(value: Any) -> str | None:
    """A usable attribute text: a non-empty string (numbers as text), at most MAX_TEXT long."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_TEXT else None


def _country(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    return text.upper() if len(text) == 2 and text.isalpha() else text


def _coordinate(value: Any, bound: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if -bound <= value <= bound else None


def observe(context: dict[str, Any], traits: dict[str, Any]) -> Observation:
    """The standard attributes an event implies: traits (an identify's) first, then context, then the IP."""
    seen = Observation(platform=platform_of(context))
    attrs, ignored = seen.attributes, seen.ignored

    def put(name: str, rank: int, value: Any) -> None:
        if name not in attrs or attrs[name][0] < rank:
            attrs[name] = (rank, value)

    def language(raw: Any, rank: int) -> None:
        if raw is None:
            return
        found = language_of(raw) if isinstance(raw, str) else None
        if found is None:
            ignored.append(UNKNOWN_LOCALE)
        else:
            put("language", rank, found)

    def time_zone(raw: Any, rank: int) -> None:
        if raw is None:
            return
        if isinstance(raw, str) and zone(raw) is not None:
            put("time_zone", rank, raw)
        else:
            ignored.append(INVALID_TIME_ZONE)

    def text(name: str, raw: Any, rank: int, read: Any = _text) -> None:
        if raw is None:
            return
        value = read(raw)
        if value is None:
            ignored.append(WRONG_TYPE)
        else:
            put(name, rank, value)

    if traits:
        language(traits.get("language"), TRAIT)
        time_zone(traits.get("time_zone", traits.get("timezone")), TRAIT)
        address = traits.get("address")
        address = address if isinstance(address, dict) else {}
        text("country", traits.get("country", address.get("country")), TRAIT, _country)
        text("city", traits.get("city", address.get("city")), TRAIT)
    if not context:
        return seen

    language(context.get("locale"), DEVICE)
    time_zone(context.get("timezone"), DEVICE)
    location = context.get("location")
    if isinstance(location, dict):
        text("country", location.get("country"), DEVICE, _country)
        text("city", location.get("city"), DEVICE)
        lat, lon = location.get("latitude"), location.get("longitude")
        if lat is not None or lon is not None:
            la, lo = _coordinate(lat, 90.0), _coordinate(lon, 180.0)
            if la is None or lo is None:
                ignored.append(COORDINATES_OUT_OF_RANGE)
            else:
                # Its time is the attribute's write time (shown as `at`): the same place again is no change.
                put("location", DEVICE, {"lat": la, "lon": lo})
    for part, fields in (("app", (("app_name", "name"), ("app_version", "version"))),
                         ("os", (("os_name", "name"), ("os_version", "version"))),
                         ("device", (("device_model", "model"),))):
        section = context.get(part)
        if isinstance(section, dict):
            for name, key in fields:
                text(name, section.get(key), DEVICE)
    # The IP says where the *sender* is: a phone or a browser, not a server library calling for its users.
    ip = context.get("ip")
    if seen.platform is not None and isinstance(ip, str) and "country" not in attrs:
        if (country := country_of_ip(ip)) is not None:
            put("country", IP, country)
    return seen


def stamp(rank: int, at: datetime) -> str:
    """An attribute's write time as text that sorts by rank, then by time (fixed width, UTC)."""
    return f"{rank}{at.astimezone(UTC).isoformat(timespec='microseconds')}"
