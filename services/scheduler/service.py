"""Scheduler use cases: campaigns, trigger → durable send, due send → SENDS."""

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi.exceptions import RequestValidationError
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus, pagination
from kernel.contracts import (
    AUDIENCE_QUERY_SUBJECT,
    AudienceAnswer,
    AudienceQuery,
    MembershipChanged,
    ResolvedEvent,
    SendRequested,
    TriggerEvent,
)
from kernel.db import unit_of_work
from kernel.errors import Conflict, NotFound, Unavailable, Unprocessable
from services.scheduler import domain, repository
from services.scheduler.delivery import domain as delivery_domain
from services.scheduler.delivery import repository as delivery_repository
from services.scheduler.delivery import service as delivery_service
from services.scheduler.models import Campaign, Occurrence, ScheduledSend
from services.scheduler.schemas import Audience, CampaignIn, CampaignPatch, RecipientError, TriggerIn, TriggerOut
from services.scheduler.timing import service as timing

log = structlog.get_logger(__name__)


async def in_audience(nc: NATS, workspace_id: str, segment_id: str, profile_id: str) -> AudienceAnswer:
    """Ask the segmenter, live, whether a profile is in a segment."""
    return await bus.request(
        nc,
        AUDIENCE_QUERY_SUBJECT,
        AudienceQuery(workspace_id=workspace_id, segment_id=segment_id, profile_id=profile_id),
        AudienceAnswer,
    )


def named_segments(body: CampaignIn) -> list[tuple[tuple[str | int, ...], str]]:
    """Every segment a campaign names, with where: its audience (included and excluded) and its segment entry."""
    named: list[tuple[tuple[str | int, ...], str]] = []
    if body.audience is not None:
        if body.audience.segment_id:
            named.append((("audience", "segment_id"), body.audience.segment_id))
        named += [(("audience", "segment_ids", i), s) for i, s in enumerate(body.audience.segment_ids)]
        named += [(("audience", "exclude_segment_ids", i), s) for i, s in enumerate(body.audience.exclude_segment_ids)]
    if body.segment_entry is not None:
        named.append((("segment_entry", "segment_id"), body.segment_entry.segment_id))
    return named


async def check_audience(nc: NATS, workspace_id: str, body: CampaignIn) -> None:
    """A 422 naming the field unless every segment the campaign names exists in the workspace and is live."""
    for loc, segment_id in named_segments(body):
        try:
            answer = await in_audience(nc, workspace_id, segment_id, "-")
        except Exception as exc:
            raise Unavailable("the segmenter did not answer; retry") from exc
        if not answer.found:
            raise Unprocessable([{"loc": ["body", *loc], "msg": f"no segment {segment_id!r} in this workspace"}])
        if answer.archived:
            raise Unprocessable([{"loc": ["body", *loc], "msg": f"segment {segment_id!r} is archived: it matches nobody"}])


async def check_subscription_group(session: AsyncSession, workspace_id: str, body: CampaignIn) -> None:
    """A 422 naming `subscription_group_id` unless it is a live subscription group of this workspace on the
    campaign's channel (read through the profiles service's published view)."""
    if body.subscription_group_id is None:
        return
    group = await repository.subscription_group(session, workspace_id, body.subscription_group_id)
    problem = (
        f"no subscription group {body.subscription_group_id!r} in this workspace" if group is None
        else f"subscription group {body.subscription_group_id!r} is archived" if group.archived_at is not None
        else f"subscription group {body.subscription_group_id!r} is on channel {group.channel}, not {body.channel}"
        if group.channel != body.channel else None
    )
    if problem is not None:
        raise Unprocessable([{"loc": ["body", "subscription_group_id"], "msg": problem}])


def check_schedule(body: CampaignIn, now: datetime) -> None:
    """A 422 naming `schedule.at` when the schedule starts in the past (for everyone it could reach)."""
    if body.schedule is not None and body.schedule.rules().has_passed(now):
        raise Unprocessable([{
            "loc": ["body", "schedule", "at"],
            "msg": f"{body.schedule.at.isoformat()} has passed"
            + (" in every time zone" if body.schedule.local_time else "") + ": give a time in the future",
        }])


