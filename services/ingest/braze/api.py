"""Braze-compatible user routes, reached through the gateway at Braze's own paths (`/users/track`, `/users/identify`)."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kernel.web import Res, WorkspaceId
from services.ingest.braze import service
from services.ingest.braze.schemas import IdentifyRequest, IdentifyResponse, TrackRequest, TrackResponse
from services.ingest.config import get_settings
from services.ingest.domain import client_ip

router = APIRouter(prefix="/braze", tags=["braze"])
BRAZE_ANSWERS: dict[int | str, dict[str, Any]] = {400: {"description": "the request, or every object in it, cannot be taken (errors name the fields)"}}


def _answer(answer: TrackResponse | IdentifyResponse) -> JSONResponse:
    refused = service.refused(answer)
    if refused is not None:
        return JSONResponse(refused, status_code=400)
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), status_code=201)


@router.post("/users/track", status_code=201, response_model=TrackResponse, responses=BRAZE_ANSWERS)
async def track(request: Request, workspace_id: WorkspaceId, res: Res) -> JSONResponse:
    """Braze's `/users/track`: attributes, events and purchases (75 of each), stored before the answer."""
    body = service.parse_body(await request.body(), TrackRequest)
    ip = client_ip(request.headers.get("x-forwarded-for"))
    return _answer(await service.track(res.nats, res.jetstream, workspace_id, body, get_settings(), ip))


@router.post("/users/identify", status_code=201, response_model=IdentifyResponse, responses=BRAZE_ANSWERS)
async def identify(request: Request, workspace_id: WorkspaceId, res: Res) -> JSONResponse:
    """Braze's `/users/identify`: merge alias-only (or email-only) profiles into an external id."""
    body = service.parse_body(await request.body(), IdentifyRequest)
    ip = client_ip(request.headers.get("x-forwarded-for"))
    return _answer(await service.identify(res.nats, res.jetstream, workspace_id, body, get_settings(), ip))
