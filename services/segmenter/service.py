"""Segmenter use cases: define segments, count them, re-evaluate one changed profile."""

import asyncio
import secrets
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
import structlog
from nats.js import JetStreamContext
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import pagination
from kernel.contracts import AudienceAnswer, AudienceQuery, MembershipChanged, ProfileChanged
from kernel.db import unit_of_work
from kernel.errors import Conflict, NotFound, Unprocessable, is_dependency_outage
from kernel.outbox import Outbox
from services.segmenter import domain, repository
from services.segmenter.models import Segment

log = structlog.get_logger(__name__)
BACKFILL_CHUNK = 2000  # profiles per transaction when storing a new segment's members (and when sweeping)
SWEEP_EVERY = timedelta(minutes=5)  # the default of HERALD_SEGMENT_SWEEP_SECONDS
# Stored segments whose filter today's limits refuse, already logged by this process.
_refused_logged: set[str] = set()


@dataclass(frozen=True)
class Prepared:
    """A stored filter ready to evaluate: its SQL condition, and what its verdict depends on."""

    condition: ColumnElement[bool]
    reads: domain.Reads


def compiled(filter_tree: dict[str, Any]) -> ColumnElement[bool]:
    """The SQL condition of a filter, compiled once per process; FilterError if the filter rules refuse it."""
    return prepared(filter_tree).condition


def prepared(filter_tree: dict[str, Any]) -> Prepared:
    """The filter compiled, with what it reads; FilterError if the filter rules refuse it."""
    outcome = _prepared(orjson.dumps(filter_tree, option=orjson.OPT_SORT_KEYS))
    if isinstance(outcome, domain.FilterError):
        raise domain.FilterError(outcome.path, outcome.message)  # a fresh one: a cached one would grow its traceback
    return outcome


@lru_cache(maxsize=4096)
def _prepared(canonical: bytes) -> Prepared | domain.FilterError:
    # Every profile change may re-evaluate every segment of its workspace: parse and compile once, and
    # remember a refusal as well, so a refused stored filter is not parsed again on every change.
    try:
        tree = domain.parse(orjson.loads(canonical))
        return Prepared(domain.compile_filter(tree), domain.reads(tree))
    except domain.FilterError as exc:
        return exc


def stored_filter(segment: Segment) -> Prepared | None:
    """The prepared filter of a stored segment, or None if today's limits refuse it.

    A segment stored before a limit existed is not evaluated any more (its members stay as they are,
    and its size is its stored members), so one oversized filter cannot stall its workspace's
    re-evaluation; it is logged once per process, with why.
    """
    try:
        return prepared(segment.filter)
    except domain.FilterError as exc:
        if segment.id not in _refused_logged:
            _refused_logged.add(segment.id)
            log.warning(
                "segment_filter_refused", workspace_id=segment.workspace_id, segment_id=segment.id,
                path=exc.path, reason=exc.message,
            )
        return None


def stored_condition(segment: Segment) -> ColumnElement[bool] | None:
    """The compiled filter of a stored segment, or None if today's limits refuse it (see stored_filter)."""
    found = stored_filter(segment)
    return found.condition if found is not None else None


async def create_segment(
    session: AsyncSession, workspace_id: str, name: str, filter_tree: dict[str, Any], chunk: int = BACKFILL_CHUNK,
    sweep_every: timedelta = SWEEP_EVERY,
) -> Segment:
    """Validate and store a segment, and record who is in it today.

    The filter is parsed before anything else touches it (serializing, compiling, storing), so every
    problem with it is a 422 naming where, never a database error. A filter that reads the clock is
    swept every `sweep_every`, the first time one period after it was made.
    """
    found = checked_filter(filter_tree)
    segment = Segment(id=f"seg_{secrets.token_hex(8)}", workspace_id=workspace_id, name=name, filter=filter_tree)
    await repository.add_segment(session, segment)
    await store_members(session, segment, found, chunk, sweep_every)
    return segment