def campaign_fields(body: CampaignIn) -> dict[str, Any]:
    """A checked campaign as its row stores it."""
    return {
        "name": body.name,
        "channel": body.channel,
        "trigger": body.trigger.model_dump(mode="json") if body.trigger else None,
        "schedule": body.schedule.model_dump(mode="json") if body.schedule else None,
        "segment_entry": body.segment_entry.model_dump(mode="json") if body.segment_entry else None,
        "reeligible_after_days": body.reeligible_after_days,
        "max_sends_per_user": body.max_sends_per_user,
        "audience": body.audience.model_dump(mode="json") if body.audience else None,
        "delay_seconds": body.delay_seconds,
        "cancel_on": [exception.stored() for exception in body.cancel_on],
        "starts_at": body.starts_at,
        "ends_at": body.ends_at,
        "message": body.message,
        "subscription_group_id": body.subscription_group_id,
        # Delivery policy (services/scheduler/delivery): exemptions, window and rate, experiment arms, translations.
        "transactional": body.transactional,
        "delivery": body.delivery.model_dump(mode="json", exclude_none=True) if body.delivery else None,
        "variants": [v.model_dump(mode="json", exclude_none=True) for v in body.variants] if body.variants else None,
        "control_percent": body.control_percent,
        "locales": body.locales,
        # Results (services/scheduler/results): the conversion goal and the automatic winner.
        "conversion": body.conversion.model_dump(mode="json") if body.conversion else None,
        "experiment": body.experiment.model_dump(mode="json") if body.experiment else None,
    }


async def create_campaign(session: AsyncSession, nc: NATS, workspace_id: str, body: CampaignIn) -> Campaign:
    """Store a draft campaign after checking that its segments exist and its schedule is ahead."""
    check_schedule(body, datetime.now(UTC))
    await check_audience(nc, workspace_id, body)
    await check_subscription_group(session, workspace_id, body)
    campaign = Campaign(id=f"cmp_{secrets.token_hex(8)}", workspace_id=workspace_id, status="draft", **campaign_fields(body))
    await repository.add_campaign(session, campaign)
    return campaign


def as_submitted(campaign: Campaign) -> dict[str, Any]:
    """A stored campaign as a `CampaignIn` body (its push or email app as `app_id`)."""
    body: dict[str, Any] = {field: getattr(campaign, field) for field in STORED}
    if isinstance(app_id := campaign.message.get("app_id"), str):
        body["app_id"] = app_id
    return body


# A campaign's columns that a body sets (an app id is kept in the message).
STORED = (
    "name", "channel", "trigger", "audience", "delay_seconds", "cancel_on", "starts_at", "ends_at", "message",
    "schedule", "segment_entry", "reeligible_after_days", "max_sends_per_user",
    "conversion", "experiment",
    "transactional", "delivery", "variants", "control_percent", "locales", "subscription_group_id",
)


async def update_campaign(session: AsyncSession, nc: NATS, workspace_id: str, campaign_id: str, patch: CampaignPatch) -> Campaign:
    """Change the fields a patch gives (each replaces the stored one whole; null clears an optional one).

    The result is checked as a new campaign is (templates, message, times: a 422 naming the field), then
    against what the campaign's status allows (a 409 saying why: see domain.edit_refusal). A field given
    with its stored value is no change. Sends already decided keep their channel and due time; what they
    say is read when they go out, so a new message reaches them too.
    """
    campaign = await get_campaign(session, workspace_id, campaign_id, lock=True)
    given = patch.model_dump(mode="json", by_alias=True, include=patch.model_fields_set)
    submitted = as_submitted(campaign)
    if "app_id" in given and "message" not in given:  # the stored message carries the old app
        submitted["message"] = {k: v for k, v in campaign.message.items() if k != "app_id"}
    try:
        body = CampaignIn.model_validate({**submitted, **given})
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None
    fields = campaign_fields(body)
    changed = {field for field, value in fields.items() if value != getattr(campaign, field)}
    if refusal := domain.edit_refusal(campaign.status, changed):
        raise Conflict(refusal, error="not_editable")
    if "schedule" in changed:
        check_schedule(body, datetime.now(UTC))
    if {"audience", "segment_entry"} & changed:
        await check_audience(nc, workspace_id, body)
    if {"subscription_group_id", "channel"} & changed:
        await check_subscription_group(session, workspace_id, body)
    for field in changed:
        setattr(campaign, field, fields[field])
    if changed:
        campaign.updated_at = datetime.now(UTC)
        await session.flush()
    return campaign


