"""Send-time optimization ("intelligent timing"), as pure rules.

A user's send goes out at the local hour they are most likely to engage, within HORIZON_HOURS of the
earliest time it may go:

- Their history is a 7 × 24 hour-of-week histogram in their own time zone (Monday 00:00 first): the
  session starts the profiles service counts (`segment_profiles.session_hours`), plus ENGAGEMENT_WEIGHT
  for each message they opened or clicked (`$message_opened` / `$message_clicked`) at that hour.
- Each candidate is one local hour of the horizon: the earliest time itself, then the start of every
  following local hour. The candidate whose hour of the week scores highest wins; a tie goes to the
  sooner one, so no evidence at all means "as soon as allowed".
- A user with less than MIN_HISTORY sessions and engagements uses the workspace's histogram instead
  (every user's session starts added up, each in their own time zone): the workspace's best hour,
  reached in the user's own time zone.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo

HOURS_OF_WEEK = 7 * 24
HORIZON_HOURS = 24  # a send waits at most this long for its best hour
MIN_HISTORY = 5  # sessions + engagements a user needs before their own hours are trusted
ENGAGEMENT_WEIGHT = 2  # an open or a click says more about attention than a session start
ENGAGEMENT_EVENTS = ("$message_opened", "$message_clicked", "$message_viewed")  # viewed: an in-app message shown


def hour_of_week(at: datetime, zone: tzinfo) -> int:
    """0 for Monday 00:00–00:59 in `zone`, up to 167 for Sunday 23:00 (as the profiles service counts sessions)."""
    local = at.astimezone(zone)
    return local.weekday() * 24 + local.hour


def start_of_local_hour(at: datetime, zone: tzinfo) -> datetime:
    """The instant the local hour containing `at` began (exact across DST changes and half-hour zones)."""
    local = at.astimezone(zone)
    return at - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)


def user_scores(session_hours: Sequence[int] | None, engagements: Iterable[datetime], zone: tzinfo) -> list[int]:
    """The user's hour-of-week scores: session starts plus ENGAGEMENT_WEIGHT per open or click, in their zone."""
    scores = list(session_hours) if session_hours and len(session_hours) == HOURS_OF_WEEK else [0] * HOURS_OF_WEEK
    for at in engagements:
        scores[hour_of_week(at, zone)] += ENGAGEMENT_WEIGHT
    return scores


def history_size(session_count: int, engagement_count: int) -> int:
    """How much a user's own hours are based on: their sessions and engagements."""
    return session_count + engagement_count


def candidates(earliest: datetime, zone: tzinfo, horizon_hours: int = HORIZON_HOURS) -> list[datetime]:
    """The times a send may go within the horizon: `earliest`, then the start of each following local hour."""
    return [earliest] + [start_of_local_hour(earliest + timedelta(hours=h), zone) for h in range(1, horizon_hours)]


def best_send_time(
    earliest: datetime,
    zone: tzinfo,
    scores: Sequence[int],
    workspace_scores: Sequence[int],
    history: int,
    horizon_hours: int = HORIZON_HOURS,
    min_history: int = MIN_HISTORY,
) -> datetime:
    """When to send: the candidate whose local hour of the week scores highest (the sooner on a tie).

    `scores` are the user's (see user_scores); with less than `min_history` behind them, the
    workspace's scores decide instead.
    """
    weights = scores if history >= min_history else workspace_scores
    best, best_score = earliest, -1
    for at in candidates(earliest, zone, horizon_hours):
        score = weights[hour_of_week(at, zone)] if len(weights) == HOURS_OF_WEEK else 0
        if score > best_score:
            best, best_score = at, score
    return best.astimezone(UTC)


def workspace_scores(histograms: Iterable[Sequence[int] | None]) -> list[int]:
    """The workspace's hour-of-week scores: every user's local histogram added up."""
    total = [0] * HOURS_OF_WEEK
    for hours in histograms:
        if hours and len(hours) == HOURS_OF_WEEK:
            total = [a + b for a, b in zip(total, hours, strict=True)]
    return total