def checked_filter(filter_tree: Any) -> Prepared:
    """A filter from a request body's `filter`, parsed before anything else touches it; a 422 naming where it
    is wrong (`["filter", "all[0]", "value"]`)."""
    try:
        domain.parse(filter_tree)
        return prepared(filter_tree)
    except domain.FilterError as exc:
        raise Unprocessable([{"loc": exc.path.split("."), "msg": exc.message}], error="invalid_filter") from exc


async def store_members(session: AsyncSession, segment: Segment, found: Prepared, chunk: int, sweep_every: timedelta) -> None:
    """Record who is in a new (or newly defined) segment today, and when its first sweep is due.

    A workspace of up to one chunk of profiles is done now; a larger one is `computing` until the
    background backfill (`run_backfills`) has stored the rest, and the answer does not wait for it.
    """
    segment.ready_at, segment.backfilled_through, segment.swept_through = None, None, None
    segment.sweep_due_at = datetime.now(UTC) + sweep_every if found.reads.time else None
    await backfill_step(session, segment, found.condition, chunk)


async def backfill_step(session: AsyncSession, segment: Segment, condition: ColumnElement[bool], chunk: int) -> None:
    """Store one more chunk of the segment's members; mark it ready when no profile is left."""
    last = await repository.backfill_chunk(session, segment, condition, chunk)
    if last is None:
        segment.ready_at = datetime.now(UTC)
    else:
        segment.backfilled_through = last
    await session.flush()


async def backfill_next(sessions: async_sessionmaker[AsyncSession], chunk: int) -> bool:
    """One chunk of the oldest computing segment, in its own transaction; False when none is computing.

    Replicas skip a segment another is working on. A segment whose stored filter today's limits
    refuse is marked ready with the members it has (it is not re-evaluated either, see stored_condition).
    """
    async with unit_of_work(sessions) as session:
        segment = await repository.claim_computing(session)
        if segment is None:
            return False
        condition = stored_condition(segment)
        if condition is None:
            segment.ready_at = datetime.now(UTC)
            return True
        await backfill_step(session, segment, condition, chunk)
        if segment.ready_at is not None:
            log.info("segment_ready", workspace_id=segment.workspace_id, segment_id=segment.id)
        return True


async def run_backfills(
    sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event, wake: asyncio.Event, chunk: int, poll_seconds: float
) -> None:
    """Store new segments' members in the background until stopped: chunk after chunk while any segment
    is computing, then wait for `wake` (a segment was created here) or the next poll (one elsewhere).
    As the scheduler's timer: set `wake` after `stop` to end it without waiting out the poll."""
    while not stop.is_set():
        try:
            busy = await backfill_next(sessions, chunk)
        except Exception as exc:  # the database is down, or a deadlock: the chunk is retried
            busy = False
            log.warning("segment_backfill_failed", error_type=type(exc).__name__, exc_info=not is_dependency_outage(exc))
        if busy:
            await asyncio.sleep(0)  # let requests and the consumer in between chunks
            continue
        wake.clear()
        if stop.is_set():  # stopped (and woken) before the clear: do not wait out the poll
            break
        with suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), poll_seconds)


# --- time passing ---------------------------------------------------------------------------------


