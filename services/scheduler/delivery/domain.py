"""The delivery policy as pure rules, in the order every send meets them when it is released.

subscription and consent → global control group → frequency caps → delivery window (the user's time
zone; per-user quiet hours override it) → rate limit → render → provider (DESIGN.md). The scheduler
applies global control, caps and the window here, the rate limit per campaign and batch
(`rate_overflow_due`), and leaves subscription and render to the dispatcher, which holds the
subscription states (contract C1) and the templates' data.

Every user has a stable bucket 0–9999 (`bucket`). The global control group is the bottom range of it
(raising the percentage keeps everyone who was held out); a campaign's control group and variants are
ranges of the bucket turned by an offset that depends on the campaign (`position`), so a user is not
always in the first arm of every experiment, and a campaign's proportions are exact.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from services.scheduler.results import domain as results_rules

BUCKETS = 10_000
Rule = Literal[
    "subscription", "global_control", "frequency_cap", "delivery_window", "control", "rate_limit", "render",
    "reeligibility",
]
GLOBAL_CONTROL = "global_control"  # the variant recorded for a user in the workspace holdout
CONTROL = "control"  # the variant recorded for a user in a campaign's control group
ANY_CHANNEL = "any"
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Outside = Literal["wait", "drop"]


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def bucket(workspace_id: str, profile_id: str) -> int:
    """The user's stable random bucket 0–9999: the same for the same profile, whatever the campaign or replica."""
    return _hash64(f"bucket\x1f{workspace_id}\x1f{profile_id}") % BUCKETS


def position(user_bucket: int, campaign_id: str) -> int:
    """Where the user falls in a campaign's experiment: the bucket turned by an offset that depends on the campaign."""
    return (user_bucket + _hash64(f"campaign\x1f{campaign_id}") % BUCKETS) % BUCKETS


def lock_key(workspace_id: str, profile_id: str) -> int:
    """A signed 64-bit key for the (workspace, profile) advisory lock that serializes cap checks."""
    return _hash64(f"cap\x1f{workspace_id}\x1f{profile_id}") - 2**63


def in_global_control(user_bucket: int, percent: int) -> bool:
    """The workspace holdout: buckets [0, percent × 100)."""
    return user_bucket < percent * BUCKETS // 100


def arm(user_position: int, control_percent: int, variants: Sequence[dict[str, Any]]) -> str | None:
    """The experiment arm of a user at `user_position`: "control", a variant's name, or None (no variants: the message).

    Control takes positions [0, control × 100); each variant then takes weight × 100 positions in order.
    The weights and control add up to 100 (the campaign's schema checks it), so every position has an arm.
    """
    edge = control_percent * BUCKETS // 100
    if user_position < edge:
        return CONTROL
    for variant in variants:
        edge += int(variant["weight"]) * BUCKETS // 100
        if user_position < edge:
            return str(variant["name"])
    return str(variants[-1]["name"]) if variants else None


# --- frequency caps -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cap:
    """At most `max` sends on `channel` ("any": every channel together) per user in any `per_days` days."""

    channel: str
    max: int
    per_days: int


@dataclass(frozen=True)
class Sent:
    """A send that went out and counts toward caps (a row of the cap ledger)."""

    channel: str
    at: datetime


def cap_reached(caps: Iterable[Cap], channel: str, history: Iterable[Sent], now: datetime) -> Cap | None:
    """The first cap that one more send on `channel` would exceed, given what the user was sent, or None."""
    sent = list(history)
    for cap in caps:
        if cap.channel not in (channel, ANY_CHANNEL):
            continue
        since = now - timedelta(days=cap.per_days)
        if sum(1 for s in sent if s.at > since and cap.channel in (s.channel, ANY_CHANNEL)) >= cap.max:
            return cap
    return None


def longest_cap_days(caps: Iterable[Cap]) -> int:
    """How far back the ledger must be read for these caps (0: no caps)."""
    return max((cap.per_days for cap in caps), default=0)


