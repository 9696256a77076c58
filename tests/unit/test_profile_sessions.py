"""Session rules: phones by their lifecycle, browsers by inactivity, in any order, by hour of the week."""

import itertools
import random
from datetime import UTC, datetime, timedelta

from services.profiles.activity import RETAINED, Sessions, add_session, hour_of_week, merge_sessions

GAP = timedelta(minutes=30)
MON = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # a Monday, 08:00 UTC
M = timedelta(minutes=1)
Activity = tuple[datetime, str | None, bool]  # when, time zone, browser


def play(activity: list[Activity] | tuple[Activity, ...]) -> Sessions:
    sessions = Sessions()
    for at, tz, browser in activity:
        add_session(sessions, at, tz, browser, GAP)
    return sessions


def shown(s: Sessions) -> tuple[object, ...]:
    return s.count, s.first, s.last, tuple(s.hours or ())


BROWSING: list[Activity] = [
    (MON, "Europe/Berlin", True),
    (MON + 20 * M, "Europe/Berlin", True),
    (MON + 70 * M, "Europe/Berlin", True),  # 50 minutes later: a second session...
    (MON + 45 * M, "Europe/Berlin", True),  # ...until this late event joins them into one
    (MON + 5 * 60 * M, None, True),  # a session in the afternoon, no time zone on the event
    (MON - 10 * M, "Europe/Berlin", True),  # the first session began earlier than known
]


def test_browser_sessions_end_after_thirty_quiet_minutes_in_any_order() -> None:
    results = {shown(play(order)) for order in itertools.permutations(BROWSING)}
    assert len(results) == 1
    count, first, last, hours = results.pop()
    assert (count, first, last) == (2, MON - 10 * M, MON + 5 * 60 * M)
    assert sum(hours) == 2
    assert hours[8] == 1  # 07:50 UTC is Monday 08:50 in Berlin: the morning session, in the zone of its first event
    assert hours[13] == 1  # 13:00 UTC, the afternoon session's event had no zone


def test_each_app_opened_is_a_session_at_its_local_hour() -> None:
    opened = [(MON + i * M, "America/New_York", False) for i in (0, 1, 2)]  # foregrounded three times
    s = play(opened)
    assert (s.count, s.first, s.last) == (3, MON, MON + 2 * M)
    assert s.hours is not None and s.hours[3] == 3  # 03:00 on Monday in New York


def test_hour_of_week_starts_on_monday_midnight_local() -> None:
    assert hour_of_week(datetime(2026, 11, 2, 0, 30, tzinfo=UTC), None) == 0
    assert hour_of_week(datetime(2026, 11, 1, 23, 30, tzinfo=UTC), "Europe/Berlin") == 0  # Monday 00:30 in Berlin
    assert hour_of_week(datetime(2026, 11, 8, 23, 59, tzinfo=UTC), "UTC") == 167
    assert hour_of_week(MON, "Not/AZone") == 8


def test_merging_two_profiles_ends_where_one_would() -> None:
    mixed = BROWSING + [(MON + 2 * 60 * M, "Europe/Berlin", False), (MON + 21 * M, None, True)]
    rng = random.Random(3)
    for _ in range(50):
        order = mixed[:]
        rng.shuffle(order)
        cut = rng.randrange(len(order) + 1)
        mine, other = play(order[:cut]), play(order[cut:])
        merge_sessions(mine, other, GAP)
        assert shown(mine) == shown(play(mixed))


def test_only_the_most_recent_sessions_are_kept_as_intervals() -> None:
    days = [(MON + timedelta(days=i), None, True) for i in range(RETAINED + 8)]
    s = play(days)
    assert s.count == RETAINED + 8 and s.state is not None and len(s.state["recent"]) == RETAINED
    # An event next to a forgotten session is not counted again.
    assert not add_session(s, MON + 5 * M, None, True, GAP)
    assert s.count == RETAINED + 8 and s.first == MON
