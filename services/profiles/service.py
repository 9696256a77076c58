"""Profiles use cases: apply an event to its profile; read profiles and timelines."""

import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import Counter as Metric
from sqlalchemy.ext.asyncio import AsyncSession

from kernel import pagination
from kernel.contracts import (
    DEFAULT_SNAPSHOT_PARTS,
    ERASED_PROFILE_ID,
    Event,
    ProfileChanged,
    ProfilePart,
    ProfileSnapshot,
    Rejection,
    ResolvedEvent,
    SnapshotPart,
)
from kernel.errors import NotFound, TransientError
from services.profiles import activity, context, devices, domain, repository
from services.profiles.attributes import domain as attribute_ops
from services.profiles.attributes import service as catalogue
from services.profiles.models import Profile
from services.profiles.privacy import domain as privacy
from services.profiles.privacy import repository as tombstones
from services.profiles.subscriptions import domain as subscriptions_domain
from services.profiles.subscriptions import service as subscriptions

log = structlog.get_logger(__name__)
IGNORED = Metric(
    "herald_profiles_ignored_values_total",
    "Values events carried that profiles left out (the event itself is applied), by reason",
    ["reason"],
)


@dataclass
class Applied:
    """What to publish once the transaction that applied an event has committed."""

    resolved: ResolvedEvent
    changed: ProfileChanged
    duplicate: bool = False
    # Values the event carried that were left out or cut, listed with the rejections (GET /api/v1/ingest/rejections).
    rejections: list[Rejection] = field(default_factory=list)
    staged: list[int] = field(default_factory=list)  # outbox rows (subscription changes the event made)
    erased: bool = False  # a tombstone kept it out (privacy/domain.py): nothing stored, nothing to publish


@dataclass(slots=True)
class _Read:
    """What an event's context and traits say, read once per event."""

    seen: context.Observation
    devices: list[devices.DeviceReport]


def is_herald_event(event: Event) -> bool:
    """Herald's own events ($message_sent, ...): on the user's timeline, but not something the user did."""
    return event.type == "track" and (event.event or "").startswith("$")


def _read(event: Event) -> _Read:
    if is_herald_event(event):
        return _Read(context.Observation(), [])  # its context is the dispatcher's, not the user's device
    traits = event.traits if event.type == "identify" else {}
    seen = context.observe(event.context, traits)
    found: list[devices.DeviceReport] = []
    if "device" in event.context or "push_tokens" in traits:
        found, ignored = devices.reports(event.context, traits, seen.platform)
        seen.ignored += ignored
    return _Read(seen, found)


def _device_keys(read: _Read) -> list[tuple[str, str]]:
    """Advisory-lock keys for the devices and tokens an event names: a phone changing hands is one person's work."""
    keys = []
    for report in read.devices:
        keys.append(("device", report.device_id))
        if (token := report.fields.get("push_token")) is not None:
            keys.append(("token", token))
    return keys


async def apply_events(session: AsyncSession, events: list[Event], rules: activity.Rules | None = None) -> list[Applied]:
    """Apply events in order within this transaction, with the result of applying them one at a time.

    Every identity (and device and push token) the events name is locked first, in one statement;
    each workspace's events then cost a handful of set-based statements however many there are.
    """
    reads = [_read(e) for e in events]
    await repository.lock_identities(
        session,
        sorted(
            {(e.workspace_id, *key) for e in events for key in domain.identities_to_lock(e)}
            | {(e.workspace_id, *key) for e, r in zip(events, reads, strict=True) for key in _device_keys(r)}
        ),
    )
    positions: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        positions.setdefault(event.workspace_id, []).append(i)
    applied: dict[int, Applied] = {}
    for ws in sorted(positions):
        batch = _WorkspaceBatch(session, ws, rules or activity.Rules())
        results = await batch.apply([events[i] for i in positions[ws]], [reads[i] for i in positions[ws]])
        applied.update(zip(positions[ws], results, strict=True))
    return [applied[i] for i in range(len(events))]