# --- delivery windows -------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Open from `start` to `end` (local wall clock) on each of `days` (0 = Monday); an `end` before `start`
    closes the next morning (an overnight window belongs to the day it opens)."""

    start: time
    end: time
    days: frozenset[int] = field(default_factory=lambda: frozenset(range(7)))

    def is_open(self, wall: datetime) -> bool:
        """Whether the window is open at this local wall-clock time."""
        clock = wall.time()
        today = wall.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= clock < self.end
        return (today in self.days and clock >= self.start) or ((today - 1) % 7 in self.days and clock < self.end)

    def next_opening(self, wall: datetime) -> datetime:
        """The next local wall-clock time the window opens after `wall` (a window has at least one day)."""
        for ahead in range(8):
            day: date = wall.date() + timedelta(days=ahead)
            opening = datetime.combine(day, self.start)
            if day.weekday() in self.days and opening > wall:
                return opening
        raise ValueError("a window needs at least one day")


def parse_clock(text: str) -> time:
    """"HH:MM" (00:00–23:59) as a time; ValueError otherwise."""
    hours, _, minutes = text.partition(":")
    if len(hours) != 2 or len(minutes) != 2 or not (hours + minutes).isdigit():
        raise ValueError(f"{text!r} is not HH:MM")
    return time(int(hours), int(minutes))


def window_of(spec: dict[str, Any]) -> Window:
    """A campaign's stored window ({"start", "end", "days"}) as a Window."""
    days = spec.get("days") or list(DAYS)
    return Window(parse_clock(spec["start"]), parse_clock(spec["end"]), frozenset(DAYS.index(d) for d in days))


def quiet_hours_window(value: Any) -> Window | None:
    """The hours a user may be messaged, from their quiet-hours attribute, or None when it holds nothing usable.

    The attribute is "22:00-07:00" or {"start": "22:00", "end": "07:00"}: no messages from start to end,
    every day. What is left is the window [end, start) every day.
    """
    if isinstance(value, str):
        start, _, end = value.partition("-")
    elif isinstance(value, dict) and isinstance(value.get("start"), str) and isinstance(value.get("end"), str):
        start, end = value["start"], value["end"]
    else:
        return None
    try:
        quiet_start, quiet_end = parse_clock(start.strip()), parse_clock(end.strip())
    except ValueError:
        return None
    return None if quiet_start == quiet_end else Window(quiet_end, quiet_start)


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones() - {"localtime", "Factory"})


def zone_named(name: str | None) -> ZoneInfo | None:
    """The IANA time zone of that name, or None when there is none by that name."""
    return ZoneInfo(name) if name and name in _zone_names() else None


def local_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time in `zone` as UTC (a time skipped by a DST change is read with the offset before it)."""
    return wall.replace(tzinfo=zone).astimezone(UTC)


# --- locales -------------------------------------------------------------------------------


def locale_tag(language: str | None, device_locale: str | None) -> str | None:
    """The user's locale: the newest device's locale ("pt_BR" → "pt-BR") when it is in the profile's language
    (or the profile has none), else the profile's language."""
    device = device_locale.replace("_", "-").strip() if device_locale else None
    if device and (language is None or device.split("-")[0].lower() == language.lower()):
        return device
    return language


def pick_locale(locales: dict[str, Any] | None, tag: str | None) -> str | None:
    """The key of `locales` for a user's locale tag, by the fallback chain pt-BR → pt (then the default: None).

    Matching ignores case and `_`/`-`; a tag's subtags are dropped one at a time from the end.
    """
    if not locales or not tag:
        return None
    keys = {key.replace("_", "-").lower(): key for key in locales}
    parts = tag.replace("_", "-").lower().split("-")
    while parts:
        if (key := keys.get("-".join(parts))) is not None:
            return key
        parts.pop()
    return None


# --- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """A workspace's delivery rules (PUT /api/v1/settings/delivery)."""

    frequency_caps: tuple[Cap, ...] = ()
    global_control_percent: int = 0
    default_time_zone: str = "UTC"
    quiet_hours_attribute: str | None = None


