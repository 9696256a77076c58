"""Delivery-policy routes: the workspace's delivery rules."""

from fastapi import APIRouter

from kernel.web import Session, WorkspaceId
from services.scheduler.delivery import repository, service
from services.scheduler.delivery.models import DeliverySettings
from services.scheduler.delivery.schemas import DeliverySettingsIn, DeliverySettingsOut

router = APIRouter(prefix="/api/v1", tags=["campaigns"])


def _out(row: DeliverySettings | None) -> DeliverySettingsOut:
    if row is None:
        return DeliverySettingsOut(frequency_caps=[], global_control_percent=0)
    return DeliverySettingsOut.model_validate(row, from_attributes=True)


@router.get("/settings/delivery")
async def get_delivery_settings(workspace_id: WorkspaceId, session: Session) -> DeliverySettingsOut:
    """The workspace's delivery rules: frequency caps, global control group, default time zone, quiet-hours attribute."""
    return _out(await repository.settings_row(session, workspace_id))


@router.put("/settings/delivery")
async def put_delivery_settings(body: DeliverySettingsIn, workspace_id: WorkspaceId, session: Session) -> DeliverySettingsOut:
    """Replace the workspace's delivery rules; every send released from now on follows them (docs/delivery.md)."""
    return _out(await service.save_settings(session, workspace_id, body))
