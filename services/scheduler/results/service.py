"""Results use cases: count engagement and conversions from resolved events, assemble the stats, decide experiments."""

import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import ResolvedEvent
from kernel.db import unit_of_work
from services.scheduler.models import Campaign
from services.scheduler.results import domain, repository
from services.scheduler.results.schemas import (
    CampaignResults,
    ConversionGoal,
    Counts,
    DayCounts,
    ExperimentOut,
    Rate,
    Uplift,
    VariantStats,
)

log = structlog.get_logger(__name__)

EXPERIMENT_POLL_SECONDS = 30.0  # experiments are decided hours after launch: a look every half minute is plenty
EXPERIMENT_BATCH = 50


def _text(value: Any, limit: int = 64) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def engagement_of(resolved: ResolvedEvent) -> repository.Outcome | None:
    """The send outcome a `$message_<outcome>` event reports, if it names its campaign and send."""
    event = resolved.event
    outcome = domain.engagement_outcome(event.display_name)
    props = event.properties
    campaign_id, send_id = _text(props.get("campaign_id")), _text(props.get("send_id"))
    if outcome is None or campaign_id is None or send_id is None:
        return None
    return repository.Outcome(
        resolved.workspace_id, campaign_id, send_id, outcome, _text(props.get("variant")), _text(props.get("channel"), 16),
        event.timestamp,
    )


def _reaches_goal(campaign_id: str, goal: dict[str, Any], resolved: ResolvedEvent, now: datetime) -> bool:
    """Whether the event is the campaign's goal; an event the conditions cannot read is no conversion (never a failed batch)."""
    try:
        return domain.goal_matches(goal, resolved.event.display_name, resolved.event.properties, now)
    except Exception as exc:
        log.warning("goal_unreadable", campaign_id=campaign_id, message_id=resolved.event.message_id, error=repr(exc))
        return False


async def record(session: AsyncSession, events: list[ResolvedEvent]) -> None:
    """Count the batch's engagement events (once per send and outcome) and the conversions its events make
    (once per campaign and user), set-based: a redelivered batch changes nothing."""
    outcomes = [o for resolved in events if (o := engagement_of(resolved)) is not None]
    await repository.record_engagement(session, outcomes)
    workspaces = sorted({resolved.workspace_id for resolved in events})
    goals: dict[str, list[Campaign]] = defaultdict(list)
    for campaign in await repository.campaigns_with_goals(session, workspaces):
        goals[campaign.workspace_id].append(campaign)
    now = datetime.now(UTC)
    hits = [
        repository.GoalEvent(
            resolved.workspace_id, campaign.id, resolved.profile_id, resolved.event.message_id, resolved.event.timestamp,
            int(campaign.conversion["within_hours"]),
        )
        for resolved in events
        for campaign in goals.get(resolved.workspace_id, [])
        if campaign.conversion and _reaches_goal(campaign.id, campaign.conversion, resolved, now)
    ]
    converted = await repository.record_conversions(session, hits)
    if converted:
        log.info("conversions_recorded", users=converted)


# --- stats ---------------------------------------------------------------------------------------


def _add(counts: Counts, field: str, n: int) -> None:
    setattr(counts, field, getattr(counts, field) + n)


def _suppressed(counts: Counts, rule: str | None, n: int) -> None:
    counts.suppressed += n
    key = rule or "unknown"
    counts.suppressed_by_rule[key] = counts.suppressed_by_rule.get(key, 0) + n


def tally(
    decisions: list[tuple[str | None, date, str, str | None, int]],
    outcomes: list[tuple[str | None, date, str, int]],
    conversions: list[tuple[str | None, date, int]],
) -> tuple[Counts, dict[str, Counts], dict[str, dict[date, DayCounts]]]:
    """Totals, totals per arm, and per arm and day, from the grouped rows."""
    total = Counts()
    arms: dict[str, Counts] = defaultdict(Counts)
    days: dict[str, dict[date, DayCounts]] = defaultdict(dict)

    def each(variant: str | None, day: date) -> tuple[Counts, Counts, Counts]:
        name = domain.arm(variant)
        daily = days[name].setdefault(day, DayCounts(day=day))
        return total, arms[name], daily

    for variant, day, status, rule, n in decisions:
        for counts in each(variant, day):
            _add(counts, "entered", n)
            if status == "suppressed":
                _suppressed(counts, rule, n)
    for variant, day, outcome, n in outcomes:
        for counts in each(variant, day):
            _add(counts, outcome, n)
    for variant, day, n in conversions:
        for counts in each(variant, day):
            _add(counts, "converted", n)
    return total, arms, days