async def archive(session: AsyncSession, workspace_id: str, campaign_id: str) -> Campaign:
    """Archive a campaign: it stops triggering, its pending sends are cancelled, and it leaves lists unless asked
    for. Archiving an archived campaign changes nothing."""
    campaign = await get_campaign(session, workspace_id, campaign_id, lock=True)
    if campaign.status != "archived":
        campaign.status = "archived"
        campaign.updated_at = datetime.now(UTC)
        cancelled = await repository.cancel_all_pending(session, workspace_id, campaign.id, "campaign archived")
        await repository.replace_pending_occurrence(session, campaign, None)
        log.info("campaign_archived", workspace_id=workspace_id, campaign_id=campaign.id, cancelled=cancelled)
        await session.flush()
    return campaign


async def unarchive(session: AsyncSession, workspace_id: str, campaign_id: str) -> Campaign:
    """Bring an archived campaign back as a draft (launch it to send again); another status is answered as it is."""
    campaign = await get_campaign(session, workspace_id, campaign_id, lock=True)
    if campaign.status == "archived":
        campaign.status = "draft"
        campaign.updated_at = datetime.now(UTC)
        await session.flush()
    return campaign


async def duplicate(session: AsyncSession, workspace_id: str, campaign_id: str, name: str | None) -> Campaign:
    """A draft copy of a campaign (of any status), named `name` or "<its name> (copy)"."""
    source = await get_campaign(session, workspace_id, campaign_id)
    copy_name = name if name is not None else f"{source.name[:MAX_NAME - len(COPY_SUFFIX)]}{COPY_SUFFIX}"
    campaign = Campaign(
        id=f"cmp_{secrets.token_hex(8)}", workspace_id=workspace_id, status="draft",
        **{field: getattr(source, field) for field in STORED} | {"name": copy_name},
    )
    await repository.add_campaign(session, campaign)
    return campaign


COPY_SUFFIX = " (copy)"
MAX_NAME = 200


async def page(
    session: AsyncSession, workspace_id: str, query: repository.CampaignQuery, cursor: str | None, limit: int
) -> tuple[list[Campaign], str | None]:
    """One page of the workspace's campaigns, newest first, and the cursor of the next page (None: the last)."""
    rows = await repository.page_of_campaigns(session, workspace_id, query, pagination.newest_first_position(cursor), limit + 1)
    return pagination.next_page(rows, limit, lambda c: (c.created_at, c.id))


async def get_campaign(session: AsyncSession, workspace_id: str, campaign_id: str, lock: bool = False) -> Campaign:
    campaign = await repository.get_campaign(session, workspace_id, campaign_id, lock)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id!r} in this workspace")
    return campaign


async def set_status(
    session: AsyncSession, workspace_id: str, campaign_id: str, action: str, now: datetime | None = None
) -> Campaign:
    """Launch (draft/paused → active) or pause (active → paused) a campaign.

    Launching a scheduled campaign schedules its next occurrence as of `now` (domain.Schedule.first_to_decide);
    a pause holds it, and launching again schedules afresh.
    """
    now = now or datetime.now(UTC)
    campaign = await get_campaign(session, workspace_id, campaign_id, lock=True)
    if action == "launch":
        if campaign.status == "archived":
            raise Conflict("this campaign is archived: unarchive it (it becomes a draft) or duplicate it", error="not_editable")
        if campaign.ends_at and campaign.ends_at <= now:
            raise Conflict("this campaign's ends_at has passed; it cannot be launched")
        if campaign.status == "active":
            return campaign
        if campaign.schedule:
            await schedule_first_occurrence(session, campaign, now)
        campaign.status = "active"
    else:
        if campaign.status != "active":
            raise Conflict(f"only an active campaign can be paused (it is {campaign.status})")
        campaign.status = "paused"
    campaign.updated_at = datetime.now(UTC)
    await session.flush()
    return campaign


