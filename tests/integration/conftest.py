"""Fixtures of the integration tier: the SDK edge (gateway with ingest behind it) in-process."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from gateway.app import build as build_gateway
from gateway.config import get_settings as gateway_settings
from herald.stack import create_workspace
from services.ingest.app import build as build_ingest
from services.ingest.config import get_settings as ingest_settings
from tests.conftest import Infra


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The whole stack as real processes (the session's `stack`) belongs to tests/e2e, which runs after this tier:
    started here, its scheduler, segmenter and responders would go on answering and releasing sends under the
    integration tests that follow, which run their own services in-process."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.get("stack", ()) if info is not None else ()
        if "tests/integration/" in item.nodeid and defs and defs[-1].func.__module__ == "tests.conftest":
            raise pytest.UsageError(f"{item.nodeid} uses the real-process stack: move it to tests/e2e")


@dataclass
class Edge:
    """The gateway, with ingest behind it, and a workspace to send as."""

    workspace_id: str
    write_key: str
    api_key: str
    gateway: httpx.AsyncClient

    async def send(self, call: str, body: Any, headers: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        """An SDK call authenticated with the workspace's write key (unless `headers` bring their own)."""
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        sent = {"content-type": "application/json", **(headers or {})}
        auth = None if "authorization" in sent else (self.write_key, "")
        return await self.gateway.post(f"/v1/{call}", content=content, headers=sent, auth=auth, **kw)

    async def dropped(self, call: str, body: Any) -> dict[str, Any]:
        """Send a batch with one malformed call: it is answered 200 with that call dropped; the rejection listed."""
        r = await self.send(call, body)
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "rejected": 1}
        listed = await self.gateway.get(
            "/api/v1/ingest/rejections", params={"limit": 1}, headers={"authorization": f"Bearer {self.api_key}"}
        )
        assert listed.status_code == 200, listed.text
        [rejection] = listed.json()["rejections"]
        return dict(rejection)


@asynccontextmanager
async def running_gateway(name: str = "gateway") -> AsyncIterator[httpx.AsyncClient]:
    """A gateway replica and ingest in-process, the gateway's calls to ingest going straight to ingest's app."""
    gateway_settings.cache_clear()
    ingest_settings.cache_clear()
    gateway, ingest = build_gateway(), build_ingest()
    async with ingest.router.lifespan_context(ingest), gateway.router.lifespan_context(gateway):
        res = gateway.state.resources
        assert res.http is not None
        await res.http.aclose()
        res.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingest), timeout=10)
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}", timeout=10) as client:
            yield client


@asynccontextmanager
async def running_edge(infra: Infra, name: str) -> AsyncIterator[Edge]:
    """A new workspace and the SDK edge to send as it."""
    created = await create_workspace(infra.database_url, name)
    async with running_gateway() as client:
        yield Edge(created["workspace_id"], created["write_key"], created["api_key"], client)


@pytest.fixture
async def edge(infra: Infra) -> AsyncIterator[Edge]:
    """The SDK edge of a workspace of its own."""
    async with running_edge(infra, "edge") as running:
        yield running


@pytest.fixture
async def other_edge(infra: Infra) -> AsyncIterator[Edge]:
    """The SDK edge of a second workspace, for proving one never reaches the other's data."""
    async with running_edge(infra, "other") as running:
        yield running


@pytest.fixture
async def other_replica(edge: Edge) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway replica (its own key cache) beside `edge`'s, on the same database."""
    async with running_gateway("gateway-2") as client:
        yield client


@asynccontextmanager
async def stream_of(nc: NATS, workspace_id: str) -> AsyncIterator[Any]:
    """The workspace's events as JetStream stored them, from now on."""
    sub = await nc.jetstream().subscribe(
        f"events.{workspace_id}.>",
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    try:
        yield sub
    finally:
        await sub.unsubscribe()
