"""Send-time optimization picks the hour a synthetic history implies, in the user's own time zone, within the horizon."""

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.profiles import activity
from services.scheduler.timing import domain

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
EMPTY = [0] * domain.HOURS_OF_WEEK


def history(zone: ZoneInfo, favourite_hour: int, sessions: int, seed: int = 7) -> list[int]:
    """Session starts over eight weeks, as the profiles service counts them: most at the favourite local hour,
    the rest scattered over the day."""
    rng = random.Random(seed)
    hours = [0] * activity.HOURS_OF_WEEK
    monday = datetime(2026, 10, 5, tzinfo=zone)
    for n in range(sessions):
        hour = favourite_hour if n % 3 else rng.randrange(7, 23)
        local = monday + timedelta(days=n % 56, hours=hour, minutes=rng.randrange(60))
        hours[activity.hour_of_week(local.astimezone(UTC), str(zone))] += 1
    return hours


def test_a_user_gets_the_hour_their_sessions_imply_in_their_time_zone() -> None:
    hours = history(BERLIN, favourite_hour=19, sessions=60)
    earliest = datetime(2026, 12, 8, 8, 10, tzinfo=UTC)  # Tuesday 09:10 in Berlin (CET, UTC+1)
    at = domain.best_send_time(earliest, BERLIN, domain.user_scores(hours, [], BERLIN), EMPTY, history=60)
    assert at == datetime(2026, 12, 8, 18, 0, tzinfo=UTC)  # Tuesday 19:00 in Berlin


def test_the_same_history_elsewhere_is_the_same_local_hour() -> None:
    hours = history(KOLKATA, favourite_hour=7, sessions=112)
    earliest = datetime(2026, 12, 8, 8, 10, tzinfo=UTC)  # 13:40 in Kolkata (UTC+5:30)
    at = domain.best_send_time(earliest, KOLKATA, domain.user_scores(hours, [], KOLKATA), EMPTY, history=112)
    assert at == datetime(2026, 12, 9, 1, 30, tzinfo=UTC)  # Wednesday 07:00 in Kolkata, the next morning
    assert at.astimezone(KOLKATA).hour == 7 and at.astimezone(KOLKATA).minute == 0


def test_opens_and_clicks_weigh_in() -> None:
    hours = [0] * domain.HOURS_OF_WEEK
    hours[1 * 24 + 12] = 3  # three sessions on Tuesdays at noon
    opened = [datetime(2026, 11, 24, 20, 5, tzinfo=UTC), datetime(2026, 12, 1, 20, 40, tzinfo=UTC)]  # Tue 21:xx Berlin
    scores = domain.user_scores(hours, opened, BERLIN)
    assert scores[1 * 24 + 21] == 2 * domain.ENGAGEMENT_WEIGHT
    earliest = datetime(2026, 12, 8, 8, 10, tzinfo=UTC)
    at = domain.best_send_time(earliest, BERLIN, scores, EMPTY, history=3 + len(opened))
    assert at.astimezone(BERLIN).hour == 21


def test_too_little_history_uses_the_workspace_best_hour_in_the_users_zone() -> None:
    mine = history(BERLIN, favourite_hour=6, sessions=3)
    crowd = domain.workspace_scores([history(BERLIN, 20, 30, seed=s) for s in range(5)] + [None])
    assert crowd.index(max(crowd)) % 24 == 20
    earliest = datetime(2026, 12, 8, 8, 10, tzinfo=UTC)
    at = domain.best_send_time(earliest, NEW_YORK, domain.user_scores(mine, [], NEW_YORK), crowd, history=3)
    assert at.astimezone(NEW_YORK).hour == 20  # the workspace's evening, reached where the user is


def test_no_evidence_anywhere_sends_as_soon_as_allowed() -> None:
    earliest = datetime(2026, 12, 8, 8, 10, tzinfo=UTC)
    assert domain.best_send_time(earliest, BERLIN, EMPTY, EMPTY, history=0) == earliest


def test_the_best_hour_is_looked_for_only_within_the_horizon() -> None:
    hours = [0] * domain.HOURS_OF_WEEK
    hours[3 * 24 + 10] = 50  # Thursdays 10:00: two days away
    hours[1 * 24 + 15] = 5  # Tuesdays 15:00: today
    earliest = datetime(2026, 12, 8, 8, 10, tzinfo=UTC)
    at = domain.best_send_time(earliest, BERLIN, hours, EMPTY, history=55)
    assert at == datetime(2026, 12, 8, 14, 0, tzinfo=UTC)
    assert at - earliest < timedelta(hours=domain.HORIZON_HOURS)


def test_the_current_hour_goes_at_once_and_a_dst_change_keeps_local_hours() -> None:
    hours = [0] * domain.HOURS_OF_WEEK
    hours[6 * 24 + 9] = 9  # Sundays 09:00 in New York
    earliest = datetime(2026, 3, 8, 13, 25, tzinfo=UTC)  # Sunday 09:25 EDT, the morning clocks went forward
    assert domain.best_send_time(earliest, NEW_YORK, hours, EMPTY, history=9) == earliest
    hours = [0] * domain.HOURS_OF_WEEK
    hours[6 * 24 + 4] = 9  # Sundays 04:00: after the jump, EDT (UTC-4)
    earliest = datetime(2026, 3, 8, 5, 30, tzinfo=UTC)  # Sunday 00:30 EST
    at = domain.best_send_time(earliest, NEW_YORK, hours, EMPTY, history=9)
    assert at == datetime(2026, 3, 8, 8, 0, tzinfo=UTC) and at.astimezone(NEW_YORK).hour == 4
    assert all(c.astimezone(NEW_YORK).minute == 0 for c in domain.candidates(earliest, NEW_YORK)[1:])