async def audience_refusal(nc: NATS, workspace_id: str, audience: dict[str, Any] | None, profile_id: str) -> str | None:
    """Why a profile is outside a campaign's audience now (asking the segmenter live), or None when it is in."""
    if not audience:
        return None
    shape = Audience.model_validate(audience)
    included = shape.included()
    if included:
        answers = [await in_audience(nc, workspace_id, segment_id, profile_id) for segment_id in included]
        if not any(answer.member for answer in answers):
            return f"not in segment {' or '.join(included)}"
    for segment_id in shape.exclude_segment_ids:
        if (await in_audience(nc, workspace_id, segment_id, profile_id)).member:
            return f"in excluded segment {segment_id}"
    return None


async def on_events(
    session: AsyncSession, nc: NATS, events: list[tuple[ResolvedEvent, str | None]]
) -> int:
    """Match a batch of (event, correlation id) against their workspaces' active campaigns, read
    once per workspace. Returns how many sends are due at once (delay 0), to release them now."""
    campaigns: dict[str, list[Campaign]] = {}
    due_now = 0
    for resolved, correlation_id in events:
        if resolved.workspace_id not in campaigns:
            campaigns[resolved.workspace_id] = await repository.active_campaigns(session, resolved.workspace_id)
        due_now += await _on_event(session, nc, resolved, campaigns[resolved.workspace_id], correlation_id)
    return due_now


async def _on_event(
    session: AsyncSession, nc: NATS, resolved: ResolvedEvent, campaigns: list[Campaign], correlation_id: str | None
) -> int:
    """Cancel sends this event is an exception for; schedule sends it triggers; count those due now."""
    event = resolved.event
    name = event.display_name
    now = datetime.now(UTC)
    due_now = 0
    for campaign in campaigns:
        if any(domain.matches_exception(exception, name, event.properties, now) for exception in campaign.cancel_on):
            await repository.cancel_pending(
                session, resolved.workspace_id, campaign.id, resolved.profile_id, event.timestamp,
                f"exception event {name!r} performed",
            )
        if not campaign.trigger or not domain.matches_trigger(campaign.trigger, name, event.properties, now):
            continue
        if domain.is_own_engagement(campaign.id, name, event.properties):
            continue  # a campaign's own sends never trigger it again: no loop
        if not domain.in_window(campaign.starts_at, campaign.ends_at, now):
            continue
        status, reason, rule = "scheduled", None, None
        if refusal := await audience_refusal(nc, resolved.workspace_id, campaign.audience, resolved.profile_id):
            status, reason = "not_in_audience", f"{refusal} when triggered"
        elif campaign.reeligible_after_days is not None or campaign.max_sends_per_user is not None:
            entries, last = await repository.prior_entries(session, resolved.workspace_id, campaign.id, resolved.profile_id)
            if refusal := domain.reentry_refusal(entries, last, now, campaign.reeligible_after_days, campaign.max_sends_per_user):
                status, reason, rule = "suppressed", refusal, "reeligibility"
        trigger = TriggerEvent(
            message_id=event.message_id,
            name=name,
            properties=event.properties,
            timestamp=event.timestamp,
            correlation_id=correlation_id,
        )
        due_now += int(status == "scheduled" and campaign.delay_seconds == 0)
        await repository.record_send(
            session,
            {
                "send_id": domain.send_id(campaign.id, event.message_id, resolved.profile_id),
                "workspace_id": resolved.workspace_id,
                "campaign_id": campaign.id,
                "profile_id": resolved.profile_id,
                "user_id": resolved.user_id,
                "channel": campaign.channel,
                "status": status,
                "reason": reason,
                "rule": rule,
                "trigger": trigger.model_dump(mode="json"),
                "triggered_at": event.timestamp,
                "due_at": now + timedelta(seconds=campaign.delay_seconds),
            },
        )
    return due_now


RECHECK_AFTER = timedelta(seconds=5)  # a send whose check failed (the segmenter down) is looked at again