async def sweep_step(session: AsyncSession, segment: Segment, condition: ColumnElement[bool], now: datetime, chunk: int) -> tuple[list[MembershipChanged], bool]:
    """Re-evaluate the next chunk of the workspace's profiles (after `swept_through`) as of `now`: who
    matches now and is not stored enters, who is stored and no longer matches exits. Returns the
    membership changes and whether the sweep reached the last profile.

    Each profile of the chunk is locked first, as a re-evaluation locks it, so a change applied at the
    same time is either seen here or re-evaluated after: a verdict is never taken from a stale read.
    """
    ws = segment.workspace_id
    ids = await repository.profiles_after(session, ws, segment.swept_through, chunk)
    if not ids:
        return [], True
    await repository.lock_profiles(session, ws, ids)
    matching = await repository.matching_among(session, ws, ids, condition, now)
    stored = await repository.members_among(session, ws, segment.id, ids)
    entered = [(p, segment.id, matching[p]) for p in sorted(matching.keys() - stored)]
    exited = [(p, segment.id) for p in sorted(stored.keys() - matching.keys())]
    await repository.enter_many(session, ws, entered)
    await repository.leave_many(session, ws, exited)
    cause = f"sweep:{now.isoformat()}"  # with the segment and profile, a de-duplication id per change
    changes = [
        MembershipChanged(workspace_id=ws, segment_id=segment.id, profile_id=p, user_id=u, change="entered", at=now,
                          cause_message_id=cause)
        for p, _, u in entered
    ] + [
        MembershipChanged(workspace_id=ws, segment_id=segment.id, profile_id=p, user_id=stored[p], change="exited", at=now,
                          cause_message_id=cause)
        for p, _ in exited
    ]
    segment.swept_through = ids[-1]
    return changes, len(ids) < chunk


async def sweep_next(
    sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, outbox: Outbox, every: timedelta, chunk: int,
    now: datetime | None = None,
) -> bool:
    """One chunk of the most overdue sweep, in its own transaction, its membership changes staged in the
    outbox with it and published after commit; False when no sweep is due.

    Replicas skip a segment another is sweeping (`FOR UPDATE SKIP LOCKED`), and the position is in the
    segment's row, so a sweep resumes on any replica after a restart. `now` is the clock unless given
    (the sweep's tests pass a later one rather than wait for days).
    """
    now = now if now is not None else datetime.now(UTC)
    failing: tuple[str, str] | None = None  # (workspace, segment) while its chunk runs
    try:
        async with unit_of_work(sessions) as session:
            segment = await repository.claim_due_sweep(session, now)
            if segment is None:
                return False
            found = stored_filter(segment)
            if found is None or not found.reads.time:  # refused by today's limits, or it does not read the clock
                segment.sweep_due_at = segment.swept_through = None
                return True
            failing = (segment.workspace_id, segment.id)
            changes, done = await sweep_step(session, segment, found.condition, now, chunk)
            failing = None
            if done:
                segment.swept_through, segment.sweep_due_at = None, now + every
                log.info("segment_swept", workspace_id=segment.workspace_id, segment_id=segment.id)
            staged = await outbox.stage(session, changes)
    except Exception as exc:
        if failing is None or is_dependency_outage(exc):
            raise
        # One segment's failure (a statement timeout over a huge workspace, a bug) must not hold back
        # every other sweep behind it: it waits one period and resumes where it stopped.
        log.error("segment_sweep_failed", workspace_id=failing[0], segment_id=failing[1],
                  error_type=type(exc).__name__, exc_info=True)
        async with unit_of_work(sessions) as session:
            await repository.postpone_sweep(session, failing[1], now + every)
        return True
    await outbox.publish_after_commit(sessions, js, staged)
    return True


async def run_sweeps(
    sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, outbox: Outbox, stop: asyncio.Event,
    every: timedelta, chunk: int, poll_seconds: float,
) -> None:
    """Sweep due segments until stopped: chunk after chunk while any is due, else look again after
    `poll_seconds`. No state lives here: what is due and how far each sweep got are rows."""
    while not stop.is_set():
        try:
            busy = await sweep_next(sessions, js, outbox, every, chunk)
        except Exception as exc:  # the database is down, or a deadlock: the chunk is retried
            busy = False
            log.warning("segment_sweep_failed", error_type=type(exc).__name__, exc_info=not is_dependency_outage(exc))
        if busy:
            await asyncio.sleep(0)  # let requests and the consumer in between chunks
            continue
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_seconds)


async def get_segment(session: AsyncSession, workspace_id: str, segment_id: str) -> Segment:
    """One segment of the workspace; 404 if none (an id with NUL names none: PostgreSQL cannot hold it)."""
    segment = None if "\x00" in segment_id else await repository.get_segment(session, workspace_id, segment_id)
    if segment is None:
        raise NotFound(f"no segment {segment_id!r} in this workspace")
    return segment


