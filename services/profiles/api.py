"""Profiles routes: read a user's profile and timeline."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from kernel.web import Session, WorkspaceId
from services.profiles import repository, service
from services.profiles.schemas import Timeline, TimelineEvent, UserProfile

router = APIRouter(prefix="/api/v1/users", tags=["users"])
LookupBy = Annotated[Literal["user_id", "anonymous_id"], Query(description="what the id in the path is")]


@router.get("/{user_id}")
async def get_user(user_id: str, workspace_id: WorkspaceId, session: Session, by: LookupBy = "user_id") -> UserProfile:
    """A user's profile: ids, traits and computed aggregates."""
    profile = await service.find_profile(session, workspace_id, user_id, by)
    return UserProfile.model_validate(await service.describe(session, profile))


@router.get("/{user_id}/events")
async def get_user_events(
    user_id: str,
    workspace_id: WorkspaceId,
    session: Session,
    by: LookupBy = "user_id",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Timeline:
    """A user's timeline, newest first (anonymous events included once linked)."""
    profile = await service.find_profile(session, workspace_id, user_id, by)
    rows = await repository.events_of(session, workspace_id, profile.profile_id, limit)
    return Timeline(
        user_id=profile.user_id,
        events=[TimelineEvent.model_validate(row, from_attributes=True) for row in rows],
    )
