"""Attribute catalogue routes."""

from fastapi import APIRouter

from kernel import pagination
from kernel.web import Session, WorkspaceId
from services.profiles.attributes import service
from services.profiles.attributes.schemas import AttributeList, AttributeOut

router = APIRouter(prefix="/api/v1/attributes", tags=["attributes"])


@router.get("")
async def list_attributes(
    workspace_id: WorkspaceId,
    session: Session,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> AttributeList:
    """The workspace's custom attributes by name, with inferred type, first and last seen and examples."""
    entries, next_cursor = await service.list_attributes(session, workspace_id, cursor, limit)
    return AttributeList(attributes=[AttributeOut.model_validate(e) for e in entries], next_cursor=next_cursor)