class _WorkspaceBatch:
    """One workspace's events in one transaction: resolved in memory, written in a few statements.

    Identities and profiles are read and locked once; new profiles, links, events and counts are
    buffered and written together. A merge writes the buffer first, because it moves rows in SQL.
    """

    def __init__(self, session: AsyncSession, workspace_id: str, rules: activity.Rules) -> None:
        self.session, self.ws, self.rules = session, workspace_id, rules
        self.owner: dict[domain.Identity, str] = {}  # identity -> profile id, as of the event in hand
        self.profiles: dict[str, domain.ProfileState] = {}  # locked or created in this transaction
        self.new: dict[str, domain.ProfileState] = {}  # created, not yet written
        # Changed, not yet written: profile id -> the column groups that changed besides first/last seen.
        self.changed: dict[str, set[repository.Group]] = {}
        self.links: dict[domain.Identity, str] = {}
        self.rows: list[dict[str, Any]] = []
        self.counts: Counter[tuple[str, str, date]] = Counter()
        self.ignored: Counter[str] = Counter()  # reason -> values left out, counted and logged once per batch
        self.ignored_example: str | None = None  # a message id that had one, for the log
        self.devices = devices.Devices([])
        self.sightings: dict[str, attribute_ops.Sighting] = {}  # custom attributes shown, for the catalogue
        self.bought: dict[tuple[str, date], tuple[int, Decimal]] = {}  # (profile, UTC day) -> purchases, revenue

    async def apply(self, events: list[Event], reads: list[_Read]) -> list[Applied]:
        keys = sorted({key for e in events for key in domain.identities_to_lock(e)})
        stored = await repository.stored_event_profiles(self.session, self.ws, [e.message_id for e in events])
        known = await repository.find_identities(self.session, self.ws, keys)
        involved = sorted({k.profile_id for k in known.values()})
        self.profiles = await repository.lock_profiles(self.session, self.ws, involved)
        if len(self.profiles) != len(involved):
            raise TransientError("a profile was merged concurrently; retrying")
        self.owner = {key: k.profile_id for key, k in known.items()}
        reports = [report for read in reads for report in read.devices]
        if reports:
            tokens = {t for r in reports if (t := r.fields.get("push_token")) is not None}
            self.devices = devices.Devices(
                await repository.load_devices(self.session, self.ws, sorted({r.device_id for r in reports}), sorted(tokens))
            )

        blocked = await _tombstoned(self.session, self.ws, events)
        results = []
        for i, (event, read) in enumerate(zip(events, reads, strict=True)):
            if i in blocked:
                results.append(_dropped(event))
            elif event.message_id in stored:
                results.append(await self._again(event, *stored[event.message_id]))
            else:
                results.append(await self._apply(event, read))
                stored[event.message_id] = (results[-1].resolved.profile_id, results[-1].changed.merged_profile_ids)
        await self._write()
        await catalogue.record_sightings(self.session, self.ws, self.sightings)
        if self.ignored:
            for reason, n in self.ignored.items():
                IGNORED.labels(reason).inc(n)
            log.info("profile_values_ignored", workspace_id=self.ws, reasons=dict(self.ignored),
                     example_message_id=self.ignored_example)
        return results

    async def _again(self, event: Event, profile_id: str, merged: list[str]) -> Applied:
        """Already applied (a redelivery): publish again, in case the first publish was lost.

        The change is re-derived as it was first announced, merges included, so a segmenter that
        never heard of a merge still drops the merged-away profile's memberships.
        """
        profile = self.profiles.get(profile_id) or await repository.get_profile(self.session, self.ws, profile_id)
        user_id = profile.user_id if profile else event.user_id
        return Applied(
            ResolvedEvent(workspace_id=self.ws, profile_id=profile_id, user_id=user_id, event=event),
            ProfileChanged(
                workspace_id=self.ws, profile_id=profile_id, user_id=user_id, cause_message_id=event.message_id,
                merged_profile_ids=merged,
            ),
            duplicate=True,
        )

    async def _apply(self, event: Event, read: _Read) -> Applied:
        known = {}
        for key in domain.identities_to_lock(event):
            if (owner := self.owner.get(key)) is not None:
                known[key] = domain.KnownProfile(owner, self.profiles[owner].user_id)
        plan = domain.resolve(event, known)
        if plan.merge:
            await self._write()

        created = plan.survivor is None
        if plan.survivor is None:
            profile = domain.ProfileState(f"p_{uuid.uuid4().hex}", plan.user_id, {}, {}, event.timestamp, event.timestamp,
                                          user_seen=not is_herald_event(event))
            self.profiles[profile.profile_id] = self.new[profile.profile_id] = profile
        else:
            profile = self.profiles[plan.survivor]
        pid = profile.profile_id
        seen = read.seen

        traits, times = profile.traits, profile.trait_times
        changed: list[str] = []
        attributes: list[str] = []
        for other_id in plan.merge:
            other = self.profiles.pop(other_id)
            changed += domain.merge_traits(traits, times, other.traits, other.trait_times)
            changed += attribute_ops.merge(traits, times, profile.trait_ops, other.traits, other.trait_times, other.trait_ops)
            attributes += domain.merge_traits(profile.attributes, profile.attribute_times, other.attributes,
                                              other.attribute_times)
            activity.merge_sessions(profile.sessions, other.sessions, self.rules.session_gap)
            activity.merge_purchases(profile.purchases, other.purchases)
            domain.merge_seen(profile, other)
            await repository.move_profile(self.session, self.ws, other_id, pid)  # the other is deleted in SQL
            await subscriptions.move_profile(self.session, self.ws, other_id, pid)
            self.devices.move(other_id, pid)
            self.owner = {key: pid if owner == other_id else owner for key, owner in self.owner.items()}
        for key in plan.link:
            self.links[key] = self.owner[key] = pid

        self.rows.append(_event_row(event, pid, plan.merge))
        self.counts[(pid, event.display_name, event.timestamp.date())] += 1
        groups: set[repository.Group] = set(repository.GROUPS) if plan.merge else set()
        parts: set[ProfilePart] = set()
        problems: list[tuple[str, list[str | int], str]] = []  # (reason, where, why) of values left out or cut
        staged: list[int] = []
        if event.type == "identify" and event.traits:
            custom = subscriptions_domain.without_subscription_traits(event.traits)  # Braze's email_subscribe, ...
            outcome = attribute_ops.apply(traits, times, profile.trait_ops, custom, event.timestamp, event.message_id)
            changed += outcome.changed
            problems += [(p.reason, ["traits", p.trait], p.message) for p in outcome.problems]
            for name, sighting in attribute_ops.sightings(custom, event.timestamp).items():
                earlier = self.sightings.get(name)
                self.sightings[name] = sighting if earlier is None else earlier.with_(sighting)
            groups.add("traits")  # a trait's time may move even when its value does not
            if custom is not event.traits:
                staged, ignored_values = await subscriptions.apply_traits(self.session, self.ws, pid, event)
                seen.ignored += ignored_values
        if seen.attributes:
            moved, written = domain.apply_attributes(profile.attributes, profile.attribute_times, seen.attributes,
                                                     event.timestamp)
            attributes += moved
            if written:
                groups.add("attributes")
        problems += [(reason, [], IGNORED_WHY.get(reason, reason)) for reason in seen.ignored]
        for report in read.devices:
            if self.devices.apply(report, pid, event.timestamp):
                parts.add("devices")
        if (browser := _session_kind(event, seen.platform)) is not None:
            tz = event.context.get("timezone")
            tz = tz if isinstance(tz, str) and context.zone(tz) is not None else profile.attributes.get("time_zone")
            if activity.add_session(profile.sessions, event.timestamp, tz, browser, self.rules.session_gap):
                groups.add("activity")
                parts.add("sessions")
        if event.type == "track" and event.event == activity.ORDER_COMPLETED:
            amount, ignored = activity.order_amount(event.properties, self.rules)
            activity.add_purchase(profile.purchases, event.timestamp, amount)
            day = (pid, event.timestamp.astimezone(UTC).date())
            count, revenue = self.bought.get(day, (0, Decimal(0)))
            self.bought[day] = (count + 1, revenue + (amount or 0))
            groups.add("activity")
            parts.add("purchases")
            if ignored:
                problems.append((ignored, ["properties"], IGNORED_WHY[ignored]))
        if profile.user_id is None and plan.user_id:
            profile.user_id = plan.user_id
            groups.add("traits")
        first_seen, last_seen = profile.first_seen, profile.last_seen
        if domain.see(profile, event.timestamp, by_user=not is_herald_event(event)):
            groups.add("activity")
        if profile.first_seen != first_seen:
            parts.add("first_seen")
        if profile.last_seen != last_seen:
            parts.add("last_seen")
        if problems:
            self.ignored.update(reason for reason, _, _ in problems)
            self.ignored_example = self.ignored_example or event.message_id
        if pid not in self.new:
            self.changed.setdefault(pid, set()).update(groups)

        return Applied(
            ResolvedEvent(workspace_id=self.ws, profile_id=pid, user_id=profile.user_id, event=event),
            ProfileChanged(
                workspace_id=self.ws,
                profile_id=pid,
                user_id=profile.user_id,
                cause_message_id=event.message_id,
                changed_traits=sorted(set(changed)),
                changed_attributes=sorted(set(attributes)),
                changed_parts=sorted(parts),
                merged_profile_ids=plan.merge,
                event_name=event.display_name,
                created=created,
            ),
            staged=staged,
            rejections=_rejections(event, problems),
        )

    async def _write(self) -> None:
        """Write what is buffered: profiles (new and changed), identity links, events, counts."""
        await repository.insert_profiles(self.session, self.ws, list(self.new.values()))
        await repository.update_profiles(
            self.session, self.ws, [(self.profiles[p], frozenset(g)) for p, g in sorted(self.changed.items())]
        )
        await repository.link_identities(self.session, self.ws, self.links)
        await repository.insert_events(self.session, self.ws, self.rows)
        await repository.bump_counts(self.session, self.ws, self.counts)
        await repository.bump_days(self.session, self.ws, self._days())
        await repository.save_devices(self.session, self.ws, [self.devices.by_id[d] for d in self.devices.touched])
        self.devices.touched = set()
        self.new, self.changed = {}, {}
        self.links, self.rows, self.counts = {}, [], Counter()

    def _days(self) -> dict[tuple[str, date], tuple[int, int, Decimal]]:
        """The per-day changes buffered (sessions started, purchases, revenue), taken out of the buffers."""
        days = {key: (0, n, amount) for key, (n, amount) in self.bought.items()}
        self.bought = {}
        for pid, profile in self.profiles.items():
            for day, n in profile.sessions.started.items():
                if n:
                    sessions, purchases, revenue = days.get((pid, day), (0, 0, Decimal(0)))
                    days[(pid, day)] = (sessions + n, purchases, revenue)
            profile.sessions.started.clear()
        return days


