"""Subscription and consent use cases: set states (from traits, the API, links and SMS replies), manage groups,
record consent. Every change is written with the event that announces it, staged in the profiles outbox in the
same transaction (`$subscription_changed`, `$consent_changed`), and published after commit onto EVENTS, so the
profiles consumer stores it on the timeline and publishes it on PROFILES like any other event."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kernel import pagination
from kernel.contracts import (
    Event,
    SubscriptionChange,
    SubscriptionEntry,
    SubscriptionSet,
    SubscriptionsSnapshot,
)
from kernel.errors import Conflict, NotFound, Unprocessable
from kernel.outbox import Outbox
from services.profiles import domain as profiles_domain
from services.profiles import repository as profiles_repository
from services.profiles.models import Profile
from services.profiles.subscriptions import domain, models, repository
from services.profiles.subscriptions.domain import Requested, Speaker
from services.profiles.subscriptions.models import SubscriptionGroup

OUTBOX = Outbox(models.outbox)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one requested change did: the entry held now, and whether the change replaced the one before."""

    key: str
    current: SubscriptionEntry
    changed: bool


async def speaker(session: AsyncSession, workspace_id: str, profile_id: str, user_id: str | None) -> Speaker:
    """Whom an announcement about this profile names: its user id, else one of its anonymous ids."""
    if user_id is not None:
        return Speaker(user_id, None)
    ids = await profiles_repository.identities_of(session, workspace_id, profile_id)
    anonymous = [value for kind, value in ids if kind == profiles_domain.ANONYMOUS]
    return Speaker(None, anonymous[0] if anonymous else None)


async def _lock_profile(session: AsyncSession, workspace_id: str, profile_id: str) -> None:
    """Hold the profile against a merge and the event path until commit."""
    found = await session.scalar(
        select(Profile.profile_id)
        .where(Profile.workspace_id == workspace_id, Profile.profile_id == profile_id)
        .with_for_update()
    )
    if found is None:
        raise Conflict("the user was merged into another just now; retry")


async def apply(
    session: AsyncSession,
    workspace_id: str,
    profile_id: str,
    who: Speaker,
    changes: list[Requested],
    groups: dict[str, SubscriptionGroup],
    now: datetime,
) -> tuple[list[Outcome], list[int]]:
    """Apply changes to one (locked) profile in order, the newest of each key winning; stage an event per change
    that won and moved the state (a newer entry with the same state only updates when and where from). Returns each
    change's outcome and the outbox ids to publish after commit."""
    held = (await repository.states_of(session, workspace_id, [profile_id])).get(profile_id, {})
    outcomes: list[Outcome] = []
    events: list[Event] = []
    writes: dict[str, SubscriptionEntry] = {}
    for change in changes:
        before = held.get(change.key)
        if domain.wins(change.entry, before):
            held[change.key] = writes[change.key] = change.entry
            group = groups.get(change.key)
            if before is None or before.state != change.entry.state:
                events.append(domain.change_event(
                    workspace_id, profile_id, who, change.key, before, change.entry, now,
                    group.channel if group else None, change.details,
                ))
            outcomes.append(Outcome(change.key, change.entry, True))
        else:
            outcomes.append(Outcome(change.key, held[change.key], False))
    await repository.save_states(session, workspace_id, [(profile_id, k, e) for k, e in writes.items()])
    staged = await OUTBOX.stage(session, events) if who.user_id or who.anonymous_id else []
    return outcomes, staged


async def apply_traits(
    session: AsyncSession, workspace_id: str, profile_id: str, event: Event
) -> tuple[list[int], list[str]]:
    """The subscription changes an identify's traits ask for, applied as of the event's time (the profile is
    locked or new in the caller's transaction). Returns the outbox ids and the reasons for values left out
    (a group this workspace does not have, or archived, is left out)."""
    changes, ignored = domain.trait_changes(event.traits, event.timestamp)
    if not changes:
        return [], ignored
    group_ids = sorted({c.key for c in changes if not domain.is_channel(c.key)})
    groups = await repository.groups_by_id(session, workspace_id, group_ids)
    usable = []
    for change in changes:
        group = groups.get(change.key)
        if domain.is_channel(change.key) or (group is not None and group.archived_at is None):
            usable.append(change)
        else:
            ignored.append(domain.UNKNOWN_GROUP)
    who = Speaker(event.user_id, event.anonymous_id)
    _, staged = await apply(session, workspace_id, profile_id, who, usable, groups, datetime.now(UTC))
    return staged, ignored


