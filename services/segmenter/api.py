"""Segmenter routes: define segments and read their live size."""

from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, Request

from kernel.web import Session, WorkspaceId
from services.segmenter import repository, service
from services.segmenter.config import get_settings
from services.segmenter.models import Segment
from services.segmenter.schemas import SegmentIn, SegmentList, SegmentOut

router = APIRouter(prefix="/api/v1/segments", tags=["segments"])


async def _out(session: Session, segment: Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.id,
        name=segment.name,
        filter=segment.filter,
        size=await service.size(session, segment),
        status=segment.status,
        created_at=segment.created_at,
    )


@router.post("", status_code=201)
async def create_segment(
    body: SegmentIn, workspace_id: WorkspaceId, session: Session, request: Request, after: BackgroundTasks
) -> SegmentOut:
    """Create a segment from a filter tree; answers with its current size at once.

    `status` is `ready` when its members are stored (at once in a workspace of up to
    HERALD_SEGMENT_BACKFILL_CHUNK profiles), else `computing` until the background backfill is done;
    its entered / exited events begin when it is ready. The size is live either way.
    """
    settings = get_settings()
    segment = await service.create_segment(
        session, workspace_id, body.name, body.filter, settings.segment_backfill_chunk,
        timedelta(seconds=settings.segment_sweep_seconds),
    )
    await session.refresh(segment)
    if segment.ready_at is None:
        after.add_task(request.app.state.backfill_wake.set)  # after the commit: the backfill finds it
    return await _out(session, segment)


@router.get("")
async def list_segments(workspace_id: WorkspaceId, session: Session) -> SegmentList:
    """Every segment of the workspace with its live size."""
    return SegmentList(segments=[await _out(session, s) for s in await repository.list_segments(session, workspace_id)])


@router.get("/{segment_id}")
async def get_segment(segment_id: str, workspace_id: WorkspaceId, session: Session) -> SegmentOut:
    """One segment with its live size."""
    return await _out(session, await service.get_segment(session, workspace_id, segment_id))