async def release_due(
    session: AsyncSession, nc: NATS, limit: int, now: datetime | None = None, workspace_id: str | None = None
) -> list[SendRequested]:
    """Claim sends due by `now` (of one workspace, when given) and decide each: cancelled, out of audience, stopped
    or held by the delivery policy, or requested (returned).

    First each send's own checks (the campaign ended, an exception event, the audience), one by one:
    one whose audience cannot be checked now waits a little and is looked at again. Then the delivery
    policy over the rest at once (services/scheduler/delivery): global control group, frequency caps,
    delivery window, the campaign's control group, rate limit. A stopped send is `suppressed` with the
    `rule` and a reason; a held one stays `scheduled`, due when it may go, with the rule and reason
    saying why. One whose chosen message no longer fits the contract is cancelled with the reason.
    Neither holds back the others.
    """
    now = now or datetime.now(UTC)
    passed: list[tuple[ScheduledSend, Campaign]] = []
    for send, campaign in await repository.claim_due(session, limit, now, workspace_id):
        send.updated_at = now
        try:
            decision = await _decide(session, nc, send, campaign, now)
        except Exception as exc:
            log.warning("send_decision_deferred", send_id=send.send_id, campaign_id=campaign.id, error=repr(exc))
            send.due_at = now + RECHECK_AFTER
            continue
        if decision is not None:
            send.status, send.reason = decision
            continue
        passed.append((send, campaign))
    requested: list[SendRequested] = []
    went: list[tuple[ScheduledSend, Campaign]] = []
    with session.no_autoflush:  # the claimed rows are written once, below, not flushed half-decided by the policy's reads
        outcomes = await delivery_service.apply_policy(session, passed, now)
    for (send, campaign), outcome in zip(passed, outcomes, strict=True):
        send.variant = outcome.variant
        if isinstance(outcome, delivery_domain.Suppress):
            send.status, send.rule, send.reason = "suppressed", outcome.rule, outcome.reason
            continue
        if isinstance(outcome, delivery_domain.Wait):
            send.due_at, send.rule, send.reason = outcome.until, outcome.rule, outcome.reason
            continue
        try:
            message = SendRequested(
                send_id=send.send_id,
                workspace_id=send.workspace_id,
                campaign_id=send.campaign_id,
                channel=send.channel,  # type: ignore[arg-type]
                profile_id=send.profile_id,
                user_id=send.user_id,
                message=outcome.message,  # type: ignore[arg-type]  # parsed into the channel's content
                trigger=TriggerEvent.model_validate(send.trigger),
                requested_at=now,
                transactional=campaign.transactional,
                subscription_group_id=campaign.subscription_group_id,
                variant=outcome.variant,
            )
        except ValidationError as exc:
            log.error("send_invalid", send_id=send.send_id, campaign_id=campaign.id, error=str(exc))
            send.status, send.reason = "cancelled", f"the campaign's message does not fit its channel: {exc.errors()[0]['msg']}"
            continue
        send.status, send.rule, send.reason = "requested", None, None
        requested.append(message)
        went.append((send, campaign))
    await delivery_service.count_sent(session, went, now)
    await session.flush()
    return requested


async def _decide(
    session: AsyncSession, nc: NATS, send: ScheduledSend, campaign: Campaign, now: datetime
) -> tuple[str, str] | None:
    if campaign.ends_at and now >= campaign.ends_at:
        return "cancelled", "campaign ended before the send was due"
    exception = await repository.exception_performed(session, send, campaign.cancel_on, now)
    if exception:
        return "cancelled", f"exception event {exception!r} performed"
    # The audience is checked again when the send falls due (segment_ids, exclusions and the older
    # segment_id alike): a user who left it, or entered an excluded segment, meanwhile gets nothing.
    refusal = await audience_refusal(nc, send.workspace_id, campaign.audience, send.profile_id)
    if refusal:
        return "not_in_audience", f"{refusal} when the send was due"
    return None