async def move_profile(session: AsyncSession, workspace_id: str, source: str, target: str) -> None:
    """A merge: `source`'s subscription states and consent history join `target`'s."""
    await repository.move_profile(session, workspace_id, source, target)


def _snapshot(entries: dict[str, SubscriptionEntry]) -> SubscriptionsSnapshot:
    return SubscriptionsSnapshot(
        email=entries.get("email"),
        push=entries.get("push"),
        sms=entries.get("sms"),
        groups={k: e for k, e in sorted(entries.items()) if not domain.is_channel(k)},
    )


async def describe(session: AsyncSession, workspace_id: str, profile_id: str) -> SubscriptionsSnapshot:
    """A profile's subscriptions as the profile JSON shows them (`subscriptions`)."""
    return _snapshot((await repository.states_of(session, workspace_id, [profile_id])).get(profile_id, {}))


async def _usable_groups(session: AsyncSession, workspace_id: str, group_ids: list[str], loc: str) -> dict[str, SubscriptionGroup]:
    """The groups named, each one this workspace has and has not archived; else a 404 or 422 naming it."""
    groups = await repository.groups_by_id(session, workspace_id, group_ids)
    for group_id in group_ids:
        group = groups.get(group_id)
        if group is None:
            raise NotFound(f"no subscription group {group_id!r} in this workspace (at {loc}.{group_id})")
        if group.archived_at is not None:
            raise Unprocessable([{"loc": ["body", loc, group_id], "msg": "this subscription group is archived"}])
    return groups


async def set_from_api(
    session: AsyncSession, profile: Profile, changes: list[Requested]
) -> tuple[SubscriptionsSnapshot, list[int]]:
    """Set a user's states from the API (`PUT /api/v1/users/{id}/subscriptions`); the states held after it."""
    ws, pid = profile.workspace_id, profile.profile_id
    groups = await _usable_groups(session, ws, sorted({c.key for c in changes if not domain.is_channel(c.key)}), "groups")
    await _lock_profile(session, ws, pid)
    who = await speaker(session, ws, pid, profile.user_id)
    _, staged = await apply(session, ws, pid, who, changes, groups, datetime.now(UTC))
    return await describe(session, ws, pid), staged


async def set_from_request(session: AsyncSession, change: SubscriptionChange) -> tuple[SubscriptionSet, list[int]]:
    """Another service asks (rpc.profiles.set_subscription): an unsubscribe link, an SMS STOP or START."""
    ws = change.workspace_id
    if change.profile_id is not None:
        profile = await profiles_repository.get_profile(session, ws, change.profile_id)
    else:
        assert change.user_id is not None  # the contract holds one of the two
        profile = await profiles_repository.profile_for_identity(session, ws, profiles_domain.USER, change.user_id)
    if profile is None:
        return SubscriptionSet(found=False, error="no_user"), []
    key = change.channel or change.group_id or ""
    groups: dict[str, SubscriptionGroup] = {}
    if change.group_id is not None:
        group = await repository.get_group(session, ws, change.group_id)
        if group is None:
            return SubscriptionSet(profile_id=profile.profile_id, error="unknown_group"), []
        if group.archived_at is not None:
            return SubscriptionSet(profile_id=profile.profile_id, error="archived_group"), []
        if change.state not in domain.GROUP_STATES:
            return SubscriptionSet(profile_id=profile.profile_id, error="invalid"), []
        groups[key] = group
    await _lock_profile(session, ws, profile.profile_id)
    who = await speaker(session, ws, profile.profile_id, profile.user_id)
    entry = SubscriptionEntry(state=change.state, at=change.at, source=change.source)
    requested = Requested(key, entry, dict(change.details))
    outcomes, staged = await apply(session, ws, profile.profile_id, who, [requested], groups, datetime.now(UTC))
    return SubscriptionSet(profile_id=profile.profile_id, changed=outcomes[0].changed, current=outcomes[0].current), staged


# --- groups ---------------------------------------------------------------------------------


async def create_group(session: AsyncSession, workspace_id: str, channel: str, name: str, description: str | None) -> SubscriptionGroup:
    """A new subscription group on a channel."""
    now = datetime.now(UTC)
    return await repository.add_group(session, SubscriptionGroup(
        workspace_id=workspace_id, group_id=domain.new_group_id(), channel=channel, name=name, description=description,
        created_at=now, updated_at=now,
    ))


async def find_group(session: AsyncSession, workspace_id: str, group_id: str, lock: bool = False) -> SubscriptionGroup:
    """One of the workspace's groups; 404 if it has none of that id."""
    group = await repository.get_group(session, workspace_id, group_id, lock)
    if group is None:
        raise NotFound(f"no subscription group {group_id!r} in this workspace")
    return group


