"""The whole stack as real processes, started the way `make run` starts them, driven over HTTP."""

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from herald.stack import Stack
from tests.conftest import Infra, eventually


@dataclass
class Workspace:
    workspace_id: str
    write_key: str
    api_key: str
    sdk: httpx.AsyncClient
    api: httpx.AsyncClient
    sink: httpx.AsyncClient

    async def track(self, user_id: str | None = None, event: str = "Product Added", **fields: Any) -> httpx.Response:
        body = {"event": event, **fields}
        if user_id:
            body["userId"] = user_id
        return await self.sdk.post("/v1/track", json=body)

    async def identify(self, user_id: str | None, traits: dict[str, Any], **fields: Any) -> httpx.Response:
        body = {"traits": traits, **fields}
        if user_id:
            body["userId"] = user_id
        return await self.sdk.post("/v1/identify", json=body)

    async def user(self, user_id: str) -> dict[str, Any] | None:
        r = await self.api.get(f"/api/v1/users/{user_id}")
        return r.json() if r.status_code == 200 else None

    async def messages(self, user_id: str) -> list[dict[str, Any]]:
        r = await self.api.get(f"/api/v1/users/{user_id}/messages")
        assert r.status_code == 200, r.text
        return r.json()["messages"]

    async def emails_to(self, address: str) -> list[dict[str, Any]]:
        caught = (await self.sink.get("/messages")).json()["emails"]
        return [e for e in caught if address in e["rcpt_tos"]]

    async def webhooks_at(self, path: str) -> list[dict[str, Any]]:
        caught = (await self.sink.get("/messages")).json()["webhooks"]
        return [w for w in caught if w["path"] == path]

    async def campaign(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "name": "Abandoned cart",
            "channel": "email",
            "trigger": {"event": "Product Added", "where": [{"property": "price", "op": "gt", "value": 100}]},
            "delay_seconds": 2,
            "cancel_on": ["Order Completed"],
            "message": {
                "subject": "Still thinking it over, {{ user.traits.first_name | default: 'friend' }}?",
                "body": "Your {{ event.properties.name }} is waiting.",
            },
            **overrides,
        }
        created = await self.api.post("/api/v1/campaigns", json=body)
        assert created.status_code == 201, created.text
        launched = await self.api.post(f"/api/v1/campaigns/{created.json()['id']}/launch")
        assert launched.status_code == 200 and launched.json()["status"] == "active"
        return launched.json()

    async def stored(self, user_id: str, count: int = 1) -> dict[str, Any]:
        """Wait until `count` events of this user are on their timeline."""

        async def check() -> dict[str, Any] | None:
            r = await self.api.get(f"/api/v1/users/{user_id}/events")
            return r.json() if r.status_code == 200 and len(r.json()["events"]) >= count else None

        return await eventually(check)


def create_workspace(database_url: str, name: str) -> dict[str, str]:
    """The CLI a script would use: `herald create-workspace NAME --json`."""
    out = subprocess.run(
        [sys.executable, "-m", "herald", "create-workspace", name, "--json"],
        env={**os.environ, "HERALD_DATABASE_URL": database_url},
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
async def ws(stack: Stack, infra: Infra) -> AsyncIterator[Workspace]:
    creds = create_workspace(infra.database_url, "e2e")
    base = stack.config.url("gateway")
    async with (
        httpx.AsyncClient(base_url=base, auth=(creds["write_key"], ""), timeout=10) as sdk,
        httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {creds['api_key']}"}, timeout=10) as api,
        httpx.AsyncClient(base_url=stack.config.url("sinks"), timeout=10) as sink,
    ):
        yield Workspace(creds["workspace_id"], creds["write_key"], creds["api_key"], sdk, api, sink)
