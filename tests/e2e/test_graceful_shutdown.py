"""SIGTERM under load: the profiles service finishes what it holds within the grace period Kubernetes
gives it (read from the rendered manifests), and nothing is lost or doubled."""

import asyncio
import signal
import uuid

from tests.conftest import eventually
from tests.deploy.manifests import load, pod_spec
from tests.e2e.conftest import Workspace

USERS, EVENTS_EACH, BATCH = 30, 20, 50
DRAINED = "Application shutdown complete."


async def test_profiles_restarted_mid_stream_counts_every_event_exactly_once(ws: Workspace, stack) -> None:  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:6]
    calls = [
        {"type": "track", "userId": f"load-{run}-{u}", "event": "Load Tested", "messageId": f"{run}-{u}-{i}"}
        for i in range(EVENTS_EACH)
        for u in range(USERS)
    ]
    batches = [calls[i : i + BATCH] for i in range(0, len(calls), BATCH)]
    half = len(batches) // 2
    for batch in batches[:half]:
        assert (await ws.sdk.post("/v1/batch", json={"batch": batch})).status_code == 200

    grace = pod_spec(load("prod").one("Deployment", "profiles"))["terminationGracePeriodSeconds"]
    profiles = stack.procs["profiles"]
    drained_before = stack.log_tail("profiles", chars=10**7).count(DRAINED)
    profiles.terminate()  # SIGTERM while it is working through the first half
    ingest_more = asyncio.gather(*(ws.sdk.post("/v1/batch", json={"batch": b}) for b in batches[half:]))
    # Kubernetes sends SIGKILL once the grace period is over: the drain must finish before that.
    code = await asyncio.to_thread(profiles.wait, grace)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete, so -15 is a clean exit too;
    # the log proves the drain ran (consumers stopped, in-flight messages acked, NATS drained).
    assert code in (0, -signal.SIGTERM), f"profiles exited with {code}"
    assert stack.log_tail("profiles", chars=10**7).count(DRAINED) == drained_before + 1
    assert all(r.status_code == 200 for r in await ingest_more)  # ingest keeps accepting meanwhile
    stack.start_one("profiles")
    await asyncio.to_thread(stack.wait_ready, 30)

    async def all_counted() -> dict[str, int] | None:
        counts = {}
        for u in range(USERS):
            profile = await ws.user(f"load-{run}-{u}")
            counts[u] = profile["computed"]["event_counts"].get("Load Tested", 0) if profile else 0
        return counts if all(c >= EVENTS_EACH for c in counts.values()) else None

    counts = await eventually(all_counted, timeout=60, interval=0.5)
    assert set(counts.values()) == {EVENTS_EACH}
