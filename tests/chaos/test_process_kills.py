"""kill -9 under load, one component at a time: profiles, the scheduler, NATS, PostgreSQL, the dispatcher.

Each fault has its own workspace, webhook campaign and receiver, so each fault's findings are its own:
every event the gateway answered 200 is stored exactly once, and every send it triggered reached the
webhook exactly once, or is recorded `unknown` and reached it at most once. `unknown` is the answer
only where the kill can fall inside an attempt — between its claim and its record — which is a kill
of the dispatcher or of the database it records in; after any other kill it is a finding too.
"""

import asyncio
import uuid

import pytest

from tests.chaos.harness import (
    Cluster,
    Load,
    Receiver,
    Verdict,
    campaign_ledger,
    judge_events,
    judge_sends,
    settle,
    stored_events,
)

EVENT = "Chaos Ping"
RATE = 25.0  # track calls per second through the gateway
USERS = 10
BEFORE_AND_AFTER = 40  # calls accepted before the kill, and again after the restart
DOWN_SECONDS = 2.0  # how long the component stays dead
# A webhook that takes a moment to answer, as real ones do: a kill of the dispatcher then
# lands inside attempts, which is the case the `unknown` status is for.
PROVIDER_LATENCY = 0.3

FAULTS = ["profiles", "scheduler", "nats", "postgres", "dispatcher"]
INSIDE_AN_ATTEMPT = ("dispatcher", "postgres")  # the kills that can leave an attempt unrecorded
CRASH_RECOVERY = "automatic recovery in progress"  # PostgreSQL's log line when it starts after a crash


@pytest.mark.timeout(300)
@pytest.mark.parametrize("component", FAULTS)
async def test_kill_9_under_load_loses_and_doubles_nothing(component: str, cluster: Cluster) -> None:
    """SIGKILL one component while events flow and sends fall due, restart it, and audit every id."""
    await cluster.heal()
    run = f"{component}-{uuid.uuid4().hex[:6]}"
    receiver = Receiver(latency=PROVIDER_LATENCY).start()
    try:
        async with cluster.tenant(f"chaos {run}") as tenant:
            campaign_id = await tenant.campaign(
                f"Chaos {component}",
                "webhook",
                EVENT,
                {"url": f"{receiver.url}/hook/{run}", "body": {"user": "{{ user.user_id }}", "send_id": "{{ send_id }}"}},
            )
            recoveries = cluster.log("postgres").count(CRASH_RECOVERY)
            load = Load(tenant.sdk, run, [f"{run}-u{i}" for i in range(USERS)], EVENT, RATE, max_seconds=90).start()
            try:
                await load.wait_accepted(BEFORE_AND_AFTER, timeout=30, what=f"[{component}] before the kill")
                await cluster.kill(component)
                await asyncio.sleep(DOWN_SECONDS)  # the outage itself, while the load keeps coming
                await cluster.restart(component)
                await cluster.ready(timeout=60)
                await load.wait_accepted(
                    len(load.accepted) + BEFORE_AND_AFTER, timeout=60, what=f"[{component}] after the restart"
                )
                await load.stop()
                if component == "postgres":  # it was a crash, not a shutdown: the restart replayed the WAL
                    assert cluster.log("postgres").count(CRASH_RECOVERY) == recoveries + 1
            except BaseException:
                await load.abort()
                raise

            async def look() -> Verdict:
                stored = await stored_events(cluster.database_url, tenant.workspace_id, list(load.accepted))
                ledger = await campaign_ledger(cluster.database_url, tenant.workspace_id, campaign_id)
                arrivals = receiver.accepted()  # after the ledger: every send it says is sent is counted
                return judge_events(component, load.accepted, stored) + judge_sends(
                    component, load.accepted, ledger, arrivals, unknown_allowed=component in INSIDE_AN_ATTEMPT
                )

            verdict = await settle(look, timeout=90, what=f"[{component}] after kill -9 and restart")
            load_line = f"[{component}] load: {load.describe()}"
            print(f"{load_line}\n{verdict.describe()}")  # the counts, shown by `pytest -rP`
            assert not verdict.violations, f"{load_line}\n{verdict.describe()}"
    finally:
        receiver.stop()
