"""Pure scheduling rules: does an event trigger a campaign, cancel a send, fall in its window.

Trigger and exception conditions are the segments' grammar (kernel.contracts.PropertyCondition),
evaluated by the segmenter's one Python reading of it, so a condition means the same in both.
"""

import calendar
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from services.segmenter import conditions as condition_rules

SEND_NAMESPACE = uuid.UUID("6f1c3c1e-2b9a-4f0e-9d61-3f4c1b7a9e55")


def send_id(campaign_id: str, trigger_message_id: str, profile_id: str) -> str:
    """Deterministic: the same trigger for the same campaign and profile is one send, however often it arrives."""
    return str(uuid.uuid5(SEND_NAMESPACE, f"{campaign_id}\x1f{profile_id}\x1f{trigger_message_id}"))


def property_matches(properties: dict[str, Any], key: str, op: str, value: Any, now: datetime | None = None) -> bool:
    """One property condition, with the same meaning as in segment filters (services/segmenter/conditions.py)."""
    return condition_rules.matches(properties, key, op, value, now if now is not None else datetime.now(UTC))


def _all_hold(where: list[dict[str, Any]], properties: dict[str, Any], now: datetime | None) -> bool:
    return all(property_matches(properties, w["property"], w["op"], w.get("value"), now) for w in where)


def matches_trigger(trigger: dict[str, Any], event_name: str, properties: dict[str, Any], now: datetime | None = None) -> bool:
    """The event is the trigger's event and satisfies every `where` condition."""
    return trigger.get("event") == event_name and _all_hold(trigger.get("where", []), properties, now)


def exception_name(exception: str | dict[str, Any]) -> str:
    """The event an exception (`cancel_on` item) names: a name, or `{"event": name, "where": [...]}`."""
    return exception if isinstance(exception, str) else str(exception["event"])


def matches_exception(exception: str | dict[str, Any], event_name: str, properties: dict[str, Any], now: datetime | None = None) -> bool:
    """The event is the exception's event and, for `{"event", "where"}`, satisfies every condition."""
    if isinstance(exception, str):
        return exception == event_name
    return exception.get("event") == event_name and _all_hold(exception.get("where", []), properties, now)


def in_window(starts_at: datetime | None, ends_at: datetime | None, at: datetime) -> bool:
    """Whether `at` falls inside the campaign's [starts_at, ends_at) window."""
    return (starts_at is None or at >= starts_at) and (ends_at is None or at < ends_at)


# A campaign is made a `draft`, `launch`ed to `active`, `pause`d and launched again; `archived` ends it
# (it sends nothing more; unarchived, it is a draft again).
CampaignStatus = Literal["draft", "active", "paused", "archived"]
CAMPAIGN_STATUSES: tuple[CampaignStatus, ...] = ("draft", "active", "paused", "archived")
# What an active campaign may change while it sends: its name, what it says, and when it ends. Who it
# reaches and when it triggers wait for a pause, so no trigger is matched half under the old rules.
CHANGEABLE_WHILE_ACTIVE = frozenset({"name", "message", "ends_at"})


def edit_refusal(status: str, fields: Iterable[str]) -> str | None:
    """Why a campaign in `status` may not change these fields (a 409's detail), or None when it may.

    A draft may change anything. Once launched, its channel is fixed: the sends already decided were
    decided for it. An active campaign changes only its name, message and end; the rest after a pause.
    An archived one changes nothing (unarchive it, or duplicate it).
    """
    wanted = set(fields)
    if status == "archived":
        return "an archived campaign cannot change: unarchive it (it becomes a draft) or duplicate it"
    if status == "draft" or not wanted:
        return None
    if "channel" in wanted:
        return f"a launched campaign's channel cannot change (it is {status}): duplicate it to send on another channel"
    if status == "active" and (fixed := sorted(wanted - CHANGEABLE_WHILE_ACTIVE)):
        return (
            f"an active campaign changes only its name, message and ends_at; pause it to change {', '.join(fixed)}"
        )
    return None


# --- entries: how a user comes to a campaign -----------------------------------------------------

# A campaign enters users one way: an event (`trigger`), a schedule, entering a segment, or only when
# called (`POST /campaigns/{id}/trigger`: a campaign with none of the three).
EntryKind = Literal["action", "scheduled", "segment_entry", "api"]


def entry_kind(trigger: object, schedule: object, segment_entry: object) -> EntryKind:
    """How a campaign with these (stored) entry fields enters users; at most one is set (schemas refuse more)."""
    if trigger:
        return "action"
    if schedule:
        return "scheduled"
    if segment_entry:
        return "segment_entry"
    return "api"


def entry_send_id(campaign_id: str, entry_key: str, profile_id: str) -> str:
    """The send of one entry (a schedule's occurrence, an API call) for one profile, as SQL computes it in bulk:
    md5 of the three, read as a UUID (repository.ENTRY_SEND_ID is the same expression)."""
    digest = hashlib.md5(f"{campaign_id}\x1f{profile_id}\x1f{entry_key}".encode()).hexdigest()  # noqa: S324 - an id, not a secret
    return str(uuid.UUID(digest))


# Herald's own engagement events (contract C3: `$message_sent`, `$message_opened`, …). A campaign triggers on one
# only when it says so (`allow_engagement_events`), and never on one of its own sends.
ENGAGEMENT_PREFIX = "$message_"


def is_engagement_event(name: str) -> bool:
    """Whether this event is one Herald records about its own messages."""
    return name.startswith(ENGAGEMENT_PREFIX)