async def live_segment(session: AsyncSession, workspace_id: str, segment_id: str, lock: bool = False) -> Segment:
    """One segment of the workspace that is not archived (locked for this transaction when asked); 404 if none,
    409 if it is archived."""
    segment = await get_segment(session, workspace_id, segment_id)
    if lock:
        await session.refresh(segment, with_for_update=True)
    if segment.archived_at is not None:
        raise Conflict(f"segment {segment_id!r} is archived: unarchive it first", error="archived")
    return segment


async def page(
    session: AsyncSession, workspace_id: str, query: repository.SegmentQuery, cursor: str | None, limit: int
) -> tuple[list[Segment], str | None]:
    """One page of the workspace's segments, newest first, and the cursor of the next page (None: the last)."""
    rows = await repository.page_of_segments(session, workspace_id, query, pagination.newest_first_position(cursor), limit + 1)
    return pagination.next_page(rows, limit, lambda g: (g.created_at, g.id))


async def update_segment(
    session: AsyncSession, workspace_id: str, segment_id: str, name: str | None, filter_tree: dict[str, Any] | None,
    chunk: int = BACKFILL_CHUNK, sweep_every: timedelta = SWEEP_EVERY,
) -> Segment:
    """Rename a segment or give it a new filter; a new filter stores its members again, as creation does.

    The segment is `computing` again until they are stored, and, as for a new segment, who is in it or
    out of it because of the edit is not announced (no entered / exited): announcements resume when it is
    ready. A filter equal to the stored one changes nothing.
    """
    found = checked_filter(filter_tree) if filter_tree is not None else None
    segment = await live_segment(session, workspace_id, segment_id, lock=True)
    if name is not None:
        segment.name = name
    if found is not None and _canonical(filter_tree) != _canonical(segment.filter):
        segment.filter = filter_tree  # type: ignore[assignment]
        await repository.forget_members(session, workspace_id, segment.id)
        await store_members(session, segment, found, chunk, sweep_every)
    segment.updated_at = datetime.now(UTC)
    await session.flush()
    return segment


def _canonical(filter_tree: Any) -> bytes:
    return orjson.dumps(filter_tree, option=orjson.OPT_SORT_KEYS)


async def archive(session: AsyncSession, workspace_id: str, segment_id: str) -> Segment:
    """Archive a segment: it leaves lists, matches nobody (campaigns whose audience it is send to nobody) and
    forgets its stored members, without announcing their exit. Archiving an archived segment changes nothing."""
    segment = await get_segment(session, workspace_id, segment_id)
    await session.refresh(segment, with_for_update=True)
    if segment.archived_at is None:
        now = datetime.now(UTC)
        segment.archived_at = segment.updated_at = now
        segment.sweep_due_at = segment.swept_through = None
        await repository.forget_members(session, workspace_id, segment.id)
        await session.flush()
    return segment


async def unarchive(
    session: AsyncSession, workspace_id: str, segment_id: str, chunk: int = BACKFILL_CHUNK, sweep_every: timedelta = SWEEP_EVERY
) -> Segment:
    """Bring an archived segment back: its members are stored again as for a new segment (409 if its filter
    is beyond today's limits). A live segment is answered as it is."""
    segment = await get_segment(session, workspace_id, segment_id)
    await session.refresh(segment, with_for_update=True)
    if segment.archived_at is None:
        return segment
    try:
        found = prepared(segment.filter)
    except domain.FilterError as exc:
        raise Conflict(f"its filter is beyond today's limits ({exc.path}: {exc.message}); create a new segment") from None
    segment.archived_at = None
    segment.updated_at = datetime.now(UTC)
    await store_members(session, segment, found, chunk, sweep_every)
    await session.flush()
    return segment


