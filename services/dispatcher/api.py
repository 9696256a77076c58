"""Dispatcher routes: the delivery log, looked up by send for the gateway's list of a user's messages."""

from fastapi import APIRouter

from kernel.web import Session, WorkspaceId
from services.dispatcher import repository, service
from services.dispatcher.schemas import DeliveryList, DeliveryLookup, DeliveryOut

router = APIRouter(prefix="/api/v1", tags=["messages"])


@router.post("/deliveries/lookup")
async def lookup_deliveries(body: DeliveryLookup, workspace_id: WorkspaceId, session: Session) -> DeliveryList:
    """The deliveries of these sends (those the dispatcher has seen), for joining with the scheduler's page."""
    rows = await repository.deliveries_of_sends(session, workspace_id, body.send_ids)
    return DeliveryList(messages=[DeliveryOut.model_validate(service.describe(d)) for d in rows])
