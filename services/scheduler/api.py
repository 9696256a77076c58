"""Scheduler routes: campaigns, their stats, and the send decisions for a user."""

from typing import Annotated

from fastapi import APIRouter, Query

from kernel.web import Res, Session, WorkspaceId
from services.scheduler import repository, service
from services.scheduler.models import Campaign
from services.scheduler.schemas import CampaignIn, CampaignOut, CampaignStats, SendList, SendOut

router = APIRouter(prefix="/api/v1", tags=["campaigns"])


def _out(campaign: Campaign) -> CampaignOut:
    return CampaignOut.model_validate(campaign, from_attributes=True)


@router.post("/campaigns", status_code=201)
async def create_campaign(body: CampaignIn, workspace_id: WorkspaceId, session: Session, res: Res) -> CampaignOut:
    """Create an action-based campaign as a draft; `launch` it to start triggering."""
    campaign = await service.create_campaign(session, res.nats, workspace_id, body)
    await session.refresh(campaign)
    return _out(campaign)


@router.get("/campaigns/{campaign_id}")
async def get_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """One campaign."""
    return _out(await service.get_campaign(session, workspace_id, campaign_id))


@router.post("/campaigns/{campaign_id}/launch")
async def launch_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """Start (or resume) triggering; sends waiting while paused go out when due."""
    return _out(await service.set_status(session, workspace_id, campaign_id, "launch"))


@router.post("/campaigns/{campaign_id}/pause")
async def pause_campaign(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignOut:
    """Stop triggering and hold pending sends until the campaign is launched again."""
    return _out(await service.set_status(session, workspace_id, campaign_id, "pause"))


@router.get("/campaigns/{campaign_id}/stats")
async def campaign_stats(campaign_id: str, workspace_id: WorkspaceId, session: Session) -> CampaignStats:
    """How many sends the campaign triggered, by decision status."""
    await service.get_campaign(session, workspace_id, campaign_id)
    by_status = await repository.stats(session, workspace_id, campaign_id)
    return CampaignStats(campaign_id=campaign_id, triggered=sum(by_status.values()), by_status=by_status)


@router.get("/users/{user_id}/messages")
async def user_sends(
    user_id: str, workspace_id: WorkspaceId, session: Session, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> SendList:
    """The send decisions for one user, newest first (the gateway joins delivery outcomes)."""
    rows = await repository.sends_for_user(session, workspace_id, user_id, limit)
    return SendList(messages=[SendOut.model_validate(service.describe_send(s, n)) for s, n in rows])
