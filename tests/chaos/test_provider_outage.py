"""Providers down for a minute while sends fall due: when they are back, every send arrives exactly once.

Three providers fail at once, each the target of its own campaign on the same trigger: a webhook
endpoint that refuses connections (gone), one that answers 503 (up but unwell), and the SMTP server
(stopped). Nothing is killed inside Herald, so no send may end `unknown`, `failed` or doubled.
"""

import asyncio
import time
import uuid
from collections import Counter

import asyncpg
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

EVENT = "Chaos Provider"
OUTAGE_SECONDS = 60.0
LOAD_SECONDS = 40.0  # every send (1 s delay) falls due well inside the outage
RATE = 8.0  # track calls per second; each triggers three sends
USERS = 8
REFUSED, FAILING, SMTP = "webhook refusing connections", "webhook answering 503", "email, SMTP server stopped"


async def _wait_for_emails(database_url: str, workspace_id: str, users: list[str], timeout: float) -> None:
    """Wait until every user's profile holds the `email` trait the email campaign sends to."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(database_url)
        try:
            known = await conn.fetchval(
                "SELECT count(*) FROM profiles.profiles WHERE workspace_id = $1 AND user_id = ANY($2::text[])"
                " AND traits ? 'email'",
                workspace_id,
                users,
            )
        finally:
            await conn.close()
        if known == len(users):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {known} of {len(users)} profiles have their email after {timeout:.0f}s")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(300)
async def test_sends_due_while_providers_are_down_for_a_minute_arrive_once_when_they_are_back(cluster: Cluster) -> None:
    """Take three providers down for 60 s while sends fall due, bring them back, and audit every send."""
    await cluster.heal()
    run = f"providers-{uuid.uuid4().hex[:6]}"
    refusing, failing = Receiver().start(), Receiver().start()
    try:
        async with cluster.tenant(f"chaos {run}") as tenant:
            users = [f"{run}-u{i}" for i in range(USERS)]
            for user in users:
                identified = await tenant.sdk.post("/v1/identify", json={"userId": user, "traits": {"email": f"{user}@chaos.example"}})
                assert identified.status_code == 200, identified.text
            await _wait_for_emails(cluster.database_url, tenant.workspace_id, users, timeout=30)
            body = {"user": "{{ user.user_id }}", "send_id": "{{ send_id }}"}
            campaigns = {
                REFUSED: await tenant.campaign(REFUSED, "webhook", EVENT, {"url": f"{refusing.url}/hook/{run}", "body": body}),
                FAILING: await tenant.campaign(FAILING, "webhook", EVENT, {"url": f"{failing.url}/hook/{run}", "body": body}),
                SMTP: await tenant.campaign(
                    SMTP, "email", EVENT, {"subject": "Chaos {{ send_id }}", "body": "Hello {{ user.user_id }}"}
                ),
            }

            refusing.down()
            failing.failing()
            await cluster.kill("sinks")
            assert not cluster.sink_listening()
            outage_ends = time.monotonic() + OUTAGE_SECONDS
            load = Load(tenant.sdk, run, users, EVENT, RATE, max_seconds=LOAD_SECONDS).start()
            try:
                await load.finished(timeout=OUTAGE_SECONDS)
            except BaseException:
                await load.abort()
                raise
            await asyncio.sleep(max(0.0, outage_ends - time.monotonic()))  # the rest of the outage
            refusing.up()
            failing.up()
            await cluster.restart("sinks")
            await cluster.ready(timeout=60)

            async def look() -> Verdict:
                stored = await stored_events(cluster.database_url, tenant.workspace_id, list(load.accepted))
                ledgers = {label: await campaign_ledger(cluster.database_url, tenant.workspace_id, c) for label, c in campaigns.items()}
                # Arrivals are read after the ledgers, so every send they record as sent is counted.
                emails = [e for e in await cluster.sink_emails() if any(run in to for to in e["rcpt_tos"])]
                arrivals = {
                    REFUSED: refusing.accepted(),
                    FAILING: failing.accepted(),
                    SMTP: Counter(e["send_id"] for e in emails),
                }
                verdict = judge_events("providers", load.accepted, stored)
                for label, ledger in ledgers.items():
                    verdict += judge_sends(label, load.accepted, ledger, arrivals[label], unknown_allowed=False)
                return verdict

            verdict = await settle(look, timeout=90, what="[providers] after a 60 s outage")
            details = f"[providers] load: {load.describe()}; 503s answered during the outage: {sum(failing.refused().values())}"
            print(f"{details}\n{verdict.describe()}")  # the counts, shown by `pytest -rP`
            assert not verdict.violations, f"{details}\n{verdict.describe()}"
            # The outage was real: sends fell due and were tried while the providers were down.
            assert failing.refused(), f"{details}\nno send was tried while the provider answered 503"
    finally:
        refusing.stop()
        failing.stop()
