"""Scheduler use cases: campaigns, trigger → durable send, due send → SENDS."""

import asyncio
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
    ResolvedEvent,
    SendRequested,
    TriggerEvent,
)
from kernel.db import unit_of_work
from kernel.errors import Conflict, NotFound, Unavailable, Unprocessable
from services.scheduler import domain, repository
from services.scheduler.models import Campaign, ScheduledSend
from services.scheduler.schemas import CampaignIn, CampaignPatch

log = structlog.get_logger(__name__)


async def in_audience(nc: NATS, workspace_id: str, segment_id: str, profile_id: str) -> AudienceAnswer:
    """Ask the segmenter, live, whether a profile is in a segment."""
    return await bus.request(
        nc,
        AUDIENCE_QUERY_SUBJECT,
        AudienceQuery(workspace_id=workspace_id, segment_id=segment_id, profile_id=profile_id),
        AudienceAnswer,
    )


async def check_audience(nc: NATS, workspace_id: str, body: CampaignIn) -> None:
    """A 422 naming `audience.segment_id` unless the audience segment exists in the workspace and is live."""
    segment_id = body.audience.segment_id if body.audience else None
    if not segment_id:
        return
    try:
        answer = await in_audience(nc, workspace_id, segment_id, "-")
    except Exception as exc:
        raise Unavailable("the segmenter did not answer; retry") from exc
    if not answer.found:
        raise Unprocessable([{"loc": ["body", "audience", "segment_id"], "msg": f"no segment {segment_id!r} in this workspace"}])
    if answer.archived:
        raise Unprocessable([{"loc": ["body", "audience", "segment_id"], "msg": f"segment {segment_id!r} is archived: it matches nobody"}])


def campaign_fields(body: CampaignIn) -> dict[str, Any]:
    """A checked campaign as its row stores it."""
    return {
        "name": body.name,
        "channel": body.channel,
        "trigger": body.trigger.model_dump(mode="json"),
        "audience": body.audience.model_dump(mode="json") if body.audience else None,
        "delay_seconds": body.delay_seconds,
        "cancel_on": [exception.stored() for exception in body.cancel_on],
        "starts_at": body.starts_at,
        "ends_at": body.ends_at,
        "message": body.message,
        # Results (services/scheduler/results): the conversion goal and the automatic winner.
        "conversion": body.conversion.model_dump(mode="json") if body.conversion else None,
        "experiment": body.experiment.model_dump(mode="json") if body.experiment else None,
    }


async def create_campaign(session: AsyncSession, nc: NATS, workspace_id: str, body: CampaignIn) -> Campaign:
    """Store a draft campaign after checking that its audience segment exists."""
    await check_audience(nc, workspace_id, body)
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
STORED = ("name", "channel", "trigger", "audience", "delay_seconds", "cancel_on", "starts_at", "ends_at", "message",
          "conversion", "experiment")


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
    if "audience" in changed:
        await check_audience(nc, workspace_id, body)
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


async def set_status(session: AsyncSession, workspace_id: str, campaign_id: str, action: str) -> Campaign:
    """Launch (draft/paused → active) or pause (active → paused) a campaign."""
    campaign = await get_campaign(session, workspace_id, campaign_id, lock=True)
    if action == "launch":
        if campaign.status == "archived":
            raise Conflict("this campaign is archived: unarchive it (it becomes a draft) or duplicate it", error="not_editable")
        if campaign.ends_at and campaign.ends_at <= datetime.now(UTC):
            raise Conflict("this campaign's ends_at has passed; it cannot be launched")
        if campaign.status == "active":
            return campaign
        campaign.status = "active"
    else:
        if campaign.status != "active":
            raise Conflict(f"only an active campaign can be paused (it is {campaign.status})")
        campaign.status = "paused"
    campaign.updated_at = datetime.now(UTC)
    await session.flush()
    return campaign


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
        if not domain.matches_trigger(campaign.trigger, name, event.properties, now):
            continue
        if not domain.in_window(campaign.starts_at, campaign.ends_at, now):
            continue
        status, reason = "scheduled", None
        segment_id = (campaign.audience or {}).get("segment_id")
        if segment_id:
            answer = await in_audience(nc, resolved.workspace_id, segment_id, resolved.profile_id)
            if not answer.member:
                status, reason = "not_in_audience", f"not in segment {segment_id} when triggered"
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
                "trigger": trigger.model_dump(mode="json"),
                "triggered_at": event.timestamp,
                "due_at": now + timedelta(seconds=campaign.delay_seconds),
            },
        )
    return due_now


RECHECK_AFTER = timedelta(seconds=5)  # a send whose check failed (the segmenter down) is looked at again


async def release_due(session: AsyncSession, nc: NATS, limit: int) -> list[SendRequested]:
    """Claim due sends and decide each: cancelled, out of audience, or requested (returned).

    Each send is decided on its own: one whose audience cannot be checked now waits a little and
    is looked at again; one whose campaign message no longer fits the contract is cancelled with
    the reason. Neither holds back the others.
    """
    now = datetime.now(UTC)
    requested: list[SendRequested] = []
    for send, campaign in await repository.claim_due(session, limit):
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
        try:
            message = SendRequested(
                send_id=send.send_id,
                workspace_id=send.workspace_id,
                campaign_id=send.campaign_id,
                channel=send.channel,  # type: ignore[arg-type]
                profile_id=send.profile_id,
                user_id=send.user_id,
                message=campaign.message,  # type: ignore[arg-type]  # parsed into the channel's content
                trigger=TriggerEvent.model_validate(send.trigger),
                requested_at=now,
            )
        except ValidationError as exc:
            log.error("send_invalid", send_id=send.send_id, campaign_id=campaign.id, error=str(exc))
            send.status, send.reason = "cancelled", f"the campaign's message does not fit its channel: {exc.errors()[0]['msg']}"
            continue
        send.status = "requested"
        requested.append(message)
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
    segment_id = (campaign.audience or {}).get("segment_id")
    if segment_id:
        answer = await in_audience(nc, send.workspace_id, segment_id, send.profile_id)
        if not answer.member:
            return "not_in_audience", f"left segment {segment_id} before the send was due"
    return None


def describe_send(send: ScheduledSend, campaign_name: str | None) -> dict[str, Any]:
    return {
        "send_id": send.send_id,
        "campaign_id": send.campaign_id,
        "campaign_name": campaign_name,
        "channel": send.channel,
        "status": send.status,
        "reason": send.reason,
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
            try:
                await asyncio.wait_for(due.wait(), timeout=poll_seconds)
            except TimeoutError:
                pass