def is_own_engagement(campaign_id: str, event_name: str, properties: dict[str, Any]) -> bool:
    """An engagement event about one of this campaign's sends: it can never trigger the campaign (no loop)."""
    return is_engagement_event(event_name) and properties.get("campaign_id") == campaign_id


# A send counts as an entry for re-eligibility while it is waiting or went out; one stopped by a rule does not.
ENTERED_STATUSES = ("scheduled", "requested")


def reentry_refusal(
    entries: int, last_entry: datetime | None, now: datetime, reeligible_after_days: int | None, max_sends_per_user: int | None
) -> str | None:
    """Why a user who entered this campaign `entries` times (the last at `last_entry`) may not enter again now, or None.

    Without either rule (the default) every entry sends, as action-based campaigns always did. With
    `max_sends_per_user`, at most that many entries send (1: once per user). With `reeligible_after_days`,
    an entry sends only when the last one is at least that many days old (0: no wait).
    """
    if max_sends_per_user is not None and entries >= max_sends_per_user:
        return f"already sent {entries} time(s): max_sends_per_user is {max_sends_per_user}"
    if reeligible_after_days is not None and last_entry is not None and now - last_entry < timedelta(days=reeligible_after_days):
        return f"entered on {last_entry.astimezone(UTC):%Y-%m-%d} (UTC): re-eligible {reeligible_after_days} day(s) after"
    return None


# --- schedules -------------------------------------------------------------------------------------

# Local-time delivery: a wall-clock time comes first at UTC+14 and last at UTC-12. An occurrence is decided when its
# wall-clock time first comes anywhere, so every user's local time is still ahead, the last ones 26 h later.
EARLIEST_OFFSET = timedelta(hours=14)
LATEST_OFFSET = timedelta(hours=12)
# A user whose local time passed more than this before the occurrence was decided (decided late: the campaign
# launched late, the scheduler was down) gets it at that wall-clock time the next day; a lesser lag sends now.
LATE_GRACE = timedelta(hours=1)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Every = Literal["day", "week", "month"]
_SEARCH_DAYS = 800  # far more than a week or a month: a series always has an occurrence in it


@dataclass(frozen=True)
class Schedule:
    """When a scheduled campaign sends: from `at` (a wall-clock time), once or repeating; each user's own time zone
    when `local_time`, else `time_zone` (UTC when none)."""

    at: datetime  # naive: a wall-clock time
    local_time: bool = False
    time_zone: str | None = None
    every: Every | None = None
    days: tuple[str, ...] = ()

    @classmethod
    def stored(cls, schedule: dict[str, Any]) -> "Schedule":
        """From a campaign's stored `schedule` (schemas.ScheduleIn as JSON)."""
        repeat = schedule.get("repeat") or {}
        return cls(
            at=datetime.fromisoformat(schedule["at"]).replace(tzinfo=None),
            local_time=bool(schedule.get("local_time")),
            time_zone=schedule.get("time_zone"),
            every=repeat.get("every"),
            days=tuple(repeat.get("days") or ()),
        )

    def first_instant(self, wall: datetime) -> datetime:
        """When this wall-clock time first comes for anyone the campaign reaches (UTC): when its occurrence is decided."""
        if self.local_time:
            return wall.replace(tzinfo=UTC) - EARLIEST_OFFSET
        return self.fixed_instant(wall)

    def last_instant(self, wall: datetime) -> datetime:
        """When this wall-clock time last comes for anyone the campaign reaches (UTC)."""
        if self.local_time:
            return wall.replace(tzinfo=UTC) + LATEST_OFFSET
        return self.fixed_instant(wall)

    def fixed_instant(self, wall: datetime) -> datetime:
        """The instant of a wall-clock time in the schedule's own time zone (UTC when none)."""
        return wall.replace(tzinfo=ZoneInfo(self.time_zone) if self.time_zone else UTC).astimezone(UTC)

    def occurs_on(self, day: date) -> bool:
        """Whether the series has an occurrence on this date (at or after the start)."""
        if day < self.at.date():
            return False
        if self.every is None:
            return day == self.at.date()
        if self.every == "day":
            return True
        if self.every == "week":
            return WEEKDAYS[day.weekday()] in (self.days or (WEEKDAYS[self.at.weekday()],))
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day == min(self.at.day, last)  # the 31st is the last day in shorter months

    def next_after(self, wall: datetime | None) -> datetime | None:
        """The first occurrence (a wall-clock time) strictly after `wall` (None: the first of all); None when no more."""
        start = self.at.date() if wall is None else wall.date() + timedelta(days=1)
        if wall is not None and self.every is None:
            return None
        for offset in range(_SEARCH_DAYS):
            day = start + timedelta(days=offset)
            if self.occurs_on(day):
                return datetime.combine(day, self.at.time())
        return None

    def first_to_decide(self, now: datetime) -> datetime | None:
        """The occurrence a launch at `now` schedules: a one-off while anyone's time is still ahead (those whose time
        passed get it the next day); a repeating one's first that nobody has missed yet (so nobody gets two)."""
        wall = self.next_after(None)
        if self.every is None:
            return wall if wall is not None and self.last_instant(wall) > now else None
        while wall is not None and self.first_instant(wall) < now:
            wall = self.next_after(wall)
        return wall

    def has_passed(self, now: datetime) -> bool:
        """Whether its start has passed for everyone it could reach: a schedule in the past."""
        return self.last_instant(self.at) <= now
