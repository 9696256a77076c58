"""What an SRE relies on: pool gauges on /metrics, `herald migrate --check / --wait`, `herald replay`."""

import contextlib
import re
import uuid
from datetime import UTC, datetime, timedelta

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy
from typer.testing import CliRunner

from herald.cli import app
from herald.replay import replay
from kernel import bus
from kernel.contracts import Event, event_subject
from services.segmenter.app import build
from services.segmenter.config import get_settings
from tests.conftest import Infra
from tests.integration.helpers import running


async def test_metrics_export_database_pool_use_and_capacity(infra: Infra, workspace_id: str) -> None:
    async with running(build, get_settings, workspace_id, HERALD_DB_POOL_SIZE="3", HERALD_DB_MAX_OVERFLOW="2") as client:
        assert (await client.get("/readyz")).status_code == 200
        text = (await client.get("/metrics")).text
    assert re.search(r"^herald_db_pool_capacity 5\.0$", text, re.M), "capacity is pool size + overflow"
    assert re.search(r"^herald_db_pool_in_use \d+\.0$", text, re.M)


def test_migrate_check_passes_on_a_migrated_database_and_fails_on_an_empty_one(infra: Infra) -> None:
    runner = CliRunner()
    migrated = runner.invoke(app, ["migrate", "--check"], env={"HERALD_DATABASE_URL": infra.database_url})
    assert migrated.exit_code == 0, migrated.output
    assert "up to date" in migrated.output
    empty = infra.database_url.rsplit("/", 1)[0] + "/postgres"  # the server's default database
    behind = runner.invoke(app, ["migrate", "--wait", "0"], env={"HERALD_DATABASE_URL": empty})
    assert behind.exit_code == 1
    assert "not migrated yet: gateway, profiles, segmenter, scheduler, dispatcher" in behind.output


async def test_replay_republishes_one_workspaces_events_once_each(infra: Infra, nc: NATS, workspace_id: str) -> None:
    js = nc.jetstream()
    other = f"ws_{uuid.uuid4().hex[:12]}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    originals = []
    for ws, count in ((workspace_id, 3), (other, 2)):
        for i in range(count):
            e = Event(workspace_id=ws, message_id=f"{ws}-{i}", type="track", event="Replayed",
                      timestamp=since, received_at=since)
            await bus.publish(js, event_subject(ws, "track"), e, e.message_id)
            originals.append(e)

    seen: list[tuple[int, int]] = []
    assert await replay(infra.nats_url, "EVENTS", workspace_id, since, lambda d, t: seen.append((d, t))) == 3
    assert seen[-1] == (3, 3)

    async def stored(ws: str) -> list:  # type: ignore[type-arg]
        sub = await js.subscribe(f"events.{ws}.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        msgs = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while True:
                msgs.append(await sub.next_msg(timeout=0.5))
        await sub.unsubscribe()
        return msgs

    mine = await stored(workspace_id)
    assert len(mine) == 6, "three originals and one copy of each"
    copies = [m for m in mine if m.headers["Nats-Msg-Id"].startswith("replay:")]
    assert sorted(orjson.loads(m.data)["message_id"] for m in copies) == [f"{workspace_id}-{i}" for i in range(3)]
    assert len(await stored(other)) == 2, "another workspace's events are left alone"


def test_replay_refuses_an_unknown_stream_or_a_wildcard_workspace() -> None:
    runner = CliRunner()
    env = {"HERALD_NATS_URL": "nats://127.0.0.1:1"}
    assert "unknown stream" in runner.invoke(app, ["replay", "ws", "--since", "2026-01-01", "--stream", "NOPE"], env=env).output
    assert "not a workspace id" in runner.invoke(app, ["replay", "ws.>", "--since", "2026-01-01"], env=env).output
