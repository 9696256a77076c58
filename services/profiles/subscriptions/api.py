"""Subscription routes: a user's subscriptions and consents; the workspace's subscription groups."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from kernel import pagination
from kernel.contracts import SubscriptionChannel, SubscriptionEntry
from kernel.web import Res, Session, WorkspaceId
from services.profiles import service as profiles_service
from services.profiles.api import LookupBy
from services.profiles.subscriptions import service
from services.profiles.subscriptions.domain import Requested
from services.profiles.subscriptions.models import SubscriptionGroup
from services.profiles.subscriptions.schemas import (
    ConsentIn,
    ConsentOut,
    ConsentRecorded,
    Consents,
    GroupIn,
    GroupList,
    GroupOut,
    GroupPatch,
    GroupRemoved,
    SubscriptionsIn,
    SubscriptionsOut,
)

users_router = APIRouter(prefix="/api/v1/users", tags=["users"])
groups_router = APIRouter(prefix="/api/v1/subscription-groups", tags=["subscription-groups"])


async def _publish(res: Res, session: Session, staged: list[int]) -> None:
    """Commit, then publish what the change staged (left to the outbox drain if the bus is down)."""
    await session.commit()
    await service.OUTBOX.publish_after_commit(res.db, res.jetstream, staged)


@users_router.get("/{user_id}/subscriptions")
async def get_subscriptions(user_id: str, workspace_id: WorkspaceId, session: Session, by: LookupBy = "user_id") -> SubscriptionsOut:
    """A user's state on each channel and in each subscription group, with when and from what source."""
    profile = await profiles_service.find_profile(session, workspace_id, user_id, by)
    return SubscriptionsOut.model_validate((await service.describe(session, workspace_id, profile.profile_id)).model_dump())


@users_router.put("/{user_id}/subscriptions")
async def put_subscriptions(
    user_id: str, body: SubscriptionsIn, workspace_id: WorkspaceId, session: Session, res: Res, by: LookupBy = "user_id"
) -> SubscriptionsOut:
    """Set a user's state on channels and in groups (the newest `at` wins: an older or repeated change changes
    nothing); each change is a `$subscription_changed` event on the timeline."""
    now = datetime.now(UTC)
    changes: list[Requested] = []
    channels: tuple[SubscriptionChannel, ...] = ("email", "push", "sms")
    for channel in channels:
        if (change := getattr(body, channel)) is not None:
            changes.append(Requested(channel, SubscriptionEntry(state=change.state, at=change.at or now, source=change.source)))
    for group_id, group_change in body.groups.items():
        changes.append(Requested(group_id, SubscriptionEntry(
            state=group_change.state, at=group_change.at or now, source=group_change.source
        )))
    profile = await profiles_service.find_profile(session, workspace_id, user_id, by)
    held, staged = await service.set_from_api(session, profile, changes)
    await _publish(res, session, staged)
    return SubscriptionsOut.model_validate(held.model_dump())


def _consent(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "id": record["consent_id"]}


@users_router.post("/{user_id}/consents", status_code=201)
async def post_consent(
    user_id: str, body: ConsentIn, workspace_id: WorkspaceId, session: Session, res: Res, by: LookupBy = "user_id"
) -> ConsentRecorded:
    """Record a user's consent for a purpose, given or withdrawn under a policy version; the history is kept and the
    newest record decides. A record that becomes the one in force is a `$consent_changed` event."""
    profile = await profiles_service.find_profile(session, workspace_id, user_id, by)
    fields = body.model_dump()
    fields["at"] = fields["at"] or datetime.now(UTC)
    record, created, in_force, staged = await service.record_consent(session, profile, fields)
    await _publish(res, session, staged)
    return ConsentRecorded.model_validate({**_consent(record), "created": created, "in_force": in_force})


@users_router.get("/{user_id}/consents")
async def get_consents(user_id: str, workspace_id: WorkspaceId, session: Session, by: LookupBy = "user_id") -> Consents:
    """A user's consent records, newest first, and the one in force for each purpose."""
    profile = await profiles_service.find_profile(session, workspace_id, user_id, by)
    history, in_force = await service.consents(session, workspace_id, profile.profile_id)
    return Consents(
        in_force={purpose: ConsentOut.model_validate(_consent(r)) for purpose, r in sorted(in_force.items())},
        history=[ConsentOut.model_validate(_consent(r)) for r in history],
    )


def _group(group: SubscriptionGroup, subscribed: int) -> GroupOut:
    return GroupOut(
        id=group.group_id, channel=group.channel, name=group.name, description=group.description,  # type: ignore[arg-type]
        subscribed=subscribed, created_at=group.created_at, updated_at=group.updated_at, archived_at=group.archived_at,
    )


@groups_router.post("", status_code=201)
async def create_group(body: GroupIn, workspace_id: WorkspaceId, session: Session) -> GroupOut:
    """Create a subscription group: a named list on one channel that users join and leave."""
    return _group(await service.create_group(session, workspace_id, body.channel, body.name, body.description), 0)


@groups_router.get("")
async def list_groups(
    workspace_id: WorkspaceId,
    session: Session,
    channel: SubscriptionChannel | None = None,
    archived: Annotated[
        Literal["exclude", "include", "only"], Query(description="archived groups: left out (default), included, or only them")
    ] = "exclude",
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> GroupList:
    """The workspace's subscription groups, newest first, a page at a time (`next_cursor`)."""
    rows, counts, next_cursor = await service.list_groups(session, workspace_id, channel, archived, cursor, limit)
    return GroupList(groups=[_group(g, counts.get(g.group_id, 0)) for g in rows], next_cursor=next_cursor)


@groups_router.get("/{group_id}")
async def get_group(group_id: str, workspace_id: WorkspaceId, session: Session) -> GroupOut:
    """One subscription group with how many users are subscribed to it (archived ones too)."""
    group = await service.find_group(session, workspace_id, group_id)
    return _group(group, await service.subscribed_count(session, workspace_id, group_id))


@groups_router.patch("/{group_id}")
async def edit_group(group_id: str, body: GroupPatch, workspace_id: WorkspaceId, session: Session) -> GroupOut:
    """Rename a group or change its description (409 if archived)."""
    group = await service.edit_group(session, workspace_id, group_id, body.model_dump(exclude_unset=True))
    return _group(group, await service.subscribed_count(session, workspace_id, group_id))


@groups_router.post("/{group_id}/archive")
async def archive_group(group_id: str, workspace_id: WorkspaceId, session: Session) -> GroupOut:
    """Archive a group: it takes no new subscribers and leaves lists; its users' states are kept. Idempotent."""
    group = await service.set_archived(session, workspace_id, group_id, True)
    return _group(group, await service.subscribed_count(session, workspace_id, group_id))


@groups_router.post("/{group_id}/unarchive")
async def unarchive_group(group_id: str, workspace_id: WorkspaceId, session: Session) -> GroupOut:
    """Bring an archived group back. Idempotent."""
    group = await service.set_archived(session, workspace_id, group_id, False)
    return _group(group, await service.subscribed_count(session, workspace_id, group_id))


@groups_router.delete("/{group_id}")
async def delete_group(group_id: str, workspace_id: WorkspaceId, session: Session) -> GroupRemoved:
    """Delete a group that never had members; one that had is archived instead, so their choices are kept."""
    group, deleted = await service.remove_group(session, workspace_id, group_id)
    return GroupRemoved(id=group.group_id, deleted=deleted, archived=not deleted)