async def reach_of(session: AsyncSession, workspace_id: str, condition: ColumnElement[bool]) -> dict[str, int]:
    """The live size of a filter and how many of its profiles each channel can reach."""
    return await repository.reach(session, workspace_id, condition)


async def segment_reach(session: AsyncSession, segment: Segment) -> dict[str, int]:
    """A segment's live size and reach by channel: nobody for an archived one, its stored members for one
    beyond today's limits (see stored_filter)."""
    if segment.archived_at is not None:
        return {"size": 0, "email": 0, "push": 0}
    condition = stored_condition(segment)
    if condition is None:
        condition = repository.stored_member(segment.workspace_id, segment.id)
    return await reach_of(session, segment.workspace_id, condition)


async def preview(session: AsyncSession, workspace_id: str, filter_tree: Any, limit: int) -> tuple[list[str], dict[str, int]]:
    """The first user ids a filter matches now, and its live size and reach, without storing anything."""
    condition = checked_filter(filter_tree).condition
    users = await repository.first_matching_users(session, workspace_id, condition, limit)
    return users, await reach_of(session, workspace_id, condition)


@dataclass(frozen=True)
class UserMembership:
    segment: Segment
    entered_at: datetime | None


async def segments_of_user(session: AsyncSession, workspace_id: str, user_id: str) -> list[UserMembership]:
    """The live segments a user matches now (as audiences check it), each with when the user was stored as a
    member (None while that is pending: a segment still computing, a change not yet applied); 404 for no user."""
    profile_id = None if "\x00" in user_id else await repository.profile_of_user(session, workspace_id, user_id)
    if profile_id is None:
        raise NotFound(f"no user {user_id!r} in this workspace")
    segments = await repository.list_segments(session, workspace_id)
    conditions = {s.id: c for s in segments if (c := stored_condition(s)) is not None}
    verdicts = await repository.evaluate_for_profile(session, workspace_id, profile_id, conditions) or {}
    stored = await repository.entered_at(session, workspace_id, profile_id)
    # A segment beyond today's limits is not evaluated: its stored members are its members.
    member = {s.id for s in segments if verdicts.get(s.id) or (s.id not in conditions and s.id in stored)}
    found = [UserMembership(s, stored.get(s.id)) for s in segments if s.id in member]
    return sorted(found, key=lambda m: (m.segment.created_at, m.segment.id), reverse=True)


async def size(session: AsyncSession, segment: Segment) -> int:
    """The live number of profiles matching the segment, counted in SQL (stored members if not evaluated;
    none if archived)."""
    if segment.archived_at is not None:
        return 0
    condition = stored_condition(segment)
    if condition is None:
        return await repository.count_members(session, segment.workspace_id, segment.id)
    return await repository.count_matching(session, segment.workspace_id, condition)


async def reevaluate_many(session: AsyncSession, changes: list[ProfileChanged]) -> list[MembershipChanged]:
    """Re-evaluate a batch of changed profiles in one transaction: per workspace, its segments are read
    once and every changed profile is evaluated in one statement, against only the segments its changes
    may affect (a trait segment when a trait it reads changed, an event segment when an event it counts
    happened; everything for a new or merged profile)."""
    by_workspace: dict[str, list[ProfileChanged]] = {}
    for change in changes:
        by_workspace.setdefault(change.workspace_id, []).append(change)
    out: list[MembershipChanged] = []
    for ws in sorted(by_workspace):
        segments = await repository.list_segments(session, ws)
        out += await _reevaluate_workspace(session, ws, by_workspace[ws], segments)
    return out


