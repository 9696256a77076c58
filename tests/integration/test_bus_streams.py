"""Every stream is bounded by age and size, and contracts are published under their own subject and id."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from herald.infra import EmbeddedNats, free_port
from kernel import bus
from kernel.contracts import REJECTIONS_KEPT, STREAMS, MembershipChanged, ProfileChanged
from kernel.logging import BUS_CORRELATION_HEADER
from kernel.settings import MIB, StreamSettings


async def _limits(nc: NATS) -> dict[str, tuple[float | None, int | None]]:
    """(max age in seconds, max bytes) of each of Herald's streams."""
    js = nc.jetstream()
    found = {}
    for name in STREAMS:
        config = (await js.stream_info(name)).config
        found[name] = (config.max_age, config.max_bytes)
    return found


async def test_the_streams_migrate_creates_are_bounded_by_default(nc: NATS) -> None:
    limits = await _limits(nc)  # created for this session by herald.stack.migrate → herald.infra.ensure_streams
    for name, (max_age, max_bytes) in limits.items():
        if name == bus.DEAD_LETTERS:
            assert (max_age, max_bytes) == (30 * 24 * 3600, 64 * MIB)
        elif name == bus.REJECTIONS:  # a small fixed reservation: the newest calls dropped per workspace
            assert (max_age, max_bytes) == (7 * 24 * 3600, bus.REJECTIONS_MAX_BYTES)
        else:
            assert (max_age, max_bytes) == (7 * 24 * 3600, 256 * MIB), name


async def test_limits_come_from_the_environment_and_re_running_updates_them(
    infra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    private = EmbeddedNats(tmp_path / "nats", free_port()).start()
    try:
        nc = await bus.connect(private.url, "streams-test")
        try:
            monkeypatch.setenv("HERALD_STREAM_MAX_AGE_HOURS", "48")
            monkeypatch.setenv("HERALD_STREAM_MAX_BYTES", str(256 * 1024**2))
            monkeypatch.setenv("HERALD_DEAD_LETTER_MAX_AGE_HOURS", "240")
            monkeypatch.setenv("HERALD_DEAD_LETTER_MAX_BYTES", str(64 * 1024**2))
            await bus.ensure_streams(nc.jetstream())
            created = await _limits(nc)
            assert created.pop(bus.DEAD_LETTERS) == (240 * 3600, 64 * 1024**2)
            assert created.pop(bus.REJECTIONS) == (48 * 3600, bus.REJECTIONS_MAX_BYTES)
            assert set(created.values()) == {(48 * 3600, 256 * 1024**2)}

            tighter = StreamSettings(
                stream_max_age_hours=24, stream_max_bytes=128 * 1024**2,
                dead_letter_max_age_hours=72, dead_letter_max_bytes=32 * 1024**2,
            )
            await bus.ensure_streams(nc.jetstream(), retention=tighter)
            updated = await _limits(nc)
            assert updated.pop(bus.DEAD_LETTERS) == (72 * 3600, 32 * 1024**2)
            assert updated.pop(bus.REJECTIONS) == (24 * 3600, bus.REJECTIONS_MAX_BYTES)
            assert set(updated.values()) == {(24 * 3600, 128 * 1024**2)}

            too_big = tighter.model_copy(update={"stream_max_bytes": 10**15})
            with pytest.raises(RuntimeError, match="HERALD_STREAM_MAX_BYTES"):
                await bus.ensure_streams(nc.jetstream(), retention=too_big)
        finally:
            await nc.drain()
    finally:
        private.stop()


async def test_publish_contracts_stores_each_under_its_subject_and_de_duplication_id(nc: NATS, workspace_id: str) -> None:
    js = nc.jetstream()
    changed = ProfileChanged(workspace_id=workspace_id, profile_id="p1", cause_message_id="m1")
    entered = MembershipChanged(
        workspace_id=workspace_id, segment_id="s1", profile_id="p1", change="entered",
        at=datetime(2026, 11, 22, tzinfo=UTC), cause_message_id="m1",
    )
    await bus.publish_contracts(js, [changed, entered, changed], correlation_ids=["c-1", "c-2", "c-1"])

    for message, stream, correlation in ((changed, "PROFILES", "c-1"), (entered, "SEGMENTS", "c-2")):
        stored = await js.get_last_msg(stream, message.subject)
        assert stored.data == message.model_dump_json().encode()
        assert stored.headers is not None
        assert stored.headers["Nats-Msg-Id"] == message.dedupe_id
        assert stored.headers[BUS_CORRELATION_HEADER] == correlation
    counts = (await js.stream_info("PROFILES", subjects_filter=changed.subject)).state.subjects
    assert counts == {changed.subject: 1}, "the repeated message was stored once"


async def test_rejections_keep_only_the_newest_of_each_workspace(nc: NATS) -> None:
    config = (await nc.jetstream().stream_info(bus.REJECTIONS)).config
    assert config.max_msgs_per_subject == REJECTIONS_KEPT and config.subjects == ["rejections.>"]