async def edit_group(session: AsyncSession, workspace_id: str, group_id: str, fields: dict[str, Any]) -> SubscriptionGroup:
    """Rename or re-describe a group (409 if archived)."""
    group = await find_group(session, workspace_id, group_id, lock=True)
    if group.archived_at is not None and fields:
        raise Conflict("an archived subscription group cannot be edited; unarchive it first")
    changed = {k: v for k, v in fields.items() if getattr(group, k) != v}
    if changed:
        for name, value in changed.items():
            setattr(group, name, value)
        group.updated_at = datetime.now(UTC)
        await session.flush()
    return group


async def set_archived(session: AsyncSession, workspace_id: str, group_id: str, archived: bool) -> SubscriptionGroup:
    """Archive a group (it takes no new subscribers; its states are kept) or bring it back. Idempotent."""
    group = await find_group(session, workspace_id, group_id, lock=True)
    if archived != (group.archived_at is not None):
        now = datetime.now(UTC)
        group.archived_at = now if archived else None
        group.updated_at = now
        await session.flush()
    return group


async def remove_group(session: AsyncSession, workspace_id: str, group_id: str) -> tuple[SubscriptionGroup, bool]:
    """Delete a group that never had members; a group with members is archived instead. True when deleted."""
    group = await find_group(session, workspace_id, group_id, lock=True)
    if await repository.member_count(session, workspace_id, group_id):
        return await set_archived(session, workspace_id, group_id, True), False
    await repository.delete_group(session, group)
    return group, True


async def list_groups(
    session: AsyncSession, workspace_id: str, channel: str | None, archived: str, cursor: str | None, limit: int
) -> tuple[list[SubscriptionGroup], dict[str, int], str | None]:
    """One page of the workspace's groups newest first, their subscribed counts, and the next page's cursor."""
    read = await repository.page_of_groups(
        session, workspace_id, channel, archived, pagination.newest_first_position(cursor), limit + 1
    )
    rows, next_cursor = pagination.next_page(read, limit, lambda g: (g.created_at, g.group_id))
    counts = await repository.subscribed_counts(session, workspace_id, [g.group_id for g in rows])
    return rows, counts, next_cursor


async def subscribed_count(session: AsyncSession, workspace_id: str, group_id: str) -> int:
    """How many profiles are subscribed to a group now."""
    return (await repository.subscribed_counts(session, workspace_id, [group_id])).get(group_id, 0)


# --- consent --------------------------------------------------------------------------------


def _record(row: models.Consent) -> dict[str, Any]:
    return {c: getattr(row, c) for c in (
        "seq", "consent_id", "purpose", "status", "policy_version", "source", "at", "recorded_at"
    )}


async def record_consent(
    session: AsyncSession, profile: Profile, fields: dict[str, Any]
) -> tuple[dict[str, Any], bool, bool, list[int]]:
    """Keep a consent record; announce it when it is now the one in force for its purpose.

    Returns the record, whether it is new (False: the same record was already held), whether it is in force,
    and the outbox ids to publish after commit."""
    ws, pid = profile.workspace_id, profile.profile_id
    await _lock_profile(session, ws, pid)
    history = [_record(r) for r in await repository.consents_of(session, ws, pid, fields["purpose"])]
    before = domain.consents_in_force(history).get(fields["purpose"])
    values = {**fields, "workspace_id": ws, "profile_id": pid, "consent_id": f"cs_{uuid.uuid4().hex}"}
    row = await repository.add_consent(session, values)
    if row is None:
        stored = await repository.same_consent(session, values)
        assert stored is not None  # the conflict that refused it is this record
        record = _record(stored)
        return record, False, bool(before and before["seq"] == record["seq"]), []
    record = _record(row)
    in_force = domain.consents_in_force([*history, record])[fields["purpose"]]["seq"] == record["seq"]
    staged: list[int] = []
    if in_force:
        who = await speaker(session, ws, pid, profile.user_id)
        if who.user_id or who.anonymous_id:
            event = domain.consent_event(ws, who, record, before["status"] if before else None, datetime.now(UTC))
            staged = await OUTBOX.stage(session, [event])
    return record, True, in_force, staged


async def consents(session: AsyncSession, workspace_id: str, profile_id: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """A profile's consent history newest first, and the record in force per purpose."""
    history = [_record(r) for r in await repository.consents_of(session, workspace_id, profile_id)]
    return history, domain.consents_in_force(history)
