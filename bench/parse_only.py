"""Baseline for the ingest scenario: ingest's own parsing and validation, with no publish.

Served by uvicorn exactly like the ingest service, so the difference between the two is the cost
of storing events in JetStream (and of the gateway in front, for the gateway figure).
"""

from typing import Annotated

from fastapi import FastAPI, Header, Request

from kernel import signing
from services.ingest import service
from services.ingest.config import IngestSettings
from services.ingest.schemas import Accepted

app = FastAPI()
SETTINGS = IngestSettings(gateway_public_keys=signing.new_key_pair()[1], nats_url="nats://unused")


@app.post("/v1/{call}")
async def parse(call: str, request: Request, workspace: Annotated[str, Header(alias="X-Herald-Workspace")]) -> Accepted:
    service.events_from_body(workspace, call, await request.body(), SETTINGS, None)
    return Accepted()
