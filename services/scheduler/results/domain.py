"""Pure rules for a campaign's results: which events count, the statistics, and the experiment's winner.

- Engagement: each `$message_<outcome>` event of a send counts once per outcome (its `send_id`).
- Conversions: a user converts at most once per campaign, when they perform the goal event (with its
  `where` conditions) within `within_hours` after a send went out to them, or after they were held
  out (the campaign's control group, or the workspace's global control group).
- Statistics: a conversion rate is a binomial proportion with its 95 % Wilson score interval (good
  for small counts and rates near 0 or 1, unlike the normal approximation); a variant's uplift against
  control is the difference of rates, tested by the pooled two-proportion z-test (two-sided).
- Winner: after the experiment's time, the variant with the best rate on its metric wins if it beats
  every other variant significantly (p < 0.05); otherwise there is no winner and the split goes on.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from services.scheduler import domain as scheduling

Outcome = Literal["sent", "delivered", "failed", "bounced", "opened", "clicked", "dismissed", "unsubscribed"]
OUTCOMES: tuple[Outcome, ...] = (
    "sent", "delivered", "failed", "bounced", "opened", "clicked", "dismissed", "unsubscribed",
)
OUTCOME_EVENT_PREFIX = "$message_"
Metric = Literal["converted", "clicked", "opened"]
DEFAULT_ARM = "default"  # the arm of a campaign without variants (its sends carry no variant)
CONTROL = "control"
GLOBAL_CONTROL = "global_control"
HELD_OUT = (CONTROL, GLOBAL_CONTROL)  # arms whose users get nothing, and whose conversions are the baseline
ALPHA = 0.05
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


# An app reports that it showed an in-app message or card as `$message_viewed` (docs/channels.md): for an
# inbox message, being shown is what an open is for an email, so stats count it as opened.
OUTCOME_ALIASES: dict[str, Outcome] = {"viewed": "opened"}


def engagement_outcome(event_name: str) -> Outcome | None:
    """The outcome a Herald engagement event reports (`$message_opened` → "opened"), None for any other event."""
    if not event_name.startswith(OUTCOME_EVENT_PREFIX):
        return None
    outcome = event_name[len(OUTCOME_EVENT_PREFIX):]
    if outcome in OUTCOME_ALIASES:
        return OUTCOME_ALIASES[outcome]
    return outcome if outcome in OUTCOMES else None


def arm(variant: str | None) -> str:
    """The arm a send belongs to: its variant, or "default" for a campaign without variants."""
    return variant or DEFAULT_ARM


def goal_matches(goal: dict[str, Any], event_name: str, properties: dict[str, Any], now: datetime) -> bool:
    """The event is the conversion goal's event and satisfies every `where` condition (the shared grammar)."""
    return scheduling.matches_trigger(goal, event_name, properties, now)


def converts(opened_at: datetime, event_at: datetime, within_hours: int) -> bool:
    """An event at `event_at` converts a window opened (sent or held out) at `opened_at`: within the hours after it."""
    return opened_at <= event_at <= opened_at + timedelta(hours=within_hours)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def rate(successes: int, trials: int) -> float | None:
    """successes / trials, None without trials."""
    return successes / trials if trials else None


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval | None:
    """The Wilson score interval of a binomial proportion (95 % by default); None without trials."""
    if trials <= 0:
        return None
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Comparison:
    """One proportion against another: the absolute and relative difference, z and the two-sided p-value."""

    absolute: float
    relative: float | None  # None when the baseline rate is 0
    z: float | None  # None when the pooled rate is 0 or 1: no variance, no test
    p_value: float | None
    significant: bool


def compare(successes: int, trials: int, base_successes: int, base_trials: int, alpha: float = ALPHA) -> Comparison | None:
    """Rate a against rate b (the baseline) by the pooled two-proportion z-test; None when either has no trials."""
    if trials <= 0 or base_trials <= 0:
        return None
    p1, p2 = successes / trials, base_successes / base_trials
    relative = (p1 - p2) / p2 if p2 else None
    pooled = (successes + base_successes) / (trials + base_trials)
    variance = pooled * (1 - pooled) * (1 / trials + 1 / base_trials)
    if variance <= 0:
        return Comparison(p1 - p2, relative, None, None, False)
    z = (p1 - p2) / math.sqrt(variance)
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return Comparison(p1 - p2, relative, z, p_value, p_value < alpha)


@dataclass(frozen=True)
class Decision:
    """What an experiment's timer decided: the winning variant (None: no significant best) and why."""

    winner: str | None
    reason: str
    p_value: float | None = None


def pick_winner(arms: dict[str, tuple[int, int]], alpha: float = ALPHA) -> Decision:
    """The variant with the best rate if it beats every other variant significantly, from (successes, trials) per arm.

    Held-out arms never win (they get nothing). A tie on the best rate, or a best that is not significantly
    better than the runner-up (the hardest one to beat), is no winner.
    """
    candidates = {name: counts for name, counts in arms.items() if name not in HELD_OUT and counts[1] > 0}
    if len(candidates) < 2:
        return Decision(None, "fewer than two variants with recipients")
    ranked = sorted(candidates.items(), key=lambda item: (-(item[1][0] / item[1][1]), item[0]))
    (best, (x1, n1)), (runner_up, (x2, n2)) = ranked[0], ranked[1]
    if x1 * n2 == x2 * n1:
        return Decision(None, f"{best} and {runner_up} have the same rate")
    test = compare(x1, n1, x2, n2, alpha)
    if test is None or not test.significant:
        p = test.p_value if test else None
        return Decision(None, f"{best} is not significantly better than {runner_up}", p)
    return Decision(best, f"{best} beats {runner_up} (p = {test.p_value:.4g})", test.p_value)


def variant_after_winner(assigned: str | None, winner: str | None) -> str | None:
    """The variant a send uses once an experiment has a winner: the winner, except for held-out users (they stay out)."""
    if winner is None or assigned in HELD_OUT:
        return assigned
    return winner