def describe_send(send: ScheduledSend, campaign_name: str | None) -> dict[str, Any]:
    return {
        "send_id": send.send_id,
        "campaign_id": send.campaign_id,
        "campaign_name": campaign_name,
        "channel": send.channel,
        "status": send.status,
        "reason": send.reason,
        "rule": send.rule,
        "variant": send.variant,
        "triggered_at": send.triggered_at,
        "due_at": send.due_at,
        "created_at": send.created_at,
    }


async def release_due_sends(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, js: JetStreamContext, batch: int
) -> int:
    """One pass: claim due sends, publish the requested ones, commit. Returns how many were claimed.

    The publish happens before the commit on purpose: if the commit fails the rows stay
    `scheduled` and are published again with the same `send_id`, which JetStream and the
    dispatcher de-duplicate; a send can be repeated on the bus but never lost.
    """
    async with unit_of_work(sessions) as session:
        requested = await release_due(session, nc, batch)
        if requested:
            await bus.publish_contracts(
                js, requested, correlation_ids=[s.trigger.correlation_id if s.trigger else None for s in requested]
            )
    return len(requested)


async def run_timer(
    sessions: async_sessionmaker[AsyncSession],
    nc: NATS,
    js: JetStreamContext,
    stop: asyncio.Event,
    due: asyncio.Event,
    poll_seconds: float,
    batch: int,
) -> None:
    """Release due sends until stopped; no state lives here, so a restart loses nothing.

    It looks every `poll_seconds`, and at once when `due` is set (set `due` after `stop` to end it
    without waiting out the poll).
    """
    while not stop.is_set():
        due.clear()
        try:
            released = await release_due_sends(sessions, nc, js, batch)
        except Exception as exc:
            log.warning("due_sends_failed", error=repr(exc))
            released = 0
        if released < batch:
            with contextlib.suppress(TimeoutError):  # the poll's time passed: look again
                await asyncio.wait_for(due.wait(), timeout=poll_seconds)


# --- entries besides a trigger: schedules, segment entry, API calls ---------------------------------


def _entry(campaign: Campaign, entry_key: str, trigger: TriggerEvent, now: datetime, **fields: Any) -> repository.Entry:
    """An entry into this campaign, with its audience and re-eligibility rules."""
    audience = Audience.model_validate(campaign.audience or {})
    return repository.Entry(
        workspace_id=campaign.workspace_id, campaign_id=campaign.id, channel=campaign.channel, entry_key=entry_key,
        trigger=trigger.model_dump(mode="json"), now=now,
        included=audience.included(), excluded=list(audience.exclude_segment_ids),
        reeligible_after_days=campaign.reeligible_after_days, max_sends_per_user=campaign.max_sends_per_user,
        **fields,
    )


def _occurrence(campaign: Campaign, schedule: domain.Schedule, wall: datetime) -> Occurrence:
    return Occurrence(
        id=f"{campaign.id}@{wall.isoformat()}", workspace_id=campaign.workspace_id, campaign_id=campaign.id,
        wall_at=wall, due_at=schedule.first_instant(wall), status="pending",
    )


async def schedule_first_occurrence(session: AsyncSession, campaign: Campaign, now: datetime) -> None:
    """Put the occurrence a launch at `now` starts with in place of any pending one (a 409 when none is left)."""
    assert campaign.schedule is not None
    schedule = domain.Schedule.stored(campaign.schedule)
    wall = schedule.first_to_decide(now)
    if wall is None or (campaign.ends_at is not None and schedule.first_instant(wall) >= campaign.ends_at):
        raise Conflict("this campaign's schedule has no occurrence left to send: give it a new schedule")
    await repository.replace_pending_occurrence(session, campaign, _occurrence(campaign, schedule, wall))


async def default_time_zone(session: AsyncSession, workspace_id: str) -> str:
    """The workspace's time zone for users without a valid one of their own (delivery settings, contract C2)."""
    return (await delivery_repository.delivery_settings(session, workspace_id)).default_time_zone


