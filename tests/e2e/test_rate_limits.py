"""A workspace bursting past its rate limit gets 429s with Retry-After; another workspace is untouched."""

import asyncio
import os
import subprocess
import sys
import uuid

import httpx

from herald.stack import Stack
from tests.conftest import Infra, eventually
from tests.e2e.conftest import Workspace, create_workspace


def set_limits(infra: Infra, workspace_id: str, *args: str) -> None:
    """The CLI an operator would use: `herald rate-limits WS --sdk N`."""
    subprocess.run(
        [sys.executable, "-m", "herald", "rate-limits", workspace_id, *args],
        env={**os.environ, "HERALD_DATABASE_URL": infra.database_url}, check=True, capture_output=True,
    )


async def test_a_burst_from_one_workspace_is_limited_and_another_workspace_is_not(ws: Workspace, stack: Stack, infra: Infra) -> None:
    other = create_workspace(infra.database_url, "quiet")
    set_limits(infra, ws.workspace_id, "--sdk", "5")

    async def limited() -> bool:  # every replica picks the new limit up on its next sync
        answers = [(await ws.track("probe", messageId=uuid.uuid4().hex)).status_code for _ in range(8)]
        return 429 in answers

    await eventually(limited, timeout=10)
    await asyncio.sleep(1.1)  # a fresh second: the probes' window is spent
    async with httpx.AsyncClient(base_url=stack.config.url("gateway"), auth=(other["write_key"], ""), timeout=10) as quiet:
        noisy_ids = [uuid.uuid4().hex for _ in range(50)]
        quiet_ids = [uuid.uuid4().hex for _ in range(15)]
        noisy, calm = await asyncio.gather(
            asyncio.gather(*(ws.track("burst", messageId=m) for m in noisy_ids)),
            asyncio.gather(*(quiet.post("/v1/track", json={"userId": "calm", "event": "e", "messageId": m}) for m in quiet_ids)),
        )
    assert [r.status_code for r in calm] == [200] * len(quiet_ids)
    codes = [r.status_code for r in noisy]
    assert set(codes) == {200, 429} and codes.count(200) <= 10  # 5 a second, and the burst may straddle two
    refused = next(r for r in noisy if r.status_code == 429)
    assert refused.json()["error"] == "rate_limited"
    assert refused.headers["retry-after"] and refused.headers["x-ratelimit-limit"] == "5"
    assert refused.headers["x-ratelimit-remaining"] == "0"

    # Everything answered 200 is stored, for both; nothing refused is.
    accepted = {m for m, r in zip(noisy_ids, noisy, strict=True) if r.status_code == 200}
    stored = await ws.stored("burst", count=len(accepted))
    assert {e["message_id"] for e in stored["events"]} == accepted
    headers = {"authorization": f"Bearer {other['api_key']}"}
    async with httpx.AsyncClient(base_url=stack.config.url("gateway"), headers=headers, timeout=10) as api:

        async def calm_stored() -> set[str]:
            r = await api.get("/api/v1/users/calm/events")
            found = {e["message_id"] for e in r.json()["events"]} if r.status_code == 200 else set()
            return found if found == set(quiet_ids) else set()

        await eventually(calm_stored)
    set_limits(infra, ws.workspace_id, "--default")
