"""Segmenter routes: define, list, edit and archive segments, preview a filter, read sizes, reach and a user's segments."""

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request

from kernel import pagination
from kernel.web import Session, WorkspaceId
from services.segmenter import repository, service
from services.segmenter.config import get_settings
from services.segmenter.models import Segment
from services.segmenter.schemas import (
    Preview,
    PreviewIn,
    Reach,
    SegmentIn,
    SegmentList,
    SegmentOut,
    SegmentPatch,
    SegmentReach,
    UserSegment,
    UserSegments,
)

router = APIRouter(prefix="/api/v1/segments", tags=["segments"])
users_router = APIRouter(prefix="/api/v1/users", tags=["users"])


async def _out(session: Session, segment: Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.id,
        name=segment.name,
        filter=segment.filter,
        size=await service.size(session, segment),
        status=segment.status,
        created_at=segment.created_at,
        updated_at=segment.updated_at,
        archived_at=segment.archived_at,
    )


def _timing() -> tuple[int, timedelta]:
    settings = get_settings()
    return settings.segment_backfill_chunk, timedelta(seconds=settings.segment_sweep_seconds)


def _wake_backfill(segment: Segment, request: Request, after: BackgroundTasks) -> None:
    if segment.ready_at is None:
        after.add_task(request.app.state.backfill_wake.set)  # after the commit: the backfill finds it


@router.post("", status_code=201)
async def create_segment(
    body: SegmentIn, workspace_id: WorkspaceId, session: Session, request: Request, after: BackgroundTasks
) -> SegmentOut:
    """Create a segment from a filter tree; answers with its current size at once.

    `status` is `ready` when its members are stored (at once in a workspace of up to
    HERALD_SEGMENT_BACKFILL_CHUNK profiles), else `computing` until the background backfill is done;
    its entered / exited events begin when it is ready. The size is live either way.
    """
    chunk, sweep_every = _timing()
    segment = await service.create_segment(session, workspace_id, body.name, body.filter, chunk, sweep_every)
    await session.refresh(segment)
    _wake_backfill(segment, request, after)
    return await _out(session, segment)


@router.get("")
async def list_segments(
    workspace_id: WorkspaceId,
    session: Session,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
    status: Annotated[list[Literal["computing", "ready"]] | None, Query(description="only segments in these states")] = None,
    archived: Annotated[
        Literal["exclude", "include", "only"], Query(description="archived segments: left out (default), included, or only them")
    ] = "exclude",
    query: Annotated[
        pagination.Search,
        Query(min_length=1, max_length=pagination.MAX_SEARCH_CHARS, description="only segments whose name contains this text (any case)"),
    ] = None,
    created_after: pagination.CreatedAfter = None,
    created_before: pagination.CreatedBefore = None,
) -> SegmentList:
    """The workspace's segments with their live sizes, newest first, a page at a time (`next_cursor`)."""
    wanted = repository.SegmentQuery(
        statuses=tuple(status or ()), archived=archived, name_contains=query,
        created_after=pagination.utc(created_after, "created_after"),
        created_before=pagination.utc(created_before, "created_before"),
    )
    rows, next_cursor = await service.page(session, workspace_id, wanted, cursor, limit)
    return SegmentList(segments=[await _out(session, s) for s in rows], next_cursor=next_cursor)


@router.post("/preview")
async def preview_segment(body: PreviewIn, workspace_id: WorkspaceId, session: Session) -> Preview:
    """The first users a filter matches now, its live count and reach by channel, before it is saved (nothing is stored)."""
    users, reach = await service.preview(session, workspace_id, body.filter, body.limit)
    return Preview(user_ids=users, count=reach["size"], reach=Reach.model_validate(reach))


@router.get("/{segment_id}")
async def get_segment(segment_id: str, workspace_id: WorkspaceId, session: Session) -> SegmentOut:
    """One segment with its live size (archived ones too)."""
    return await _out(session, await service.get_segment(session, workspace_id, segment_id))


@router.patch("/{segment_id}")
async def update_segment(
    segment_id: str, body: SegmentPatch, workspace_id: WorkspaceId, session: Session, request: Request,
    after: BackgroundTasks,
) -> SegmentOut:
    """Rename a segment or change its filter (409 if archived).

    A new filter stores the members again, as creation does: `computing` until they are stored, and
    who enters or leaves because of the edit is not announced; entered / exited resume when it is ready.
    """
    chunk, sweep_every = _timing()
    segment = await service.update_segment(session, workspace_id, segment_id, body.name, body.filter, chunk, sweep_every)
    await session.refresh(segment)
    _wake_backfill(segment, request, after)
    return await _out(session, segment)


@router.post("/{segment_id}/archive")
async def archive_segment(segment_id: str, workspace_id: WorkspaceId, session: Session) -> SegmentOut:
    """Archive a segment: out of lists unless asked for, it matches nobody (campaigns aimed at it send to
    nobody) and its stored members are forgotten without exit events. Idempotent."""
    segment = await service.archive(session, workspace_id, segment_id)
    await session.refresh(segment)
    return await _out(session, segment)


@router.post("/{segment_id}/unarchive")
async def unarchive_segment(
    segment_id: str, workspace_id: WorkspaceId, session: Session, request: Request, after: BackgroundTasks
) -> SegmentOut:
    """Bring an archived segment back; its members are stored again as for a new segment. Idempotent."""
    chunk, sweep_every = _timing()
    segment = await service.unarchive(session, workspace_id, segment_id, chunk, sweep_every)
    await session.refresh(segment)
    _wake_backfill(segment, request, after)
    return await _out(session, segment)


@router.get("/{segment_id}/reach")
async def segment_reach(segment_id: str, workspace_id: WorkspaceId, session: Session) -> SegmentReach:
    """The segment's live size broken down by the channels that can reach its members."""
    segment = await service.get_segment(session, workspace_id, segment_id)
    return SegmentReach(segment_id=segment.id, **await service.segment_reach(session, segment))


@users_router.get("/{user_id}/segments")
async def user_segments(user_id: str, workspace_id: WorkspaceId, session: Session) -> UserSegments:
    """The live segments a user is in now, newest segment first, with when each stored the user as a member."""
    found = await service.segments_of_user(session, workspace_id, user_id)
    return UserSegments(
        user_id=user_id,
        segments=[UserSegment(segment_id=m.segment.id, name=m.segment.name, entered_at=m.entered_at) for m in found],
    )
