"""Pure rules of campaign entries: schedule occurrences and when they are decided, re-eligibility, engagement loops."""

from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler import domain
from services.scheduler.domain import Schedule


def wall(text: str) -> datetime:
    return datetime.fromisoformat(text)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_one_off_schedule_has_one_occurrence() -> None:
    once = Schedule(at=wall("2027-03-01T09:00"))
    assert once.next_after(None) == wall("2027-03-01T09:00")
    assert once.next_after(wall("2027-03-01T09:00")) is None


def test_a_weekly_schedule_repeats_on_its_days_only() -> None:
    weekly = Schedule(at=wall("2027-03-01T09:00"), every="week", days=("mon", "fri"))  # 1 March 2027 is a Monday
    series = [weekly.next_after(None)]
    for _ in range(3):
        series.append(weekly.next_after(series[-1]))
    assert series == [wall("2027-03-01T09:00"), wall("2027-03-05T09:00"), wall("2027-03-08T09:00"), wall("2027-03-12T09:00")]


def test_a_weekly_schedule_without_days_repeats_on_the_start_s_weekday() -> None:
    weekly = Schedule(at=wall("2027-03-03T18:30"), every="week")
    assert weekly.next_after(wall("2027-03-03T18:30")) == wall("2027-03-10T18:30")


def test_a_weekly_schedule_starts_on_its_first_listed_day_after_the_start() -> None:
    weekly = Schedule(at=wall("2027-03-02T09:00"), every="week", days=("mon",))  # a Tuesday start
    assert weekly.next_after(None) == wall("2027-03-08T09:00")


def test_a_monthly_schedule_keeps_its_day_or_the_month_s_last() -> None:
    monthly = Schedule(at=wall("2027-01-31T08:00"), every="month")
    feb = monthly.next_after(wall("2027-01-31T08:00"))
    assert feb == wall("2027-02-28T08:00")
    assert monthly.next_after(feb) == wall("2027-03-31T08:00")


def test_a_daily_schedule_repeats_every_day() -> None:
    daily = Schedule(at=wall("2027-12-31T23:00"), every="day")
    assert daily.next_after(wall("2027-12-31T23:00")) == wall("2028-01-01T23:00")


def test_a_local_time_occurrence_is_decided_when_its_time_first_comes_anywhere() -> None:
    local = Schedule(at=wall("2027-03-01T09:00"), local_time=True)
    assert local.first_instant(local.at) == utc("2027-02-28T19:00")  # 09:00 at UTC+14
    assert local.last_instant(local.at) == utc("2027-03-01T21:00")  # 09:00 at UTC-12


def test_a_fixed_zone_occurrence_is_one_instant_with_daylight_saving() -> None:
    berlin = Schedule(at=wall("2027-07-01T09:00"), time_zone="Europe/Berlin")
    assert berlin.first_instant(berlin.at) == berlin.last_instant(berlin.at) == utc("2027-07-01T07:00")
    assert Schedule(at=wall("2027-07-01T09:00")).first_instant(wall("2027-07-01T09:00")) == utc("2027-07-01T09:00")


def test_a_schedule_is_in_the_past_only_once_it_passed_for_everyone() -> None:
    local = Schedule(at=wall("2027-03-01T09:00"), local_time=True)
    assert not local.has_passed(utc("2027-03-01T20:59"))  # still ahead at UTC-12
    assert local.has_passed(utc("2027-03-01T21:00"))
    assert Schedule(at=wall("2027-03-01T09:00")).has_passed(utc("2027-03-01T09:00"))


def test_a_launch_decides_a_one_off_while_anyone_s_time_is_ahead() -> None:
    local = Schedule(at=wall("2027-03-01T09:00"), local_time=True)
    assert local.first_to_decide(utc("2027-03-01T12:00")) == local.at  # those past it get it the next day
    assert local.first_to_decide(utc("2027-03-01T21:00")) is None


def test_a_launch_starts_a_repeating_schedule_at_the_first_occurrence_nobody_missed() -> None:
    daily = Schedule(at=wall("2027-03-01T09:00"), local_time=True, every="day")
    assert daily.first_to_decide(utc("2027-02-28T19:00")) == wall("2027-03-01T09:00")
    assert daily.first_to_decide(utc("2027-02-28T19:01")) == wall("2027-03-02T09:00")


def test_stored_schedules_read_back_as_given() -> None:
    stored = {"at": "2027-03-01T09:00:00", "local_time": True, "time_zone": None, "repeat": {"every": "week", "days": ["wed"]}}
    assert Schedule.stored(stored) == Schedule(at=wall("2027-03-01T09:00"), local_time=True, every="week", days=("wed",))


NOW = utc("2027-03-10T12:00")


@pytest.mark.parametrize(("entries", "last", "days", "cap", "refused"), [
    (5, NOW - timedelta(minutes=1), None, None, None),  # the default: every entry sends, as campaigns always did
    (0, None, None, 1, None),
    (1, NOW - timedelta(days=400), None, 1, "already sent 1 time(s): max_sends_per_user is 1"),
    (1, NOW - timedelta(days=6, hours=23), 7, None, "entered on 2027-03-03 (UTC): re-eligible 7 day(s) after"),
    (1, NOW - timedelta(days=7), 7, None, None),
    (2, NOW - timedelta(days=30), 7, 3, None),
    (3, NOW - timedelta(days=30), 7, 3, "already sent 3 time(s): max_sends_per_user is 3"),
    (1, NOW, 0, None, None),
])
def test_re_eligibility(entries: int, last: datetime | None, days: int | None, cap: int | None, refused: str | None) -> None:
    assert domain.reentry_refusal(entries, last, NOW, days, cap) == refused


def test_only_another_campaign_s_engagement_can_trigger_a_campaign() -> None:
    assert domain.is_engagement_event("$message_opened") and not domain.is_engagement_event("Order Completed")
    assert domain.is_own_engagement("cmp_a", "$message_clicked", {"campaign_id": "cmp_a"})
    assert not domain.is_own_engagement("cmp_a", "$message_clicked", {"campaign_id": "cmp_b"})
    assert not domain.is_own_engagement("cmp_a", "Order Completed", {"campaign_id": "cmp_a"})


def test_entry_kinds_and_entry_send_ids() -> None:
    assert [domain.entry_kind(*fields) for fields in (({"event": "x"}, None, None), (None, {"at": "…"}, None),
                                                       (None, None, {"segment_id": "s"}), (None, None, None))] == [
        "action", "scheduled", "segment_entry", "api"]
    one = domain.entry_send_id("cmp", "cmp@2027-03-01T09:00:00", "p1")
    assert one == domain.entry_send_id("cmp", "cmp@2027-03-01T09:00:00", "p1") != domain.entry_send_id("cmp", "api:x", "p1")
    assert len(one) == 36
