"""Ingest routes: the Segment calls, and the calls it refused, reached through the gateway."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from kernel.contracts import REJECTIONS_KEPT
from kernel.errors import BadRequest, NotFound, PayloadTooLarge
from kernel.web import Res, WorkspaceId
from services.ingest import service
from services.ingest.config import get_settings
from services.ingest.domain import client_ip
from services.ingest.schemas import Accepted

router = APIRouter(tags=["ingest"])
CALLS = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")


@router.post("/v1/{call}", response_model_exclude_none=True)
async def ingest_call(call: str, request: Request, workspace_id: WorkspaceId, res: Res) -> Accepted:
    """Validate one call (or a batch), store it in JetStream, and only then answer 200 (503 if it cannot).

    A batch keeps its good calls and drops each malformed one with its reason; a refused request is
    listed with its reason too (GET /api/v1/ingest/rejections).
    """
    if call not in CALLS:
        raise NotFound(f"unknown call {call!r}; one of {', '.join(CALLS)}")
    settings = get_settings()
    ip = client_ip(request.headers.get("x-forwarded-for"))
    try:
        received = service.events_from_body(workspace_id, call, await request.body(), settings, ip)
    except (BadRequest, PayloadTooLarge) as exc:
        refused = service.rejection(workspace_id, call, exc, None, datetime.now(UTC))
        await service.list_rejections_of(res.nats, res.jetstream, [refused])
        raise
    await service.store_events(res.nats, res.jetstream, workspace_id, received.events, settings.publish_timeout_seconds)
    await service.list_rejections_of(res.nats, res.jetstream, received.rejections)
    return Accepted(rejected=len(received.rejections) or None)


@router.get("/api/v1/ingest/rejections")
async def rejections(
    workspace_id: WorkspaceId, res: Res, limit: Annotated[int, Query(ge=1, le=REJECTIONS_KEPT)] = 50
) -> dict[str, Any]:
    """The calls this workspace sent that ingest refused or dropped from a batch, newest first, with why."""
    return {"rejections": await service.recent_rejections(res.jetstream, workspace_id, limit)}
