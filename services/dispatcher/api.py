"""Dispatcher routes: the delivery log."""

from typing import Annotated

from fastapi import APIRouter, Query

from kernel.web import Session, WorkspaceId
from services.dispatcher import repository, service
from services.dispatcher.schemas import DeliveryList, DeliveryLookup, DeliveryOut

router = APIRouter(prefix="/api/v1", tags=["messages"])


@router.get("/users/{user_id}/messages")
async def user_deliveries(
    user_id: str, workspace_id: WorkspaceId, session: Session, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> DeliveryList:
    """Deliveries to one user with their status, newest first."""
    rows = await repository.deliveries_for_user(session, workspace_id, user_id, limit)
    return DeliveryList(messages=[DeliveryOut.model_validate(service.describe(d)) for d in rows])


@router.post("/deliveries/lookup")
async def lookup_deliveries(body: DeliveryLookup, workspace_id: WorkspaceId, session: Session) -> DeliveryList:
    """The deliveries of these sends (those the dispatcher has seen), for joining with the scheduler's page."""
    rows = await repository.deliveries_of_sends(session, workspace_id, body.send_ids)
    return DeliveryList(messages=[DeliveryOut.model_validate(service.describe(d)) for d in rows])
