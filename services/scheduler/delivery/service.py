"""Delivery-policy use cases: the workspace's rules, and the policy applied to a batch of sends being released."""

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.delivery import domain, repository
from services.scheduler.delivery.models import DeliverySettings
from services.scheduler.delivery.schemas import DeliverySettingsIn
from services.scheduler.models import Campaign, ScheduledSend
from services.scheduler.results import service as results


async def save_settings(session: AsyncSession, workspace_id: str, body: DeliverySettingsIn) -> DeliverySettings:
    """Replace the workspace's delivery rules (they apply to every send released from now on)."""
    return await repository.save_settings(session, workspace_id, body.model_dump(mode="json"))


def campaign_rules(campaign: Campaign, winner: str | None = None) -> domain.CampaignRules:
    """What of a stored campaign the policy reads (and its experiment's winner, once decided)."""
    delivery = campaign.delivery or {}
    window = delivery.get("window")
    return domain.CampaignRules(
        id=campaign.id,
        channel=campaign.channel,
        message=campaign.message,
        transactional=campaign.transactional,
        window=domain.window_of(window) if window else None,
        outside=window.get("outside", "wait") if window else "wait",
        rate_per_minute=delivery.get("rate_per_minute"),
        variants=tuple(campaign.variants or ()),
        control_percent=campaign.control_percent or 0,
        locales=campaign.locales,
        winner=winner,
    )


async def apply_policy(
    session: AsyncSession, pairs: Sequence[tuple[ScheduledSend, Campaign]], now: datetime
) -> list[domain.Outcome]:
    """The policy's outcome for each claimed send, in order: reads set-based, locks, then decides one by one.

    Under a lock per (workspace, profile) for the sends that caps apply to, it reads each user's
    ledger; a send that goes out is counted in memory at once, so two sends to one user in a batch
    see each other, and `count_sent` writes them to the ledger before the transaction commits. The rate
    limit reserves this minute's allowance per campaign in one upsert, gives back what it did not
    use, and spreads the rest over the next minutes.
    """
    by_workspace: dict[str, list[str]] = defaultdict(list)
    for send, _ in pairs:
        by_workspace[send.workspace_id].append(send.profile_id)
    rules = {ws: await repository.delivery_settings(session, ws) for ws in by_workspace}
    await repository.lock_profiles(
        session,
        [domain.lock_key(s.workspace_id, s.profile_id) for s, c in pairs if rules[s.workspace_id].frequency_caps and not c.transactional],
    )
    seen: dict[tuple[str, str], repository.Seen] = {}
    history: dict[tuple[str, str], list[domain.Sent]] = defaultdict(list)
    for ws, profile_ids in by_workspace.items():
        found = await repository.recipients(session, ws, profile_ids, rules[ws].quiet_hours_attribute)
        seen.update({(ws, pid): value for pid, value in found.items()})
        if days := domain.longest_cap_days(rules[ws].frequency_caps):
            sent = await repository.history(session, ws, profile_ids, now - timedelta(days=days))
            history.update({(ws, pid): value for pid, value in sent.items()})

    winners = await results.winners(session, sorted({c.id for _, c in pairs if c.variants}))
    minute = domain.minute_of(now)
    rated = {c.id: c for _, c in pairs if campaign_rules(c).rate_per_minute}
    wanted = Counter(c.id for _, c in pairs if c.id in rated)
    allowance: dict[str, int] = {}
    for campaign_id, count in sorted(wanted.items()):  # one order on every replica
        rate = int((rated[campaign_id].delivery or {})["rate_per_minute"])
        before = await repository.reserve_rate(session, campaign_id, minute, count)
        allowance[campaign_id] = max(0, min(count, rate - before))
    unused = dict(wanted)
    overflow: Counter[str] = Counter()

    outcomes: list[domain.Outcome] = []
    for send, campaign in pairs:
        key = (send.workspace_id, send.profile_id)
        workspace = rules[send.workspace_id]
        policy = campaign_rules(campaign, winners.get(campaign.id))
        user = recipient(send, seen.get(key), workspace, tuple(history[key]))
        outcome = domain.decide(workspace, policy, user, now)
        if isinstance(outcome, domain.Go) and policy.rate_per_minute:
            if allowance[campaign.id] > 0:
                allowance[campaign.id] -= 1
                unused[campaign.id] -= 1
            else:
                until = domain.rate_overflow_due(overflow[campaign.id], policy.rate_per_minute, minute)
                overflow[campaign.id] += 1
                outcome = domain.Wait(
                    "rate_limit", f"rate limit: {policy.rate_per_minute} a minute; decided again at {until:%H:%M} UTC",
                    until, outcome.variant,
                )
        if isinstance(outcome, domain.Go) and not campaign.transactional:
            history[key].append(domain.Sent(campaign.channel, now))
        outcomes.append(outcome)
    for campaign_id, count in unused.items():
        await repository.return_rate(session, campaign_id, minute, count)
    if rated:
        await repository.forget_old_slots(session, sorted(rated), minute - timedelta(minutes=1))
    return outcomes


def recipient(send: ScheduledSend, seen: repository.Seen | None, rules: domain.Rules, history: tuple[domain.Sent, ...]) -> domain.Recipient:
    """The user as the policy sees them: their bucket, time zone (else the workspace's), locale and quiet hours."""
    zone = domain.zone_named(seen.time_zone if seen else None) or domain.zone_named(rules.default_time_zone) or ZoneInfo("UTC")
    return domain.Recipient(
        bucket=domain.bucket(send.workspace_id, send.profile_id),
        zone=zone,
        locale=domain.locale_tag(seen.language, seen.device_locale) if seen else None,
        quiet_hours=seen.quiet_hours if seen else None,
        history=history,
    )


async def count_sent(session: AsyncSession, sent: Sequence[tuple[ScheduledSend, Campaign]], now: datetime) -> None:
    """Write the sends that went out to the cap ledger (transactional ones do not count)."""
    rows: list[dict[str, Any]] = [
        {"send_id": s.send_id, "workspace_id": s.workspace_id, "profile_id": s.profile_id, "campaign_id": c.id,
         "channel": c.channel, "sent_at": now.astimezone(UTC)}
        for s, c in sent
        if not c.transactional
    ]
    await repository.record_sent(session, rows)
