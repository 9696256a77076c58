"""Scheduler routes: campaigns, their stats, and the send decisions for a user."""

from typing import Annotated

from fastapi import APIRouter, Query

from kernel import pagination
from kernel.contracts import Channel
from kernel.web import Res, Session, WorkspaceId
from services.scheduler import repository, service
from services.scheduler.domain import CampaignStatus, entry_kind
from services.scheduler.models import Campaign
from services.scheduler.results import service as results
from services.scheduler.results.schemas import CampaignResults
from services.scheduler.schemas import (
    CampaignDuplicate,
    CampaignIn,
    CampaignList,
    CampaignOut,
    CampaignPatch,
    SendList,
    SendOut,
    TriggerIn,
    TriggerOut,
)

router = APIRouter(prefix="/api/v1", tags=["campaigns"])


def _out(campaign: Campaign) -> CampaignOut:
    fields = {c.key: getattr(campaign, c.key) for c in Campaign.__table__.columns}
    entry = entry_kind(campaign.trigger, campaign.schedule, campaign.segment_entry)
    return CampaignOut.model_validate({**fields, "entry": entry})


@router.post("/campaigns", status_code=201)
async def create_campaign(body: CampaignIn, workspace_id: WorkspaceId, session: Session, res: Res) -> CampaignOut:
    """Create an action-based campaign as a draft; `launch` it to start triggering."""
    campaign = await service.create_campaign(session, res.nats, workspace_id, body)
    await session.refresh(campaign)
    return _out(campaign)


@router.get("/campaigns")
async def list_campaigns(
    workspace_id: WorkspaceId,
    session: Session,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
    status: Annotated[
        list[CampaignStatus] | None, Query(description="only campaigns in these states (none: every state but archived)")
    ] = None,
    channel: Annotated[list[Channel] | None, Query(description="only campaigns on these channels")] = None,
    query: Annotated[
        pagination.Search,
        Query(min_length=1, max_length=pagination.MAX_SEARCH_CHARS, description="only campaigns whose name contains this text (any case)"),
    ] = None,
    created_after: pagination.CreatedAfter = None,
    created_before: pagination.CreatedBefore = None,
) -> CampaignList:
    """The workspace's campaigns, newest first, a page at a time (`next_cursor`); archived ones only when asked for by status."""
    wanted = repository.CampaignQuery(
        statuses=tuple(status or ()), channels=tuple(channel or ()), name_contains=query,
        created_after=pagination.utc(created_after, "created_after"),
        created_before=pagination.utc(created_before, "created_before"),
    )
    rows, next_cursor = await service.page(session, workspace_id, wanted, cursor, limit)
    return CampaignList(campaigns=[_out(c) for c in rows], next_cursor=next_cursor)


@router.get("/campaigns/{campaign_id}")
async def get_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """One campaign."""
    return _out(await service.get_campaign(session, workspace_id, campaign_id))


@router.patch("/campaigns/{campaign_id}")
async def update_campaign(
    campaign_id: str, body: CampaignPatch, workspace_id: WorkspaceId, session: Session, res: Res
) -> CampaignOut:
    """Change some of a campaign's fields (each given replaces the stored one; null clears an optional one).

    Checked as a new campaign is (422 naming the field), then against its status (409 saying why): a draft
    changes anything; once launched its channel is fixed; an active one changes only its name, message
    and ends_at (pause it for the rest); an archived one nothing.
    """
    campaign = await service.update_campaign(session, res.nats, workspace_id, campaign_id, body)
    await session.refresh(campaign)
    return _out(campaign)


@router.post("/campaigns/{campaign_id}/archive")
async def archive_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """Archive a campaign: it triggers nothing more, its pending sends are cancelled, and lists leave it out
    unless asked for (`status=archived`). Idempotent."""
    campaign = await service.archive(session, workspace_id, campaign_id)
    await session.refresh(campaign)
    return _out(campaign)


@router.post("/campaigns/{campaign_id}/unarchive")
async def unarchive_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """Bring an archived campaign back as a draft (launch it to send again). Idempotent."""
    campaign = await service.unarchive(session, workspace_id, campaign_id)
    await session.refresh(campaign)
    return _out(campaign)


@router.post("/campaigns/{campaign_id}/duplicate", status_code=201)
async def duplicate_campaign(
    campaign_id: str, workspace_id: WorkspaceId, session: Session, body: CampaignDuplicate | None = None
) -> CampaignOut:
    """A draft copy of a campaign of any status, named `name` or "<its name> (copy)"; nothing else is copied (no sends, no stats)."""
    campaign = await service.duplicate(session, workspace_id, campaign_id, body.name if body else None)
    await session.refresh(campaign)
    return _out(campaign)


@router.post("/campaigns/{campaign_id}/launch")
async def launch_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """Start (or resume) triggering; sends waiting while paused go out when due."""
    return _out(await service.set_status(session, workspace_id, campaign_id, "launch"))


@router.post("/campaigns/{campaign_id}/pause")
async def pause_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """Stop triggering and hold pending sends until the campaign is launched again."""
    return _out(await service.set_status(session, workspace_id, campaign_id, "pause"))


@router.post("/campaigns/{campaign_id}/trigger")
async def trigger_campaign(campaign_id: str, body: TriggerIn, workspace_id: WorkspaceId, session: Session) -> TriggerOut:
    """Enter users into an active API-triggered campaign now: listed `recipients` (each with `properties` for its
    templates' `event.properties`), or `audience: true` for everyone in its audience. Idempotent by `trigger_id`;
    a recipient that cannot enter is listed in `errors` with why, without failing the others."""
    return await service.trigger_campaign(session, workspace_id, campaign_id, body)


@router.get("/campaigns/{campaign_id}/stats")
async def campaign_stats(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignResults:
    """The campaign's send decisions by status, then totals and a daily series per variant (entered, suppressed by
    rule, sent, delivered, failed, bounced, opened, clicked, converted, unsubscribed), conversion rates with 95 %
    Wilson intervals, uplift against control with its z-test, and the experiment's winner (docs/experiments.md)."""
    campaign = await service.get_campaign(session, workspace_id, campaign_id)
    by_status = await repository.stats(session, workspace_id, campaign_id)
    return await results.stats(session, campaign, by_status)


@router.get("/users/{user_id}/messages")
async def user_sends(
    user_id: str, workspace_id: WorkspaceId, session: Session, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> SendList:
    """The send decisions for one user, newest first (the gateway joins delivery outcomes)."""
    rows = await repository.sends_for_user(session, workspace_id, user_id, limit)
    return SendList(messages=[SendOut.model_validate(service.describe_send(s, n)) for s, n in rows])