# What each reason for leaving a value out means, as the rejections list says it.
IGNORED_WHY = {
    context.UNKNOWN_LOCALE: "a locale or language with no ISO 639 language (context.locale, traits.language): left out",
    context.INVALID_TIME_ZONE: "a time zone the IANA database does not know (context.timezone, traits.time_zone): left out",
    context.COORDINATES_OUT_OF_RANGE: "context.location outside latitude ±90 or longitude ±180: left out",
    context.WRONG_TYPE: "a standard attribute or device field of the wrong type (context or traits): left out",
    devices.PUSH_TOKEN_WITHOUT_DEVICE: "a push_tokens entry without a device_id: left out",
    activity.UNKNOWN_CURRENCY: "an order in a currency with no configured rate: counted without its amount",
    activity.BAD_AMOUNT: "an order whose revenue or total is not a number: counted without its amount",
    **subscriptions_domain.IGNORED_WHY,
}
REJECTION_NAMESPACE = uuid.UUID("5d0c8c8e-4c1e-4f43-9d0b-3b7a8d0f12a6")
MAX_REJECTION_ERRORS = 20  # values listed per rejection
# What a ProfileChanged names as its cause when a device was registered through the API (no event is stored).
DEVICE_REGISTERED = "$device_registered"


def _rejections(event: Event, problems: list[tuple[str, list[str | int], str]]) -> list[Rejection]:
    """One listed rejection per reason an event's values were left out or cut (the event itself was applied).

    Their ids follow from the event's, so a redelivered batch lists nothing twice.
    """
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for reason, where, why in problems:
        by_reason.setdefault(reason, []).append({"loc": where, "msg": why, "type": reason})
    return [
        Rejection(
            workspace_id=event.workspace_id,
            rejection_id=uuid.uuid5(REJECTION_NAMESPACE, f"{event.workspace_id}\x1f{event.message_id}\x1f{reason}").hex,
            at=event.received_at, route="profiles", type=event.type, message_id=event.message_id,
            event=event.event, reason=reason, errors=errors[:MAX_REJECTION_ERRORS],
        )
        for reason, errors in sorted(by_reason.items())
    ]