async def decide_occurrence(session: AsyncSession, occurrence: Occurrence, campaign: Campaign, now: datetime) -> int:
    """Decide every send of one occurrence in one statement, then schedule the next; returns how many entered.

    Local time: each user's send is due at the occurrence's wall-clock time in their time zone (the workspace
    default without a valid one); one whose time passed more than domain.LATE_GRACE ago gets it the next day.
    """
    assert campaign.schedule is not None
    schedule = domain.Schedule.stored(campaign.schedule)
    occurrence.decided_at = now
    if campaign.ends_at is not None and now >= campaign.ends_at:
        occurrence.status = "cancelled"
        return 0
    trigger = TriggerEvent(message_id=occurrence.id, name=SCHEDULED_EVENT, properties={}, timestamp=now)
    if schedule.local_time:
        where = {"local_wall": occurrence.wall_at, "default_time_zone": await default_time_zone(session, campaign.workspace_id)}
    else:
        where = {"due_at": max(schedule.fixed_instant(occurrence.wall_at), now)}
    entered, suppressed = await repository.enter(session, _entry(campaign, occurrence.id, trigger, now, **where))
    await timing.place_new_sends(session, campaign.workspace_id, [campaign], now)  # intelligent timing, if asked for
    occurrence.status, occurrence.entered, occurrence.suppressed = "done", entered, suppressed
    log.info("occurrence_decided", campaign_id=campaign.id, occurrence=occurrence.id, entered=entered, suppressed=suppressed)
    wall = schedule.next_after(occurrence.wall_at)
    while wall is not None and schedule.last_instant(wall) <= now:  # decided very late: skip what nobody can get
        wall = schedule.next_after(wall)
    if wall is not None and (campaign.ends_at is None or schedule.first_instant(wall) < campaign.ends_at):
        await repository.add_occurrence(session, _occurrence(campaign, schedule, wall))
    return entered


SCHEDULED_EVENT = "$scheduled"  # `event.name` in a scheduled send's templates
SEGMENT_ENTRY_EVENT = "$segment_entered"
API_TRIGGER_EVENT = "$api_triggered"


async def decide_due_occurrences(
    sessions: async_sessionmaker[AsyncSession], now: datetime | None = None, workspace_id: str | None = None
) -> int:
    """Decide due occurrences (of one workspace, when given) one per transaction (each may enter a million users)
    until none is due; returns how many sends entered. Any replica may run it: an occurrence is claimed FOR UPDATE
    SKIP LOCKED. One that fails is rolled back, logged and looked at again OCCURRENCE_RETRY later, without holding
    back the others."""
    total = 0
    while True:
        claimed_id: str | None = None
        try:
            async with unit_of_work(sessions) as session:
                claimed = await repository.claim_due_occurrences(session, now or datetime.now(UTC), 1, workspace_id)
                if not claimed:
                    return total
                occurrence, campaign = claimed[0]
                claimed_id = occurrence.id
                total += await decide_occurrence(session, occurrence, campaign, now or datetime.now(UTC))
        except Exception as exc:
            if claimed_id is None:
                raise
            log.warning("occurrence_deferred", occurrence=claimed_id, error=repr(exc))
            async with unit_of_work(sessions) as session:
                await repository.defer_occurrence(session, claimed_id, (now or datetime.now(UTC)) + OCCURRENCE_RETRY)


OCCURRENCE_RETRY = timedelta(minutes=1)


