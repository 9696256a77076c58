"""Results queries: engagement and conversions recorded set-based and idempotently, counts for the stats, experiments."""

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ARRAY, DateTime, Integer, String, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.models import Campaign, ScheduledSend
from services.scheduler.results.domain import HELD_OUT
from services.scheduler.results.models import Conversion, Engagement, Experiment


@dataclass(frozen=True)
class Outcome:
    """One `$message_<outcome>` event, as its properties name the send."""

    workspace_id: str
    campaign_id: str
    send_id: str
    outcome: str
    variant: str | None
    channel: str | None
    at: datetime


# Only an outcome of a send this scheduler decided for that campaign counts (an SDK cannot forge stats for a
# send that does not exist); the event's variant, else the send's.
_ENGAGEMENT = text(
    """
    INSERT INTO scheduler.engagement (send_id, outcome, workspace_id, campaign_id, variant, channel, at)
    SELECT e.send_id, e.outcome, s.workspace_id, s.campaign_id, coalesce(e.variant, s.variant), coalesce(e.channel, s.channel), e.at
    FROM unnest(:workspaces, :campaigns, :sends, :outcomes, :variants, :channels, :ats)
         AS e(workspace_id, campaign_id, send_id, outcome, variant, channel, at)
    JOIN scheduler.sends s ON s.send_id = e.send_id AND s.workspace_id = e.workspace_id AND s.campaign_id = e.campaign_id
    ON CONFLICT (send_id, outcome) DO NOTHING
    """
).bindparams(
    bindparam("workspaces", type_=ARRAY(String)), bindparam("campaigns", type_=ARRAY(String)),
    bindparam("sends", type_=ARRAY(String)), bindparam("outcomes", type_=ARRAY(String)),
    bindparam("variants", type_=ARRAY(String)), bindparam("channels", type_=ARRAY(String)),
    bindparam("ats", type_=ARRAY(DateTime(timezone=True))),
)


async def record_engagement(session: AsyncSession, outcomes: list[Outcome]) -> int:
    """Count each (send, outcome) once; returns how many were new."""
    if not outcomes:
        return 0
    result = await session.execute(_ENGAGEMENT, {
        "workspaces": [o.workspace_id for o in outcomes], "campaigns": [o.campaign_id for o in outcomes],
        "sends": [o.send_id for o in outcomes], "outcomes": [o.outcome for o in outcomes],
        "variants": [o.variant for o in outcomes], "channels": [o.channel for o in outcomes],
        "ats": [o.at for o in outcomes],
    })
    return result.rowcount or 0  # type: ignore[attr-defined]


@dataclass(frozen=True)
class GoalEvent:
    """A goal event a user performed, for one campaign whose goal it matches."""

    workspace_id: str
    campaign_id: str
    profile_id: str
    message_id: str
    at: datetime
    within_hours: int


# A window opens when a send went out (requested) or when the user was held out (a suppressed send of a control
# arm), at the moment the scheduler decided it (updated_at); a user converts once per campaign, in the window of
# their latest send before the event.
_CONVERSIONS = text(
    f"""
    INSERT INTO scheduler.conversions
        (campaign_id, profile_id, workspace_id, user_id, variant, send_id, message_id, opened_at, converted_at)
    SELECT DISTINCT ON (g.campaign_id, g.profile_id)
           g.campaign_id, g.profile_id, s.workspace_id, s.user_id, s.variant, s.send_id, g.message_id, s.updated_at, g.at
    FROM unnest(:workspaces, :campaigns, :profiles, :messages, :ats, :hours)
         AS g(workspace_id, campaign_id, profile_id, message_id, at, within_hours)
    JOIN scheduler.sends s
      ON s.workspace_id = g.workspace_id AND s.campaign_id = g.campaign_id AND s.profile_id = g.profile_id
    WHERE (s.status = 'requested' OR (s.status = 'suppressed' AND s.variant IN ({", ".join(f"'{a}'" for a in HELD_OUT)})))
      AND s.updated_at <= g.at AND g.at <= s.updated_at + make_interval(hours => g.within_hours)
    ORDER BY g.campaign_id, g.profile_id, g.at, s.updated_at DESC
    ON CONFLICT (campaign_id, profile_id) DO NOTHING
    """
).bindparams(
    bindparam("workspaces", type_=ARRAY(String)), bindparam("campaigns", type_=ARRAY(String)),
    bindparam("profiles", type_=ARRAY(String)), bindparam("messages", type_=ARRAY(String)),
    bindparam("ats", type_=ARRAY(DateTime(timezone=True))), bindparam("hours", type_=ARRAY(Integer)),
)


async def record_conversions(session: AsyncSession, goals: list[GoalEvent]) -> int:
    """Record the users these goal events convert (once per campaign and user); returns how many were new."""
    if not goals:
        return 0
    result = await session.execute(_CONVERSIONS, {
        "workspaces": [g.workspace_id for g in goals], "campaigns": [g.campaign_id for g in goals],
        "profiles": [g.profile_id for g in goals], "messages": [g.message_id for g in goals],
        "ats": [g.at for g in goals], "hours": [g.within_hours for g in goals],
    })
    return result.rowcount or 0  # type: ignore[attr-defined]


