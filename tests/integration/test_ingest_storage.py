"""Ingest answers 200 only for what JetStream stored, and 503 when it cannot store."""

import orjson
from nats.aio.client import Client as NATS

from herald.infra import EmbeddedNats, free_port
from kernel import bus
from services.ingest.app import build
from services.ingest.config import get_settings
from tests.integration.helpers import running


async def test_accepted_calls_are_in_the_stream_with_their_message_id(infra, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    sub = await nc.jetstream().subscribe(f"events.{workspace_id}.>", ordered_consumer=True)
    async with running(build, get_settings, workspace_id) as client:
        r = await client.post("/v1/track", json={"userId": "u1", "event": "Signed Up", "messageId": "m-1"})
        assert r.status_code == 200 and r.json() == {"success": True}
    msg = await sub.next_msg(timeout=5)
    stored = orjson.loads(msg.data)
    assert msg.subject == f"events.{workspace_id}.track"
    assert stored["message_id"] == "m-1" and stored["workspace_id"] == workspace_id
    assert msg.headers and msg.headers["Nats-Msg-Id"] == f"{workspace_id}:m-1"


async def test_nats_down_means_503_with_retry_after_never_200(infra, tmp_path, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    private = EmbeddedNats(tmp_path / "nats", free_port()).start()
    try:
        setup = await bus.connect(private.url, "setup")
        await bus.ensure_streams(setup.jetstream())
        await setup.drain()
        async with running(build, get_settings, workspace_id, HERALD_NATS_URL=private.url) as client:
            ok = await client.post("/v1/track", json={"userId": "u1", "event": "Before"})
            assert ok.status_code == 200
            private.stop()
            down = await client.post("/v1/track", json={"userId": "u1", "event": "During"})
            assert down.status_code == 503
            assert down.headers["retry-after"]
            assert down.json()["error"] == "unavailable"
            batch = await client.post("/v1/batch", json={"batch": [{"type": "track", "userId": "u", "event": "e"}]})
            assert batch.status_code == 503
    finally:
        private.stop()


async def test_postgres_down_means_503_for_an_unknown_key_and_a_degraded_but_ready_gateway(infra, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    from gateway.app import build as build_gateway
    from gateway.config import get_settings as gateway_settings
    from herald.infra import free_port

    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/herald"
    async with running(build_gateway, gateway_settings, workspace_id, HERALD_DATABASE_URL=nowhere) as client:
        r = await client.post("/v1/track", json={"userId": "u", "event": "e"}, auth=("wk_any", ""))
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"] == "unavailable"
        # Still ready: it serves known write keys from its cache, so Kubernetes must keep it in rotation.
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded" and "postgresql" in ready.json()["degraded"]


async def test_a_service_too_slow_to_answer_is_a_504_saying_it_may_still_apply_not_a_503(infra, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from gateway.app import build as build_gateway
    from gateway.config import get_settings as gateway_settings
    from herald.stack import create_workspace

    held: list[asyncio.StreamWriter] = []

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads nothing, answers nothing: a service stuck on a long request

    server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    created = await create_workspace(infra.database_url, "slow")
    try:
        env = {"HERALD_INGEST_URL": f"http://127.0.0.1:{port}", "HERALD_UPSTREAM_TIMEOUT_SECONDS": "0.5"}
        async with running(build_gateway, gateway_settings, workspace_id, **env) as client:
            r = await client.post("/v1/track", json={"userId": "u", "event": "e"}, auth=(created["write_key"], ""))
        assert r.status_code == 504, r.text
        assert r.json()["error"] == "upstream_timeout" and "may still take effect" in r.json()["detail"]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