async def _reevaluate_workspace(
    session: AsyncSession, ws: str, changes: list[ProfileChanged], segments: list[Segment]
) -> list[MembershipChanged]:
    """One workspace's changes, in their order: profiles merged away leave every segment; every other
    changed profile is evaluated once, at its state now, for the segments any of its changes may affect.
    Each membership change names the first change that may have caused it."""
    now = datetime.now(UTC)
    filters = {s.id: f for s in segments if (f := stored_filter(s)) is not None}
    # A computing segment's members are kept, but announced only once it is ready: before that,
    # "entered" would often mean "was already in it when the segment was made".
    announced = {s.id for s in segments if s.ready_at is not None}
    merged: dict[str, ProfileChanged] = {}
    first: dict[str, ProfileChanged] = {}  # profile -> its first change here
    user_ids: dict[str, str | None] = {}
    causes: dict[str, dict[str, ProfileChanged]] = {}  # profile -> segment -> first change that may affect it
    for change in changes:
        for gone in change.merged_profile_ids:
            merged.setdefault(gone, change)
        first.setdefault(change.profile_id, change)
        user_ids[change.profile_id] = change.user_id
        mine = causes.setdefault(change.profile_id, {})
        for segment_id, found in filters.items():
            if segment_id not in mine and domain.may_affect(found.reads, change):
                mine[segment_id] = change
    evaluate = {p: mine for p, mine in causes.items() if mine and p not in merged}
    involved = sorted(set(merged) | set(evaluate))
    if not involved:
        return []
    await repository.lock_profiles(session, ws, involved)
    current = await repository.memberships_of_many(session, ws, involved)
    out: list[MembershipChanged] = []
    entered: list[tuple[str, str, str | None]] = []  # (profile, segment, user id)
    exited: list[tuple[str, str]] = []  # (profile, segment)

    def note(segment_id: str, profile_id: str, user_id: str | None, what: str, cause: ProfileChanged) -> None:
        if segment_id in announced:
            out.append(
                MembershipChanged(
                    workspace_id=ws, segment_id=segment_id, profile_id=profile_id, user_id=user_id,
                    change=what, at=now, cause_message_id=cause.cause_message_id,  # type: ignore[arg-type]
                )
            )

    for profile_id, cause in merged.items():
        for segment_id in sorted(current.get(profile_id, ())):
            exited.append((profile_id, segment_id))
            note(segment_id, profile_id, None, "exited", cause)

    asked = sorted({segment_id for mine in evaluate.values() for segment_id in mine})
    verdicts = await repository.evaluate_for_profiles(session, ws, sorted(evaluate), {s: filters[s].condition for s in asked})
    for profile_id in sorted(evaluate):
        have, mine, user_id = current.get(profile_id, set()), evaluate[profile_id], user_ids[profile_id]
        row = verdicts.get(profile_id)
        if row is None:  # merged away since: it leaves everything
            for segment_id in sorted(have):
                exited.append((profile_id, segment_id))
                note(segment_id, profile_id, user_id, "exited", first[profile_id])
            continue
        for segment_id in sorted(mine):
            if row[segment_id] and segment_id not in have:
                entered.append((profile_id, segment_id, user_id))
                note(segment_id, profile_id, user_id, "entered", mine[segment_id])
        for segment_id in sorted(mine):
            if not row[segment_id] and segment_id in have:
                exited.append((profile_id, segment_id))
                note(segment_id, profile_id, user_id, "exited", mine[segment_id])
    await repository.enter_many(session, ws, entered)
    await repository.leave_many(session, ws, exited)
    return out


async def check_member(session: AsyncSession, query: AudienceQuery) -> AudienceAnswer:
    """Is this profile in the segment right now? Evaluated live, not from stored memberships."""
    segment = await repository.get_segment(session, query.workspace_id, query.segment_id)
    if segment is None:
        return AudienceAnswer(member=False, found=False)
    if segment.archived_at is not None:
        return AudienceAnswer(member=False, archived=True)
    condition = stored_condition(segment)
    if condition is None:
        member = await repository.is_member(session, query.workspace_id, segment.id, query.profile_id)
        return AudienceAnswer(member=member)
    verdicts = await repository.evaluate_for_profile(
        session, query.workspace_id, query.profile_id, {segment.id: condition}
    )
    return AudienceAnswer(member=bool(verdicts and verdicts[segment.id]))