@dataclass(frozen=True)
class CampaignRules:
    """What of a campaign the policy reads."""

    id: str
    channel: str
    message: dict[str, Any]
    transactional: bool = False
    window: Window | None = None
    outside: Outside = "wait"
    rate_per_minute: int | None = None
    variants: tuple[dict[str, Any], ...] = ()
    control_percent: int = 0
    locales: dict[str, Any] | None = None
    winner: str | None = None  # the experiment's decided winner (services/scheduler/results): every variant user gets it


@dataclass(frozen=True)
class Recipient:
    """What the policy reads of a user at release (set-based from profiles' published views)."""

    bucket: int
    zone: ZoneInfo
    locale: str | None = None
    quiet_hours: Any = None
    history: tuple[Sent, ...] = ()


@dataclass(frozen=True)
class Go:
    """The send goes out (after the rate limit) with this content; `locale` is the locales key used, if any."""

    variant: str | None
    message: dict[str, Any]
    locale: str | None = None


@dataclass(frozen=True)
class Suppress:
    """A rule stopped the send for good."""

    rule: Rule
    reason: str
    variant: str | None


@dataclass(frozen=True)
class Wait:
    """A rule holds the send until `until` (UTC); it is decided again then."""

    rule: Rule
    reason: str
    until: datetime
    variant: str | None


Outcome = Go | Suppress | Wait


def decide(rules: Rules, campaign: CampaignRules, user: Recipient, now: datetime) -> Outcome:
    """Apply global control, caps, the window and the campaign's control group to one send (no rate limit: see
    `rate_overflow_due`). Transactional campaigns skip the holdout, caps and quiet hours, never their own window."""
    if not campaign.transactional and in_global_control(user.bucket, rules.global_control_percent):
        return Suppress("global_control", f"in the workspace's global control group ({rules.global_control_percent} %)", GLOBAL_CONTROL)
    variant = results_rules.variant_after_winner(
        arm(position(user.bucket, campaign.id), campaign.control_percent, campaign.variants), campaign.winner
    )
    if not campaign.transactional and (cap := cap_reached(rules.frequency_caps, campaign.channel, user.history, now)):
        what = "message" if cap.channel == ANY_CHANNEL else f"{cap.channel} message"
        many, days = ("" if cap.max == 1 else "s"), ("day" if cap.per_days == 1 else f"{cap.per_days} days")
        return Suppress("frequency_cap", f"frequency cap: at most {cap.max} {what}{many} per {days}", variant)
    quiet = None if campaign.transactional else quiet_hours_window(user.quiet_hours)
    window = quiet or campaign.window  # the user's quiet hours override the campaign's window
    outside = campaign.outside  # "wait" unless the campaign says "drop"
    if window is not None:
        wall = now.astimezone(user.zone).replace(tzinfo=None)
        if not window.is_open(wall):
            what = "the user's quiet hours" if quiet else "the delivery window"
            if outside == "drop":
                return Suppress("delivery_window", f"outside {what} in {user.zone.key} (the campaign drops such sends)", variant)
            opening = window.next_opening(wall)
            return Wait("delivery_window", f"waiting for {what}: opens {opening:%a %H:%M} {user.zone.key}",
                        local_to_utc(opening, user.zone), variant)
    if variant == CONTROL:
        return Suppress("control", f"in the campaign's control group ({campaign.control_percent} %)", CONTROL)
    message, locales = campaign.message, campaign.locales
    chosen = next((v for v in campaign.variants if v["name"] == variant), None)
    if chosen is not None:
        message, locales = chosen["message"], chosen.get("locales")
    key = pick_locale(locales, user.locale)
    return Go(variant, locales[key] if key and locales else message, key)


def rate_overflow_due(index: int, rate_per_minute: int, minute: datetime) -> datetime:
    """When the `index`-th send (from 0) past this minute's allowance is decided again: spread `rate_per_minute`
    to a minute over the minutes after `minute` (the start of the current one). Nothing is dropped."""
    return minute + timedelta(minutes=1 + index // rate_per_minute)


def minute_of(at: datetime) -> datetime:
    """The start of the minute `at` falls in."""
    return at.replace(second=0, microsecond=0)
