"""Baseline for the ingest scenario: ingest's own parsing and validation, with no publish.

Served by uvicorn exactly like the ingest service, so the difference between the two is the cost
of storing events in JetStream (and of the gateway in front, for the gateway figure).
"""

from typing import Annotated

from fastapi import FastAPI, Header, Request

from services.ingest import service
from services.ingest.config import IngestSettings
from services.ingest.schemas import Accepted

app = FastAPI()
SETTINGS = IngestSettings(internal_token="parse-only", nats_url="nats://unused")  # type: ignore[arg-type]


@app.post("/v1/{call}")
async def parse(call: str, request: Request, workspace: Annotated[str, Header(alias="X-Herald-Workspace")]) -> Accepted:
    service.events_from_body(workspace, call, await request.body(), SETTINGS, None)
    return Accepted()
