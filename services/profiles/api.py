"""Profiles routes: read a user's profile and timeline; register a device, deactivate a push token."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from kernel import bus, pagination
from kernel.errors import BadRequest
from kernel.web import Res, Session, WorkspaceId
from services.profiles import context, repository, service
from services.profiles.config import get_settings
from services.profiles.schemas import (
    Deactivated,
    DeviceOut,
    DeviceRegistration,
    Timeline,
    TimelineEvent,
    TokenDeactivation,
    UserList,
    UserProfile,
    UserSummary,
)

router = APIRouter(prefix="/api/v1/users", tags=["users"])
devices_router = APIRouter(prefix="/api/v1/devices", tags=["devices"])
LookupBy = Annotated[Literal["user_id", "anonymous_id"], Query(description="what the id in the path is")]


@router.get("")
async def list_users(
    workspace_id: WorkspaceId,
    session: Session,
    query: Annotated[
        pagination.Search,
        Query(
            min_length=1, max_length=pagination.MAX_SEARCH_CHARS,
            description="only users with a user id, alias or anonymous id starting with this text, or an `email` trait"
            " starting with it in any case",
        ),
    ] = None,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> UserList:
    """The workspace's users, newest first, a page at a time (`next_cursor`); `query` searches them."""
    users, next_cursor = await service.list_users(session, workspace_id, query, cursor, limit)
    return UserList(users=[UserSummary.model_validate(u) for u in users], next_cursor=next_cursor)


@router.get("/{user_id}")
async def get_user(user_id: str, workspace_id: WorkspaceId, session: Session, by: LookupBy = "user_id") -> UserProfile:
    """A user's profile: ids, traits and computed aggregates."""
    profile = await service.find_profile(session, workspace_id, user_id, by)
    return UserProfile.model_validate(await service.describe(session, profile, get_settings().workspace_currency))


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


@router.post("/{user_id}/devices")
async def register_device(
    user_id: str, body: DeviceRegistration, workspace_id: WorkspaceId, session: Session, res: Res,
    by: LookupBy = "user_id",
) -> DeviceOut:
    """Register a device on a user (a push token moves here from any other device); a dead token is live again."""
    if body.locale is not None and context.language_of(body.locale) is None:
        raise BadRequest(f"unknown locale {body.locale!r}")
    if body.time_zone is not None and context.zone(body.time_zone) is None:
        raise BadRequest(f"unknown IANA time zone {body.time_zone!r}")
    profile = await service.find_profile(session, workspace_id, user_id, by)
    fields = body.model_dump(exclude={"device_id"}, exclude_none=True)
    at = datetime.now(UTC)
    device = DeviceOut.model_validate(await service.register_device(session, profile, body.device_id, fields, at))
    await session.commit()  # then announce it, so segments reading devices re-evaluate this user
    await bus.publish_contracts(res.jetstream, [service.device_registered(profile, body.device_id, at)])
    return device


@devices_router.post("/deactivate")
async def deactivate_token(body: TokenDeactivation, workspace_id: WorkspaceId, session: Session) -> Deactivated:
    """Stop pushing to a token a provider called dead; idempotent, and `deactivated: false` for a token nobody holds."""
    device = await service.deactivate_token(session, workspace_id, body.token)
    if device is None:
        return Deactivated(deactivated=False)
    return Deactivated(deactivated=True, profile_id=device["profile_id"], device_id=device["device_id"])
