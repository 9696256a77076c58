"""Ingest routes: the Segment calls, reached through the gateway."""

from fastapi import APIRouter, Request

from kernel.errors import NotFound
from kernel.web import Res, WorkspaceId
from services.ingest import service
from services.ingest.config import get_settings
from services.ingest.domain import client_ip
from services.ingest.schemas import Accepted

router = APIRouter(tags=["ingest"])
CALLS = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")


@router.post("/v1/{call}")
async def ingest_call(call: str, request: Request, workspace_id: WorkspaceId, res: Res) -> Accepted:
    """Validate one call (or a batch), store it in JetStream, and only then answer 200 (503 if it cannot)."""
    if call not in CALLS:
        raise NotFound(f"unknown call {call!r}; one of {', '.join(CALLS)}")
    settings = get_settings()
    ip = client_ip(request.headers.get("x-forwarded-for"))
    events = service.events_from_body(workspace_id, call, await request.body(), settings, ip)
    await service.store_events(res.nats, res.jetstream, workspace_id, events, settings.publish_timeout_seconds)
    return Accepted()