def baseline(recipients: dict[str, int]) -> str | None:
    """The held-out arm variants are compared with: the campaign's control group, else the global control group."""
    return next((name for name in domain.HELD_OUT if recipients.get(name)), None)


async def stats(session: AsyncSession, campaign: Campaign, by_status: dict[str, int]) -> CampaignResults:
    """A campaign's results: totals, each arm's counts, conversion rate (95 % Wilson), uplift and daily series."""
    ws, cid = campaign.workspace_id, campaign.id
    total, arms, days = tally(
        await repository.decisions(session, ws, cid),
        await repository.outcomes(session, ws, cid),
        await repository.conversions(session, ws, cid),
    )
    reached = {domain.arm(v): n for v, n in (await repository.recipients(session, ws, cid)).items()}
    control = baseline(reached)
    variants = []
    for name in sorted(set(arms) | set(reached)):
        counts, n = arms.get(name, Counts()), reached.get(name, 0)
        interval = domain.wilson_interval(counts.converted, n)
        uplift = None
        if control and name != control and name not in domain.HELD_OUT:
            base = arms.get(control, Counts())
            test = domain.compare(counts.converted, n, base.converted, reached[control])
            if test is not None:
                uplift = Uplift(against=control, absolute=test.absolute, relative=test.relative, z=test.z,
                                p_value=test.p_value, significant=test.significant)
        variants.append(VariantStats(
            variant=name, recipients=n, totals=counts,
            conversion_rate=Rate(rate=counts.converted / n, low=interval.low, high=interval.high) if interval else None,
            uplift=uplift, daily=[days[name][d] for d in sorted(days.get(name, {}))],
        ))
    experiment = await repository.get_experiment(session, cid)
    return CampaignResults(
        campaign_id=cid, triggered=sum(by_status.values()), by_status=by_status,
        conversion=ConversionGoal.model_validate(campaign.conversion) if campaign.conversion else None,
        totals=total, variants=variants,
        experiment=ExperimentOut(
            metric=experiment.metric, decides_at=experiment.due_at, status=experiment.status, winner=experiment.winner,  # type: ignore[arg-type]
            p_value=experiment.p_value, reason=experiment.reason, decided_at=experiment.decided_at,
        ) if experiment else None,
    )


# --- experiments ---------------------------------------------------------------------------------


async def arm_results(session: AsyncSession, workspace_id: str, campaign_id: str, metric: str) -> dict[str, tuple[int, int]]:
    """(successes on `metric`, recipients) per arm, as the stats count them."""
    _, arms, _ = tally(
        [], await repository.outcomes(session, workspace_id, campaign_id), await repository.conversions(session, workspace_id, campaign_id)
    )
    reached = {domain.arm(v): n for v, n in (await repository.recipients(session, workspace_id, campaign_id)).items()}
    return {name: (getattr(arms.get(name, Counts()), metric), n) for name, n in reached.items()}


async def decide_due_experiments(session: AsyncSession, now: datetime, limit: int = EXPERIMENT_BATCH) -> int:
    """Start timers for newly launched experiments; decide those due (a winner, or none): how many were decided."""
    await repository.start_experiments(session, now)
    due = await repository.claim_due_experiments(session, now, limit)
    for experiment in due:
        arms = await arm_results(session, experiment.workspace_id, experiment.campaign_id, experiment.metric)
        decision = domain.pick_winner(arms)
        await repository.settle(session, experiment, decision.winner, decision.p_value, decision.reason, now)
        log.info("experiment_decided", campaign_id=experiment.campaign_id, winner=decision.winner, reason=decision.reason)
    return len(due)


async def winners(session: AsyncSession, campaign_ids: list[str]) -> dict[str, str]:
    """The decided winner of each campaign that has one: the variant every send uses from then on
    (apply it with domain.variant_after_winner when assigning a user's variant)."""
    return await repository.winners(session, campaign_ids)


async def run_experiments(sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event, poll_seconds: float = EXPERIMENT_POLL_SECONDS) -> None:
    """Decide due experiments until stopped; the timers are rows, so a restart loses nothing."""
    while not stop.is_set():
        try:
            async with unit_of_work(sessions) as session:
                await decide_due_experiments(session, datetime.now(UTC))
        except Exception as exc:
            log.warning("experiments_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):  # the poll's time passed: look again
            await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