async def _tombstoned(session: AsyncSession, workspace_id: str, events: list[Event]) -> set[int]:
    """The positions of the events an erased person's tombstones keep out: one lookup for the whole batch."""
    if not await tombstones.any_tombstone(session, workspace_id):
        return set()
    digests = sorted({d for event in events for d in privacy.event_digests(event)})
    gone = await tombstones.tombstoned(session, workspace_id, digests)
    return privacy.blocked_positions(events, [is_herald_event(e) for e in events], gone) if gone else set()


def _dropped(event: Event) -> Applied:
    """What an event a tombstone kept out leaves: nothing stored, nothing published (`erased`)."""
    return Applied(
        ResolvedEvent(workspace_id=event.workspace_id, profile_id=ERASED_PROFILE_ID, event=event),
        ProfileChanged(workspace_id=event.workspace_id, profile_id=ERASED_PROFILE_ID, cause_message_id=event.message_id),
        erased=True,
    )


def _session_kind(event: Event, platform: context.Platform | None) -> bool | None:
    """True: browser activity (sessions by inactivity); False: a phone's session start; None: no session."""
    if is_herald_event(event):
        return None
    if platform == "web":
        return True
    if platform is not None and event.type == "track" and event.event == activity.OPENED:
        return False
    return None


def _event_row(event: Event, profile_id: str, merged: list[str]) -> dict[str, Any]:
    return {
        "merged_profile_ids": merged or None,
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


def attributes_view(attributes: dict[str, Any], times: dict[str, str]) -> dict[str, Any]:
    """The standard attributes as the profile JSON shows them: the location with the time it was reported."""
    if "location" not in attributes or "location" not in times:
        return attributes
    return {**attributes, "location": {**attributes["location"], "at": datetime.fromisoformat(times["location"][1:]).isoformat()}}


def device_view(device: devices.DeviceState | Any) -> dict[str, Any]:
    """A device as the profile JSON shows it."""
    return {
        "device_id": device.device_id, "platform": device.platform, "app": device.app,
        "app_version": device.app_version, "os_version": device.os_version, "model": device.model,
        "locale": device.locale, "time_zone": device.time_zone, "push_token": device.push_token,
        "push_enabled": device.push_enabled, "last_seen": device.last_seen,
    }


def computed_view(profile: Profile, totals: dict[str, int], currency: str) -> dict[str, Any]:
    """What the profile computes, as the profile JSON shows it (`computed`)."""
    hours = profile.session_hours or [0] * activity.HOURS_OF_WEEK
    return {
        "first_seen": profile.first_seen,
        "last_seen": profile.last_seen,
        "event_counts": totals,
        "sessions": {
            "count": profile.session_count,
            "first": profile.first_session,
            "last": profile.last_session,
            "hour_of_week": [hours[day * 24 : day * 24 + 24] for day in range(7)],
        },
        "purchases": {
            "count": profile.purchase_count,
            "revenue": float(profile.revenue),
            "currency": currency,
            "first": profile.first_purchase,
            "last": profile.last_purchase,
        },
    }


async def describe(session: AsyncSession, profile: Profile, currency: str = "USD") -> dict[str, Any]:
    """The public profile shape."""
    ids = await repository.identities_of(session, profile.workspace_id, profile.profile_id)
    totals = await repository.event_totals(session, profile.workspace_id, profile.profile_id)
    owned = await repository.devices_of(session, profile.workspace_id, profile.profile_id)
    return {
        "user_id": profile.user_id,
        "profile_id": profile.profile_id,
        "anonymous_ids": [v for k, v in ids if k == domain.ANONYMOUS],
        "aliases": [v for k, v in ids if k == domain.USER and v != profile.user_id],
        "traits": profile.traits,
        "attributes": attributes_view(profile.attributes, profile.attribute_times),
        "devices": [device_view(d) for d in owned],
        "subscriptions": (await subscriptions.describe(session, profile.workspace_id, profile.profile_id)).model_dump(),
        "computed": computed_view(profile, totals, currency),
    }


async def snapshot(
    session: AsyncSession, workspace_id: str, profile_id: str,
    parts: Collection[SnapshotPart] = DEFAULT_SNAPSHOT_PARTS, currency: str = "USD",
) -> ProfileSnapshot:
    """What the dispatcher needs to render a message to this profile: the parts asked for (each costs its reads)."""
    profile = await repository.get_profile(session, workspace_id, profile_id)
    if profile is None:
        return ProfileSnapshot(profile_id=profile_id, found=False)
    filled: dict[str, Any] = {"traits": profile.traits} if "traits" in parts else {}
    if "subscriptions" in parts:
        filled["subscriptions"] = await subscriptions.describe(session, workspace_id, profile_id)
    if "attributes" in parts:
        filled["attributes"] = attributes_view(profile.attributes, profile.attribute_times)
    if "devices" in parts:
        filled["devices"] = [device_view(d) for d in await repository.devices_of(session, workspace_id, profile_id)]
    if "computed" in parts:
        filled["computed"] = computed_view(profile, await repository.event_totals(session, workspace_id, profile_id), currency)
    return ProfileSnapshot.model_validate({"profile_id": profile_id, "user_id": profile.user_id, **filled})


async def snapshot_of_identity(
    session: AsyncSession, workspace_id: str, user_id: str | None, anonymous_id: str | None
) -> ProfileSnapshot:
    """The snapshot of the profile a user id (or alias), else an anonymous id, is; `found` false when none is."""
    kind, value = (domain.USER, user_id) if user_id else (domain.ANONYMOUS, anonymous_id or "")
    profile = await repository.profile_for_identity(session, workspace_id, kind, value) if value else None
    if profile is None:
        return ProfileSnapshot(profile_id="", found=False)
    return await snapshot(session, workspace_id, profile.profile_id)


async def _device_batch(session: AsyncSession, workspace_id: str, device_ids: list[str], tokens: list[str]) -> devices.Devices:
    """The devices and tokens named, locked until commit against the event path and other calls."""
    keys = [(workspace_id, "device", d) for d in device_ids] + [(workspace_id, "token", t) for t in tokens]
    await repository.lock_identities(session, sorted(keys))
    return devices.Devices(await repository.load_devices(session, workspace_id, device_ids, tokens))


async def register_device(
    session: AsyncSession, profile: Profile, device_id: str, fields: dict[str, str | None], at: datetime
) -> dict[str, Any]:
    """Register a device (and its push token) on a profile, as of `at`; a token called dead before is live again."""
    token = fields.get("push_token")
    batch = await _device_batch(session, profile.workspace_id, [device_id], [token] if token else [])
    batch.apply(devices.DeviceReport(device_id, fields, register=True), profile.profile_id, at)
    await repository.save_devices(session, profile.workspace_id, [batch.by_id[d] for d in batch.touched])
    return device_view(batch.by_id[device_id])


def device_registered(profile: Profile, device_id: str, at: datetime) -> ProfileChanged:
    """The change a device registered through the API announces: the profile's devices (segments reading them
    re-evaluate it). Its cause id follows from the device and the time, so a retried publish is de-duplicated."""
    return ProfileChanged(
        workspace_id=profile.workspace_id, profile_id=profile.profile_id, user_id=profile.user_id,
        cause_message_id=f"$device_registered:{device_id}:{at.isoformat()}", changed_parts=["devices"],
        event_name=DEVICE_REGISTERED,
    )


async def deactivate_token(session: AsyncSession, workspace_id: str, token: str) -> dict[str, Any] | None:
    """A provider said this push token is dead: its device is no longer push-enabled (None: no device holds it)."""
    batch = await _device_batch(session, workspace_id, [], [token])
    device = batch.deactivate(token)
    if device is None:
        return None
    await repository.save_devices(session, workspace_id, [device])
    return {**device_view(device), "profile_id": device.profile_id}


async def list_users(
    session: AsyncSession, workspace_id: str, search: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the workspace's users newest first (as `UserSummary`), and the next page's cursor (None: the last)."""
    read = await repository.page_of_profiles(session, workspace_id, search, pagination.newest_first_position(cursor), limit + 1)
    rows, next_cursor = pagination.next_page(read, limit, lambda p: (p.created_at, p.profile_id))
    anonymous = await repository.identities_of_many(session, workspace_id, [p.profile_id for p in rows], domain.ANONYMOUS)
    users = [
        {
            "user_id": p.user_id,
            "profile_id": p.profile_id,
            "email": email if isinstance(email := (p.traits or {}).get("email"), str) else None,
            "anonymous_ids": anonymous.get(p.profile_id, []),
            "first_seen": p.first_seen,
            "last_seen": p.last_seen,
            "created_at": p.created_at,
        }
        for p in rows
    ]
    return users, next_cursor
