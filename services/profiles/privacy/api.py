"""Routes of the user's rights: export a person, erase a person, follow an erasure."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from kernel.web import Res, Session, WorkspaceId
from services.profiles import service as profiles
from services.profiles.config import get_settings
from services.profiles.privacy import service
from services.profiles.privacy.schemas import ErasureOut, UserExport

users_router = APIRouter(prefix="/api/v1/users", tags=["users"])
erasures_router = APIRouter(prefix="/api/v1/erasures", tags=["users"])
LookupBy = Annotated[Literal["user_id", "anonymous_id"], Query(description="what the id in the path is")]


@users_router.get(
    "/{user_id}/export",
    response_class=StreamingResponse,
    responses={200: {"model": UserExport, "description": "the person's data as one JSON document, streamed",
                     "content": {"application/json": {}}}},
)
async def export_user(
    user_id: str, workspace_id: WorkspaceId, session: Session, res: Res, by: LookupBy = "user_id"
) -> StreamingResponse:
    """Everything Herald holds on a person as one JSON document (streamed: events are read as they are written)."""
    profile = await profiles.find_profile(session, workspace_id, user_id, by)
    document = service.export(res.db, res.nats, profile, get_settings().workspace_currency)
    return StreamingResponse(
        document, media_type="application/json",
        headers={"content-disposition": f'attachment; filename="herald-export-{profile.profile_id}.json"'},
    )


@users_router.delete("/{user_id}", status_code=202)
async def erase_user(
    user_id: str, workspace_id: WorkspaceId, session: Session, res: Res, by: LookupBy = "user_id"
) -> ErasureOut:
    """Erase a person: a job (follow it at /api/v1/erasures/{erasure_id}) that every service works on."""
    profile = await profiles.find_profile(session, workspace_id, user_id, by)
    erasure = await service.request_erasure(session, res.jetstream, profile)
    return ErasureOut.model_validate(service.describe_erasure(erasure))


@erasures_router.get("/{erasure_id}")
async def get_erasure(erasure_id: str, workspace_id: WorkspaceId, session: Session) -> ErasureOut:
    """Where an erasure stands: pending, running or done, with each service's part."""
    return ErasureOut.model_validate(await service.find_erasure(session, workspace_id, erasure_id))
