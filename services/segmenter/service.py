"""Segmenter use cases: define segments, count them, re-evaluate one changed profile."""

import asyncio
import secrets
from contextlib import suppress
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
import structlog
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import AudienceAnswer, AudienceQuery, MembershipChanged, ProfileChanged
from kernel.db import unit_of_work
from kernel.errors import NotFound, Unprocessable, is_dependency_outage
from services.segmenter import domain, repository
from services.segmenter.models import Segment

log = structlog.get_logger(__name__)
BACKFILL_CHUNK = 2000  # profiles per transaction when storing a new segment's members
# Stored segments whose filter today's limits refuse, already logged by this process.
_refused_logged: set[str] = set()


def compiled(filter_tree: dict[str, Any]) -> ColumnElement[bool]:
    """The SQL condition of a filter, compiled once per process; FilterError if the filter rules refuse it."""
    outcome = _compiled(orjson.dumps(filter_tree, option=orjson.OPT_SORT_KEYS))
    if isinstance(outcome, domain.FilterError):
        raise domain.FilterError(outcome.path, outcome.message)  # a fresh one: a cached one would grow its traceback
    return outcome


@lru_cache(maxsize=4096)
def _compiled(canonical: bytes) -> ColumnElement[bool] | domain.FilterError:
    # Every profile change re-evaluates every segment of its workspace: parse and compile once, and
    # remember a refusal as well, so a refused stored filter is not parsed again on every change.
    try:
        return domain.compile_filter(domain.parse(orjson.loads(canonical)))
    except domain.FilterError as exc:
        return exc


def stored_condition(segment: Segment) -> ColumnElement[bool] | None:
    """The compiled filter of a stored segment, or None if today's limits refuse it.

    A segment stored before a limit existed is not evaluated any more (its members stay as they are,
    and its size is its stored members), so one oversized filter cannot stall its workspace's
    re-evaluation; it is logged once per process, with why.
    """
    try:
        return compiled(segment.filter)
    except domain.FilterError as exc:
        if segment.id not in _refused_logged:
            _refused_logged.add(segment.id)
            log.warning(
                "segment_filter_refused", workspace_id=segment.workspace_id, segment_id=segment.id,
                path=exc.path, reason=exc.message,
            )
        return None


async def create_segment(
    session: AsyncSession, workspace_id: str, name: str, filter_tree: dict[str, Any], chunk: int = BACKFILL_CHUNK
) -> Segment:
    """Validate and store a segment, and record who is in it today.

    The filter is parsed before anything else touches it (serializing, compiling, storing), so every
    problem with it is a 422 naming where, never a database error.
    """
    try:
        domain.parse(filter_tree)
        condition = compiled(filter_tree)
    except domain.FilterError as exc:
        raise Unprocessable([{"loc": exc.path.split("."), "msg": exc.message}], error="invalid_filter") from exc
    segment = Segment(id=f"seg_{secrets.token_hex(8)}", workspace_id=workspace_id, name=name, filter=filter_tree)
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
    """Re-evaluate a batch of changed profiles in one transaction, reading each workspace's segments once.

    Profiles are taken in (workspace, profile) order, so concurrent batches lock them in one order;
    one profile's changes keep their order.
    """
    segments: dict[str, list[Segment]] = {}
    out: list[MembershipChanged] = []
    for change in sorted(changes, key=lambda c: (c.workspace_id, c.profile_id)):
        if change.workspace_id not in segments:
            segments[change.workspace_id] = await repository.list_segments(session, change.workspace_id)
        out += await reevaluate(session, change, segments[change.workspace_id])
    return out


async def reevaluate(session: AsyncSession, change: ProfileChanged, segments: list[Segment]) -> list[MembershipChanged]:
    """Re-evaluate only the changed profile against its workspace's segments."""
    ws = change.workspace_id
    now = datetime.now(UTC)
    out: list[MembershipChanged] = []

    def note(segment_id: str, profile_id: str, user_id: str | None, what: str) -> None:
        out.append(
            MembershipChanged(
                workspace_id=ws, segment_id=segment_id, profile_id=profile_id, user_id=user_id,
                change=what, at=now, cause_message_id=change.cause_message_id,  # type: ignore[arg-type]
            )
        )

    # A computing segment's members are kept, but announced only once it is ready: before that,
    # "entered" would often mean "was already in it when the segment was made".
    announced = {s.id for s in segments if s.ready_at is not None}
    for merged in change.merged_profile_ids:
        await repository.lock_profile(session, ws, merged)
        gone = sorted(await repository.memberships_of(session, ws, merged))
        await repository.leave(session, ws, merged, gone)
        for segment_id in gone:
            if segment_id in announced:
                note(segment_id, merged, None, "exited")

    conditions = {s.id: c for s in segments if (c := stored_condition(s)) is not None}
    if not conditions:
        return out
    await repository.lock_profile(session, ws, change.profile_id)
    verdicts = await repository.evaluate_for_profile(session, ws, change.profile_id, conditions)
    current = await repository.memberships_of(session, ws, change.profile_id)
    if verdicts is None:  # merged away since: it leaves everything
        verdicts = {s.id: False for s in segments}
    entered = sorted(s for s, member in verdicts.items() if member and s not in current)
    exited = sorted(s for s, member in verdicts.items() if not member and s in current)
    await repository.enter(session, ws, change.profile_id, change.user_id, entered)
    await repository.leave(session, ws, change.profile_id, exited)
    for segment_id in entered:
        if segment_id in announced:
            note(segment_id, change.profile_id, change.user_id, "entered")
    for segment_id in exited:
        if segment_id in announced:
            note(segment_id, change.profile_id, change.user_id, "exited")
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

