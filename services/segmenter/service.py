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

from kernel.contracts import AudienceAnswer, AudienceQuery, MembershipChanged, ProfileChanged
from kernel.db import unit_of_work
from kernel.errors import NotFound, Unprocessable, is_dependency_outage
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
    try:
        domain.parse(filter_tree)
        found = prepared(filter_tree)
    except domain.FilterError as exc:
        raise Unprocessable([{"loc": exc.path.split("."), "msg": exc.message}], error="invalid_filter") from exc
    condition = found.condition
    segment = Segment(id=f"seg_{secrets.token_hex(8)}", workspace_id=workspace_id, name=name, filter=filter_tree)
    if found.reads.time:
        segment.sweep_due_at = datetime.now(UTC) + sweep_every
    await repository.add_segment(session, segment)
    # A workspace of up to one chunk of profiles is done now; a larger one is `computing` until the
    # background backfill (`run_backfills`) has stored the rest, and the answer does not wait for it.
    await backfill_step(session, segment, condition, chunk)
    return segment


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


async def size(session: AsyncSession, segment: Segment) -> int:
    """The live number of profiles matching the segment, counted in SQL (stored members if not evaluated)."""
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
    condition = stored_condition(segment)
    if condition is None:
        member = await repository.is_member(session, query.workspace_id, segment.id, query.profile_id)
        return AudienceAnswer(member=member)
    verdicts = await repository.evaluate_for_profile(
        session, query.workspace_id, query.profile_id, {segment.id: condition}
    )
    return AudienceAnswer(member=bool(verdicts and verdicts[segment.id]))