async def run_occurrence_timer(
    sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event, due: asyncio.Event, poll_seconds: float
) -> None:
    """Decide scheduled campaigns' occurrences as they come due, until stopped; wakes the send timer after one."""
    while not stop.is_set():
        try:
            if await decide_due_occurrences(sessions):
                due.set()
        except Exception as exc:
            log.warning("occurrences_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):  # the poll's time passed: look again
            await asyncio.wait_for(stop.wait(), timeout=poll_seconds)


async def on_membership_changes(session: AsyncSession, changes: list[MembershipChanged], now: datetime | None = None) -> int:
    """Enter users into the active campaigns entered by the segments they just entered; returns how many are due now."""
    now = now or datetime.now(UTC)
    due_now = 0
    campaigns: dict[tuple[str, str], list[Campaign]] = {}
    for change in changes:
        if change.change != "entered":
            continue
        key = (change.workspace_id, change.segment_id)
        if key not in campaigns:
            campaigns[key] = await repository.active_segment_entries(session, *key)
        for campaign in campaigns[key]:
            if not domain.in_window(campaign.starts_at, campaign.ends_at, now):
                continue
            trigger = TriggerEvent(
                message_id=change.cause_message_id, name=SEGMENT_ENTRY_EVENT,
                properties={"segment_id": change.segment_id}, timestamp=change.at,
            )
            entry = _entry(
                campaign, f"segment:{change.segment_id}:{change.cause_message_id}", trigger, now,
                due_at=now + timedelta(seconds=campaign.delay_seconds), profile_ids=[change.profile_id], properties=[{}],
            )
            statuses = await repository.enter_profiles(session, entry)
            due_now += sum(status == "scheduled" for status in statuses.values()) * int(campaign.delay_seconds == 0)
    return due_now


async def trigger_campaign(
    session: AsyncSession, workspace_id: str, campaign_id: str, body: TriggerIn, now: datetime | None = None
) -> TriggerOut:
    """Enter listed users (or the campaign's whole audience) into an active API-triggered campaign now.

    Idempotent by `trigger_id`: a user it already entered is counted as `already`, never sent twice. A
    recipient Herald does not know, listed twice, or outside the campaign's audience is an error of its own.
    """
    now = now or datetime.now(UTC)
    campaign = await get_campaign(session, workspace_id, campaign_id)
    kind = domain.entry_kind(campaign.trigger, campaign.schedule, campaign.segment_entry)
    if kind != "api":
        raise Conflict(
            f"this campaign enters users by its {kind.replace('_', ' ')}: only a campaign without trigger, schedule "
            "and segment_entry is triggered through the API", error="not_api_triggered",
        )
    if campaign.status != "active":
        raise Conflict(f"only an active campaign can be triggered (it is {campaign.status}): launch it first")
    if not domain.in_window(campaign.starts_at, campaign.ends_at, now):
        raise Conflict("outside the campaign's starts_at / ends_at")
    trigger_id = body.trigger_id or secrets.token_hex(12)
    entry_key = f"api:{trigger_id}"
    trigger = TriggerEvent(message_id=entry_key, name=API_TRIGGER_EVENT, properties=body.properties, timestamp=now)
    due_at = now + timedelta(seconds=campaign.delay_seconds)
    if body.recipients is None:
        entered, suppressed = await repository.enter(session, _entry(campaign, entry_key, trigger, now, due_at=due_at))
        already = await repository.entry_sends(session, campaign.id, entry_key) - entered - suppressed
        return TriggerOut(trigger_id=trigger_id, entered=entered, suppressed=suppressed, already=already)
    errors: list[RecipientError] = []
    known = await repository.profiles_of_users(session, workspace_id, [r.user_id for r in body.recipients])
    listed: dict[str, tuple[int, str, dict[str, Any]]] = {}
    for index, recipient in enumerate(body.recipients):
        profile_id = known.get(recipient.user_id)
        if profile_id is None:
            errors.append(RecipientError(index=index, user_id=recipient.user_id, error="no such user in this workspace"))
        elif profile_id in listed:
            errors.append(RecipientError(index=index, user_id=recipient.user_id, error="listed twice in this call"))
        else:
            listed[profile_id] = (index, recipient.user_id, recipient.properties)
    statuses = await repository.enter_profiles(session, _entry(
        campaign, entry_key, trigger, now, due_at=due_at,
        profile_ids=list(listed), properties=[props for _, _, props in listed.values()],
    ))
    missing = [p for p in listed if p not in statuses]
    existing = await repository.existing_sends(session, [domain.entry_send_id(campaign.id, entry_key, p) for p in missing])
    already = 0
    for profile_id in missing:
        if domain.entry_send_id(campaign.id, entry_key, profile_id) in existing:
            already += 1
        else:
            index, user_id, _ = listed[profile_id]
            errors.append(RecipientError(index=index, user_id=user_id, error="not in the campaign's audience"))
    errors.sort(key=lambda e: e.index)
    return TriggerOut(
        trigger_id=trigger_id, entered=sum(s == "scheduled" for s in statuses.values()),
        suppressed=sum(s == "suppressed" for s in statuses.values()), already=already, errors=errors,
    )