async def campaigns_with_goals(session: AsyncSession, workspace_ids: list[str]) -> list[Campaign]:
    """Campaigns of these workspaces that have a conversion goal and have been launched (drafts convert nobody)."""
    rows = await session.scalars(
        select(Campaign).where(
            Campaign.workspace_id.in_(workspace_ids), func.jsonb_typeof(Campaign.conversion) == "object",
            Campaign.status != "draft",
        )
    )
    return list(rows)


# --- counts for the stats ---------------------------------------------------------------------


async def decisions(session: AsyncSession, workspace_id: str, campaign_id: str) -> list[tuple[str | None, date, str, str | None, int]]:
    """(variant, UTC day, status, rule, sends) for the campaign's send decisions."""
    s = ScheduledSend
    day = func.date(func.timezone("UTC", s.created_at))
    rows = await session.execute(
        select(s.variant, day, s.status, s.rule, func.count())
        .where(s.workspace_id == workspace_id, s.campaign_id == campaign_id)
        .group_by(s.variant, day, s.status, s.rule)
    )
    return [(v, d, st, r, int(n)) for v, d, st, r, n in rows]


async def recipients(session: AsyncSession, workspace_id: str, campaign_id: str) -> dict[str | None, int]:
    """Distinct users per arm whose window opened: sent to, or (control arms) held out."""
    s = ScheduledSend
    opened = (s.status == "requested") | ((s.status == "suppressed") & s.variant.in_(HELD_OUT))
    rows = await session.execute(
        select(s.variant, func.count(func.distinct(s.profile_id)))
        .where(s.workspace_id == workspace_id, s.campaign_id == campaign_id, opened)
        .group_by(s.variant)
    )
    return {v: int(n) for v, n in rows}


async def outcomes(session: AsyncSession, workspace_id: str, campaign_id: str) -> list[tuple[str | None, date, str, int]]:
    """(variant, UTC day, outcome, sends) for the campaign's engagement."""
    e = Engagement
    day = func.date(func.timezone("UTC", e.at))
    rows = await session.execute(
        select(e.variant, day, e.outcome, func.count())
        .where(e.workspace_id == workspace_id, e.campaign_id == campaign_id)
        .group_by(e.variant, day, e.outcome)
    )
    return [(v, d, o, int(n)) for v, d, o, n in rows]


async def conversions(session: AsyncSession, workspace_id: str, campaign_id: str) -> list[tuple[str | None, date, int]]:
    """(variant, UTC day, users) for the campaign's conversions."""
    c = Conversion
    day = func.date(func.timezone("UTC", c.converted_at))
    rows = await session.execute(
        select(c.variant, day, func.count())
        .where(c.workspace_id == workspace_id, c.campaign_id == campaign_id)
        .group_by(c.variant, day)
    )
    return [(v, d, int(n)) for v, d, n in rows]


# --- experiments -------------------------------------------------------------------------------


_START_EXPERIMENTS = text(
    """
    INSERT INTO scheduler.experiments (campaign_id, workspace_id, metric, due_at, status)
    SELECT c.id, c.workspace_id, coalesce(c.experiment->>'metric', 'converted'),
           :now + make_interval(hours => (c.experiment->>'auto_winner_after_hours')::int), 'pending'
    FROM scheduler.campaigns c
    WHERE jsonb_typeof(c.experiment) = 'object' AND c.status = 'active'
      AND NOT EXISTS (SELECT 1 FROM scheduler.experiments x WHERE x.campaign_id = c.id)
    ON CONFLICT (campaign_id) DO NOTHING
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)))


async def start_experiments(session: AsyncSession, now: datetime) -> int:
    """Start the timer of every active campaign with an experiment that has none yet (it runs from its launch)."""
    result = await session.execute(_START_EXPERIMENTS, {"now": now})
    return result.rowcount or 0  # type: ignore[attr-defined]


async def claim_due_experiments(session: AsyncSession, now: datetime, limit: int) -> list[Experiment]:
    """Due experiments; other replicas skip the rows this one locked."""
    rows = await session.scalars(
        select(Experiment)
        .where(Experiment.status == "pending", Experiment.due_at <= now)
        .order_by(Experiment.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def get_experiment(session: AsyncSession, campaign_id: str) -> Experiment | None:
    return await session.get(Experiment, campaign_id)


async def winners(session: AsyncSession, campaign_ids: list[str]) -> dict[str, str]:
    """The decided winner of each of these campaigns that has one."""
    if not campaign_ids:
        return {}
    rows = await session.execute(
        select(Experiment.campaign_id, Experiment.winner).where(
            Experiment.campaign_id.in_(campaign_ids), Experiment.winner.is_not(None)
        )
    )
    return {c: w for c, w in rows if w}


async def settle(session: AsyncSession, experiment: Experiment, winner: str | None, p_value: float | None, reason: str, now: datetime) -> None:
    await session.execute(
        update(Experiment)
        .where(Experiment.campaign_id == experiment.campaign_id)
        .values(status="decided", winner=winner, p_value=p_value, reason=reason[:500], decided_at=now)
    )

