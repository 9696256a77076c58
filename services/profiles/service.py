"""Profiles use cases: apply an event to its profile; read profiles and timelines."""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import Event, ProfileChanged, ProfileSnapshot, ResolvedEvent
from kernel.errors import NotFound, TransientError
from services.profiles import domain, repository
from services.profiles.models import Profile


@dataclass
class Applied:
    """What to publish once the transaction that applied an event has committed."""

    resolved: ResolvedEvent
    changed: ProfileChanged
    duplicate: bool = False


async def apply_event(session: AsyncSession, event: Event) -> Applied:
    """Resolve identity, merge profiles, store the event once, update traits and counters."""
    ws = event.workspace_id
    await repository.lock_identities(session, ws, domain.identities_to_lock(event))

    stored_on = await repository.stored_event_profile(session, ws, event.message_id)
    if stored_on is not None:
        # Already applied (a redelivery): publish again, in case the first publish was lost.
        profile = await repository.get_profile(session, ws, stored_on)
        user_id = profile.user_id if profile else event.user_id
        return Applied(
            ResolvedEvent(workspace_id=ws, profile_id=stored_on, user_id=user_id, event=event),
            ProfileChanged(workspace_id=ws, profile_id=stored_on, user_id=user_id, cause_message_id=event.message_id),
            duplicate=True,
        )

    known = await repository.find_identities(session, ws, domain.identities_to_lock(event))
    plan = domain.resolve(event, known)
    involved = ([plan.survivor] if plan.survivor else []) + plan.merge
    locked = await repository.lock_profiles(session, ws, involved)
    if len(locked) != len(involved):
        raise TransientError("a profile was merged concurrently; retrying")

    if plan.survivor is None:
        profile = repository.new_profile(ws, f"p_{uuid.uuid4().hex}", plan.user_id, event.timestamp)
        session.add(profile)
        await session.flush()
    else:
        profile = locked[plan.survivor]

    # Work on copies: JSONB columns mutated in place would look unchanged to SQLAlchemy.
    traits, times = dict(profile.traits), dict(profile.trait_times)
    changed: list[str] = []
    for other_id in plan.merge:
        other = locked[other_id]
        changed += domain.merge_traits(traits, times, other.traits, other.trait_times)
        profile.first_seen = min(profile.first_seen, other.first_seen)
        profile.last_seen = max(profile.last_seen, other.last_seen)
        await repository.move_profile(session, ws, other_id, profile.profile_id)
    await repository.link_identities(session, ws, profile.profile_id, plan.link)

    await repository.insert_event(session, _event_row(event, profile.profile_id))
    await repository.bump_count(session, ws, profile.profile_id, event.display_name, event.timestamp.date())

    if event.type == "identify" and event.traits:
        changed += domain.apply_traits(traits, times, event.traits, event.timestamp)
    if profile.user_id is None and plan.user_id:
        profile.user_id = plan.user_id
    profile.first_seen = min(profile.first_seen, event.timestamp)
    profile.last_seen = max(profile.last_seen, event.timestamp)
    profile.traits, profile.trait_times = traits, times
    await session.flush()

    return Applied(
        ResolvedEvent(workspace_id=ws, profile_id=profile.profile_id, user_id=profile.user_id, event=event),
        ProfileChanged(
            workspace_id=ws,
            profile_id=profile.profile_id,
            user_id=profile.user_id,
            cause_message_id=event.message_id,
            changed_traits=sorted(set(changed)),
            merged_profile_ids=plan.merge,
        ),
    )


def _event_row(event: Event, profile_id: str) -> dict[str, Any]:
    return {
        "workspace_id": event.workspace_id,
        "message_id": event.message_id,
        "profile_id": profile_id,
        "type": event.type,
        "name": event.display_name,
        "user_id": event.user_id,
        "anonymous_id": event.anonymous_id,
        "properties": event.properties,
        "traits": event.traits,
        "context": event.context,
        "timestamp": event.timestamp,
        "received_at": event.received_at,
    }


async def find_profile(session: AsyncSession, workspace_id: str, user_id: str, by: str) -> Profile:
    """A profile by user id (or alias), or by anonymous id; 404 if none."""
    kind = domain.ANONYMOUS if by == "anonymous_id" else domain.USER
    profile = await repository.profile_for_identity(session, workspace_id, kind, user_id)
    if profile is None:
        raise NotFound(f"no user {user_id!r} in this workspace")
    return profile


async def describe(session: AsyncSession, profile: Profile) -> dict[str, Any]:
    """The public profile shape."""
    ids = await repository.identities_of(session, profile.workspace_id, profile.profile_id)
    totals = await repository.event_totals(session, profile.workspace_id, profile.profile_id)
    return {
        "user_id": profile.user_id,
        "profile_id": profile.profile_id,
        "anonymous_ids": [v for k, v in ids if k == domain.ANONYMOUS],
        "aliases": [v for k, v in ids if k == domain.USER and v != profile.user_id],
        "traits": profile.traits,
        "computed": {
            "first_seen": profile.first_seen,
            "last_seen": profile.last_seen,
            "event_counts": totals,
        },
    }


async def snapshot(session: AsyncSession, workspace_id: str, profile_id: str) -> ProfileSnapshot:
    """What the dispatcher needs to render a message to this profile."""
    profile = await repository.get_profile(session, workspace_id, profile_id)
    if profile is None:
        return ProfileSnapshot(profile_id=profile_id, found=False)
    return ProfileSnapshot(profile_id=profile_id, user_id=profile.user_id, traits=profile.traits)
