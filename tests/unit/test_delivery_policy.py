"""The delivery policy, rule by rule (services/scheduler/delivery/domain.py), without I/O."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.delivery import domain
from services.scheduler.delivery.domain import CampaignRules, Cap, Go, Recipient, Rules, Sent, Suppress, Wait, Window

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)  # a Thursday
UTC_ZONE = ZoneInfo("UTC")


def campaign(**kw: object) -> CampaignRules:
    fields: dict[str, object] = {"id": "cmp_1", "channel": "push", "message": {"title": "hi", "body": "default"}}
    return CampaignRules(**(fields | kw))  # type: ignore[arg-type]


def user(bucket: int = 5000, **kw: object) -> Recipient:
    return Recipient(bucket=bucket, zone=kw.pop("zone", UTC_ZONE), **kw)  # type: ignore[arg-type]


# --- buckets and arms


def test_bucket_is_stable_and_spread() -> None:
    assert domain.bucket("ws", "p_1") == domain.bucket("ws", "p_1")
    buckets = [domain.bucket("ws", f"p_{i}") for i in range(20_000)]
    assert all(0 <= b < 10_000 for b in buckets)
    assert 1800 < sum(b < 1000 for b in buckets) < 2200  # about 10 % below 1000
    assert domain.bucket("ws", "p_1") != domain.bucket("other", "p_1") or domain.bucket("ws", "p_2") != domain.bucket("other", "p_2")


def test_arm_takes_exact_shares_of_positions() -> None:
    variants = [{"name": "A", "weight": 45}, {"name": "B", "weight": 45}]
    arms = [domain.arm(p, 10, variants) for p in range(10_000)]
    assert arms.count("control") == 1000 and arms.count("A") == 4500 and arms.count("B") == 4500


def test_arm_without_variants_is_the_message_or_control() -> None:
    assert {domain.arm(p, 20, []) for p in range(10_000)} == {"control", None}
    assert [domain.arm(p, 20, []) for p in range(10_000)].count("control") == 2000
    assert domain.arm(0, 0, []) is None


def test_position_depends_on_the_campaign() -> None:
    assert domain.position(0, "cmp_a") != domain.position(0, "cmp_b")
    assert sorted(domain.position(b, "cmp_a") for b in range(10_000)) == list(range(10_000))  # a permutation


# --- global control


def test_global_control_is_the_bottom_range_and_exempts_transactional() -> None:
    rules = Rules(global_control_percent=5)
    held = decide(rules, campaign(), user(bucket=499))
    assert isinstance(held, Suppress) and held.rule == "global_control" and held.variant == "global_control"
    assert isinstance(decide(rules, campaign(), user(bucket=500)), Go)
    assert isinstance(decide(rules, campaign(transactional=True), user(bucket=0)), Go)
    # raising the percentage keeps everyone who was held out
    assert all(domain.in_global_control(b, 10) for b in range(500))


# --- frequency caps


def decide(rules: Rules, c: CampaignRules, u: Recipient, now: datetime = NOW) -> domain.Outcome:
    return domain.decide(rules, c, u, now)


def sent(channel: str, days_ago: float) -> Sent:
    return Sent(channel, NOW - timedelta(days=days_ago))


def test_channel_cap_counts_that_channel_within_its_days() -> None:
    rules = Rules(frequency_caps=(Cap("push", 3, 7),))
    two = (sent("push", 1), sent("push", 2), sent("email", 1), sent("push", 8))
    assert isinstance(decide(rules, campaign(), user(history=two)), Go)
    three = (*two, sent("push", 6.9))
    out = decide(rules, campaign(), user(history=three))
    assert isinstance(out, Suppress) and out.rule == "frequency_cap" and "at most 3 push messages per 7 days" in out.reason
    assert isinstance(decide(rules, campaign(channel="email"), user(history=three)), Go)


def test_any_cap_counts_every_channel() -> None:
    rules = Rules(frequency_caps=(Cap("push", 3, 7), Cap("any", 2, 1)))
    out = decide(rules, campaign(channel="email"), user(history=(sent("push", 0.5), sent("sms", 0.2))))
    assert isinstance(out, Suppress) and "at most 2 messages per day" in out.reason
    assert isinstance(decide(rules, campaign(channel="email"), user(history=(sent("push", 1.5), sent("sms", 0.2)))), Go)


def test_transactional_is_not_capped() -> None:
    rules = Rules(frequency_caps=(Cap("any", 1, 7),))
    assert isinstance(decide(rules, campaign(transactional=True), user(history=(sent("push", 1),))), Go)


def test_caps_come_after_global_control() -> None:
    rules = Rules(frequency_caps=(Cap("any", 1, 7),), global_control_percent=10)
    out = decide(rules, campaign(), user(bucket=3, history=(sent("push", 1),)))
    assert isinstance(out, Suppress) and out.rule == "global_control"


# --- delivery windows


WEEKDAYS_9_TO_21 = Window(time(9), time(21), frozenset(range(5)))


def test_window_in_the_users_time_zone_waits_for_the_next_opening() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")  # 12:00 UTC Thursday is 21:00 Thursday in Tokyo: just closed
    out = decide(Rules(), campaign(window=WEEKDAYS_9_TO_21), user(zone=tokyo))
    assert isinstance(out, Wait) and out.rule == "delivery_window"
    assert out.until == datetime(2026, 12, 4, 0, 0, tzinfo=UTC)  # Friday 09:00 in Tokyo
    berlin = ZoneInfo("Europe/Berlin")  # 13:00 in Berlin: open
    assert isinstance(decide(Rules(), campaign(window=WEEKDAYS_9_TO_21), user(zone=berlin)), Go)
    la = ZoneInfo("America/Los_Angeles")  # 04:00 Thursday: opens 09:00 the same day
    out = decide(Rules(), campaign(window=WEEKDAYS_9_TO_21), user(zone=la))
    assert isinstance(out, Wait) and out.until == datetime(2026, 12, 3, 17, 0, tzinfo=UTC)


def test_window_skips_days_it_is_closed() -> None:
    friday_late = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)
    out = decide(Rules(), campaign(window=WEEKDAYS_9_TO_21), user(), friday_late)
    assert isinstance(out, Wait) and out.until == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # Monday


def test_window_outside_drop_suppresses() -> None:
    out = decide(Rules(), campaign(window=WEEKDAYS_9_TO_21, outside="drop"), user(zone=ZoneInfo("Asia/Tokyo")))
    assert isinstance(out, Suppress) and out.rule == "delivery_window"


def test_overnight_window_belongs_to_the_day_it_opens() -> None:
    night = Window(time(22), time(2), frozenset({3}))  # Thursday 22:00 to Friday 02:00
    assert night.is_open(datetime(2026, 12, 3, 23, 0))
    assert night.is_open(datetime(2026, 12, 4, 1, 59))
    assert not night.is_open(datetime(2026, 12, 4, 23, 0))
    assert not night.is_open(datetime(2026, 12, 3, 1, 0))


def test_quiet_hours_override_the_campaign_window() -> None:
    # 12:00 UTC: the campaign window is open, but this user's quiet hours (11:00–14:00) hold it until 14:00
    out = decide(Rules(), campaign(window=WEEKDAYS_9_TO_21), user(quiet_hours="11:00-14:00"))
    assert isinstance(out, Wait) and out.until == datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    assert "quiet hours" in out.reason
    # 22:00–07:00 quiet hours let a 12:00 send go, even outside the campaign's window (they replace it)
    sunday_noon = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert isinstance(decide(Rules(), campaign(window=WEEKDAYS_9_TO_21), user(quiet_hours={"start": "22:00", "end": "07:00"}), sunday_noon), Go)
    # a transactional campaign ignores quiet hours
    assert isinstance(decide(Rules(), campaign(transactional=True), user(quiet_hours="11:00-14:00")), Go)


@pytest.mark.parametrize("value", [None, "", "nonsense", "25:00-07:00", "07:00-07:00", {"start": 1}, 42])
def test_unusable_quiet_hours_are_ignored(value: object) -> None:
    assert domain.quiet_hours_window(value) is None


def test_window_comes_after_caps() -> None:
    rules = Rules(frequency_caps=(Cap("any", 1, 7),))
    out = decide(rules, campaign(window=WEEKDAYS_9_TO_21), user(zone=ZoneInfo("Asia/Tokyo"), history=(sent("push", 1),)))
    assert isinstance(out, Suppress) and out.rule == "frequency_cap"


# --- control group, variants, locales


def variants() -> tuple[dict[str, object], ...]:
    return (
        {"name": "A", "weight": 45, "message": {"title": "A", "body": "a"}, "locales": {"de": {"title": "A-de", "body": "a"}}},
        {"name": "B", "weight": 45, "message": {"title": "B", "body": "b"}},
    )


def bucket_for(arm: str, c: CampaignRules) -> int:
    return next(b for b in range(10_000) if domain.arm(domain.position(b, c.id), c.control_percent, c.variants) == arm)


def test_control_group_is_suppressed_after_the_window() -> None:
    c = campaign(variants=variants(), control_percent=10, window=WEEKDAYS_9_TO_21)
    b = bucket_for("control", c)
    out = decide(Rules(), c, user(bucket=b))
    assert isinstance(out, Suppress) and out.rule == "control" and out.variant == "control"
    waiting = decide(Rules(), c, user(bucket=b, zone=ZoneInfo("Asia/Tokyo")))
    assert isinstance(waiting, Wait) and waiting.variant == "control"


def test_variant_content_and_its_locales() -> None:
    c = campaign(variants=variants(), control_percent=10, locales={"de": {"title": "base-de", "body": "x"}})
    a, b = bucket_for("A", c), bucket_for("B", c)
    out = decide(Rules(), c, user(bucket=a, locale="de-AT"))
    assert isinstance(out, Go) and out.variant == "A" and out.message["title"] == "A-de" and out.locale == "de"
    out = decide(Rules(), c, user(bucket=b, locale="de"))
    assert isinstance(out, Go) and out.variant == "B" and out.message["title"] == "B"


def test_locale_fallback_chain() -> None:
    locales = {"pt-BR": {"t": "br"}, "pt": {"t": "pt"}, "de": {"t": "de"}}
    assert domain.pick_locale(locales, "pt-BR") == "pt-BR"
    assert domain.pick_locale(locales, "pt_br") == "pt-BR"
    assert domain.pick_locale(locales, "pt-PT") == "pt"
    assert domain.pick_locale({"pt-BR": {}}, "pt") is None  # pt does not reach pt-BR: the default
    assert domain.pick_locale(locales, "fr-FR") is None
    assert domain.pick_locale(locales, None) is None
    out = decide(Rules(), campaign(locales=locales), user(locale="fr"))
    assert isinstance(out, Go) and out.message == {"title": "hi", "body": "default"} and out.locale is None


def test_locale_tag_prefers_a_device_in_the_profiles_language() -> None:
    assert domain.locale_tag("pt", "pt_BR") == "pt-BR"
    assert domain.locale_tag("de", "en-US") == "de"
    assert domain.locale_tag(None, "en-US") == "en-US"
    assert domain.locale_tag("de", None) == "de"


# --- rate limit


def test_rate_overflow_spreads_forward_a_minute_at_a_time() -> None:
    minute = domain.minute_of(datetime(2026, 12, 3, 12, 0, 42, tzinfo=UTC))
    assert minute == datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    due = [domain.rate_overflow_due(i, 100, minute) for i in range(250)]
    assert due[0] == due[99] == minute + timedelta(minutes=1)
    assert due[100] == minute + timedelta(minutes=2) and due[249] == minute + timedelta(minutes=3)


def test_lock_keys_fit_a_bigint() -> None:
    keys = {domain.lock_key("ws", f"p{i}") for i in range(1000)}
    assert len(keys) == 1000 and all(-(2**63) <= k < 2**63 for k in keys)


def test_a_decided_winner_goes_to_every_variant_user_and_control_stays_out() -> None:
    c = campaign(variants=variants(), control_percent=10, winner="B")
    out = decide(Rules(), c, user(bucket=bucket_for("A", campaign(variants=variants(), control_percent=10))))
    assert isinstance(out, Go) and out.variant == "B" and out.message["title"] == "B"
    held = decide(Rules(), c, user(bucket=bucket_for("control", c)))
    assert isinstance(held, Suppress) and held.rule == "control"
