"""A NATS outage reads as one line going down and one coming back, with the error's traceback."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from herald.infra import EmbeddedNats, free_port
from kernel import bus


async def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait, polling, until the predicate holds; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_reconnect_is_logged_once_each_way(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = EmbeddedNats(tmp_path / "nats", port).start()
    try:
        with structlog.testing.capture_logs() as logs:
            nc = await bus.connect(server.url, "reconnect-test")
            await asyncio.to_thread(server.stop)
            # Down over several reconnect attempts (0.5 s apart), each of which fails.
            await _wait_until(lambda: nc._server_pool[0].reconnects >= 3)
            server = EmbeddedNats(tmp_path / "nats", port)
            await asyncio.to_thread(server.start)
            await _wait_until(lambda: any(e["event"] == "nats_reconnected" for e in logs))
            await nc.drain()
        events = [e["event"] for e in logs]
        assert events.count("nats_disconnected") == 1
        assert events.count("nats_reconnected") == 1
        assert events.count("nats_reconnect_failing") == 1, "the first failed attempt, not every one"
        assert "nats_error" not in events
        assert events[-1] == "nats_closed"
        (failing,) = [e for e in logs if e["event"] == "nats_reconnect_failing"]
        assert isinstance(failing["exc_info"], Exception), "logged with its traceback"
        (back,) = [e for e in logs if e["event"] == "nats_reconnected"]
        assert back["failed_attempts"] >= 3 and back["down_seconds"] > 0
        (down,) = [e for e in logs if e["event"] == "nats_disconnected"]
        assert down["connection"] == "reconnect-test" and down["server"] == f"127.0.0.1:{port}"
    finally:
        server.stop()
