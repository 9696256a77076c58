"""A campaign's results, as pure rules: engagement outcomes, goals, the statistics (against hand-computed numbers), the winner."""

from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler.results import domain

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def test_only_herald_engagement_events_are_outcomes() -> None:
    assert domain.engagement_outcome("$message_opened") == "opened"
    assert domain.engagement_outcome("$message_unsubscribed") == "unsubscribed"
    assert domain.engagement_outcome("$message_viewed") == "opened"  # an in-app message shown
    assert domain.engagement_outcome("$message_skipped") is None
    assert domain.engagement_outcome("message_opened") is None
    assert domain.engagement_outcome("Order Completed") is None


def test_a_goal_is_its_event_with_every_condition() -> None:
    goal = {"event": "Order Completed", "where": [{"property": "total", "op": "gt", "value": 50}]}
    assert domain.goal_matches(goal, "Order Completed", {"total": 80}, NOW)
    assert not domain.goal_matches(goal, "Order Completed", {"total": 20}, NOW)
    assert not domain.goal_matches(goal, "Product Viewed", {"total": 80}, NOW)


def test_a_conversion_falls_within_the_window_after_the_send() -> None:
    assert domain.converts(NOW, NOW + timedelta(hours=72), 72)
    assert not domain.converts(NOW, NOW + timedelta(hours=72, seconds=1), 72)
    assert not domain.converts(NOW, NOW - timedelta(seconds=1), 72)


def test_wilson_interval_against_hand_computed_values() -> None:
    # 50/100: centre (0.5 + 1.96²/200) / (1 + 1.96²/100) = 0.5; half 1.96/1.0384 · √(0.0025 + 0.000096) = 0.09617
    half = domain.wilson_interval(50, 100)
    assert half is not None and half.low == pytest.approx(0.40383, abs=1e-5) and half.high == pytest.approx(0.59617, abs=1e-5)
    # 0/10: the interval starts at 0 and reaches 2 · (1.96²/20) / (1 + 1.96²/10) = 0.27753 (never the normal's [0, 0])
    none = domain.wilson_interval(0, 10)
    assert none is not None and none.low == 0.0 and none.high == pytest.approx(0.27753, abs=1e-5)
    every = domain.wilson_interval(10, 10)
    assert every is not None and every.low == pytest.approx(0.72247, abs=1e-5) and every.high == pytest.approx(1.0)
    assert domain.wilson_interval(0, 0) is None


def test_two_proportion_z_test_against_hand_computed_values() -> None:
    # 30/100 vs 20/100: pooled 0.25, se √(0.25·0.75·0.02) = 0.061237, z = 0.1/0.061237 = 1.63299, p = 2(1 − Φ(z)) = 0.10247
    weak = domain.compare(30, 100, 20, 100)
    assert weak is not None
    assert weak.absolute == pytest.approx(0.10) and weak.relative == pytest.approx(0.5)
    assert weak.z == pytest.approx(1.63299, abs=1e-5) and weak.p_value == pytest.approx(0.10247, abs=1e-5)
    assert not weak.significant
    # twice the users, the same rates: se 0.043301, z 2.30940, p 0.02092
    strong = domain.compare(60, 200, 40, 200)
    assert strong is not None and strong.z == pytest.approx(2.30940, abs=1e-5)
    assert strong.p_value == pytest.approx(0.02092, abs=1e-5) and strong.significant
    worse = domain.compare(20, 100, 30, 100)
    assert worse is not None and worse.z == pytest.approx(-1.63299, abs=1e-5) and worse.relative == pytest.approx(-1 / 3)


def test_comparisons_without_variance_or_baseline_say_so() -> None:
    assert domain.compare(5, 10, 0, 0) is None
    flat = domain.compare(0, 10, 0, 10)
    assert flat is not None and flat.z is None and flat.p_value is None and not flat.significant
    from_nothing = domain.compare(3, 10, 0, 10)
    assert from_nothing is not None and from_nothing.relative is None and from_nothing.absolute == pytest.approx(0.3)


def test_the_winner_is_the_significantly_best_variant_and_never_the_control() -> None:
    decided = domain.pick_winner({"A": (60, 200), "B": (40, 200), "control": (90, 100)})
    assert decided.winner == "A" and decided.p_value == pytest.approx(0.02092, abs=1e-5)
    assert domain.pick_winner({"B": (60, 200), "A": (40, 200)}).winner == "B"


def test_no_winner_without_significance_a_tie_or_a_rival() -> None:
    assert domain.pick_winner({"A": (30, 100), "B": (20, 100)}).winner is None
    assert domain.pick_winner({"A": (30, 100), "B": (30, 100)}).winner is None
    assert domain.pick_winner({"A": (30, 100), "control": (1, 100)}).winner is None
    assert domain.pick_winner({"A": (30, 100), "B": (0, 0)}).winner is None
    # The best must beat the runner-up, not only the weakest.
    assert domain.pick_winner({"A": (61, 200), "B": (60, 200), "C": (10, 200)}).winner is None


def test_after_a_winner_every_send_uses_it_but_held_out_users_stay_out() -> None:
    assert domain.variant_after_winner("B", "A") == "A"
    assert domain.variant_after_winner(None, "A") == "A"
    assert domain.variant_after_winner("control", "A") == "control"
    assert domain.variant_after_winner("global_control", "A") == "global_control"
    assert domain.variant_after_winner("B", None) == "B"


def test_counts_add_up_per_arm_and_day_and_control_is_the_baseline() -> None:
    from datetime import date

    from services.scheduler.results import service

    d1, d2 = date(2026, 12, 2), date(2026, 12, 3)
    total, arms, days = service.tally(
        [("A", d1, "requested", None, 10), ("A", d1, "suppressed", "frequency_cap", 2), (None, d2, "scheduled", None, 1),
         ("control", d1, "suppressed", "control", 5)],
        [("A", d1, "sent", 10), ("A", d2, "opened", 4)],
        [("A", d2, 3), ("control", d1, 1)],
    )
    assert (total.entered, total.suppressed, total.suppressed_by_rule) == (18, 7, {"frequency_cap": 2, "control": 5})
    assert (total.sent, total.opened, total.converted) == (10, 4, 4)
    assert (arms["A"].entered, arms["A"].converted, arms["default"].entered) == (12, 3, 1)
    assert (days["A"][d1].sent, days["A"][d2].opened, days["A"][d2].converted, days["A"][d1].converted) == (10, 4, 3, 0)
    assert service.baseline({"A": 10, "control": 5, "global_control": 2}) == "control"
    assert service.baseline({"A": 10, "global_control": 2}) == "global_control"
    assert service.baseline({"A": 10, "control": 0}) is None
