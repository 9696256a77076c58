"""Nothing is dropped silently: what a consumer can never handle is dead-lettered, and re-driven once fixed."""

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from herald.cli import app
from kernel import bus
from kernel.contracts import (
    DEAD_CONSUMER_HEADER,
    DEAD_REASON_HEADER,
    DEAD_SEQUENCE_HEADER,
    DEAD_SUBJECT_HEADER,
    MembershipChanged,
)
from kernel.db import unit_of_work
from kernel.errors import PermanentError, TransientError, is_permanent
from kernel.logging import BUS_CORRELATION_HEADER


def payload(workspace_id: str, segment_id: str) -> bytes:
    """A valid MembershipChanged whose segment id names what the handler should do with it."""
    return MembershipChanged(
        workspace_id=workspace_id, segment_id=segment_id, profile_id="p", change="entered",
        at=datetime(2026, 11, 22, tzinfo=UTC), cause_message_id=f"m-{segment_id}",
    ).model_dump_json().encode()


async def _nul_in_jsonb(s: AsyncSession) -> None:
    """A NUL character where PostgreSQL's jsonb cannot store one."""
    await s.execute(text("SELECT CAST(CAST(:v AS text) AS jsonb)"), {"v": '{"name": "a\\u0000b"}'})


async def _invalid_text(s: AsyncSession) -> None:
    """Text that is no uuid."""
    await s.execute(text("SELECT CAST(CAST(:v AS text) AS uuid)"), {"v": "not-a-uuid"})


async def _out_of_range(s: AsyncSession) -> None:
    """A number too big for its column type."""
    await s.execute(text("SELECT CAST(CAST(:v AS text) AS smallint)"), {"v": "99999"})


async def _constraint(s: AsyncSession) -> None:
    """The same primary key twice."""
    await s.execute(text("CREATE TEMP TABLE once (id int PRIMARY KEY) ON COMMIT DROP"))
    await s.execute(text("INSERT INTO once VALUES (1)"))
    await s.execute(text("INSERT INTO once VALUES (1)"))


async def _statement_timeout(s: AsyncSession) -> None:
    """A statement cancelled for taking too long: it may well pass next time."""
    await s.execute(text("SET LOCAL statement_timeout = 1"))
    await s.execute(text("SELECT pg_sleep(1)"))


# Deterministic database errors: the same input fails the same way on every attempt.
DATABASE_FAILURES: dict[str, Callable[[AsyncSession], Awaitable[None]]] = {
    "nul_in_jsonb": _nul_in_jsonb,  # 22P05 untranslatable character
    "invalid_text": _invalid_text,  # 22P02 invalid text representation
    "out_of_range": _out_of_range,  # 22003 numeric value out of range
    "constraint": _constraint,  # 23505 unique violation
}


async def _raised(sessions: async_sessionmaker[AsyncSession], fail: Callable[[AsyncSession], Awaitable[None]]) -> Exception:
    """What running `fail` in a unit of work raised."""
    try:
        async with unit_of_work(sessions) as s:
            await fail(s)
    except Exception as exc:
        return exc
    raise AssertionError("the statement did not fail")


@pytest.mark.parametrize("kind", sorted(DATABASE_FAILURES))
async def test_deterministic_database_errors_are_permanent(
    sessions: async_sessionmaker[AsyncSession], kind: str
) -> None:
    exc = await _raised(sessions, DATABASE_FAILURES[kind])
    assert is_permanent(exc), repr(exc)
    assert not is_permanent(TransientError("retry this one")), "an explicit TransientError decides"


async def test_other_failures_are_transient(sessions: async_sessionmaker[AsyncSession]) -> None:
    cancelled = await _raised(sessions, _statement_timeout)  # 57014: may well pass next time
    assert not is_permanent(cancelled), repr(cancelled)
    assert not is_permanent(RuntimeError("database blinked"))
    assert not is_permanent(ConnectionResetError())
    data_error = await _raised(sessions, _nul_in_jsonb)
    try:
        raise TransientError("the caller knows better") from data_error
    except TransientError as exc:
        assert not is_permanent(exc)
    try:
        raise RuntimeError("wrapped") from PermanentError("cannot ever work")
    except RuntimeError as exc:
        assert is_permanent(exc)
    try:
        raise KeyError("bug") from None
    except KeyError as exc:
        exc.__context__ = data_error  # merely being handled, not the cause
        assert not is_permanent(exc)


async def _dead_letters(js: JetStreamContext, subject_filter: str, count: int, timeout: float = 15.0) -> list[Msg]:
    """The first `count` dead letters stored under this filter, waiting for them to arrive."""
    sub = await js.subscribe(subject_filter, stream=bus.DEAD_LETTERS, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=timeout) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def _pending_dead_letters(js: JetStreamContext, subject_filter: str) -> int:
    """How many dead letters are stored under this filter right now."""
    sub = await js.pull_subscribe(subject_filter, stream=bus.DEAD_LETTERS)
    try:
        return (await sub.consumer_info()).num_pending or 0
    finally:
        await sub.unsubscribe()


async def _wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait, polling, until the predicate holds; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_permanent_failures_and_poison_are_dead_lettered_at_once_with_where_and_why(
    nc: NATS, sessions: async_sessionmaker[AsyncSession], workspace_id: str
) -> None:
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:10]
    stream, durable = f"T_{tag}", f"d{tag}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"t{tag}.>"]))
    calls: Counter[str] = Counter()

    async def handler(message: MembershipChanged) -> None:
        """Fail the way the message's segment id names."""
        calls[message.segment_id] += 1
        if message.segment_id == "permanent":
            raise PermanentError("the template is missing")
        async with unit_of_work(sessions) as s:
            await DATABASE_FAILURES[message.segment_id](s)

    kinds = [*sorted(DATABASE_FAILURES), "permanent"]
    spec = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"t{tag}.>", model=MembershipChanged, handler=handler)
    published: dict[str, tuple[int, bytes]] = {}
    with structlog.testing.capture_logs() as logs:
        async with bus.consuming(js, [spec]):
            for kind in kinds:
                body = payload(workspace_id, kind)
                ack = await js.publish(f"t{tag}.{kind}", body, headers=bus.headers_for(f"id-{kind}", "corr-1"))
                published[kind] = (ack.seq, body)
            not_json = await js.publish(f"t{tag}.garbage", b"{not json")
            not_a_membership = await js.publish(f"t{tag}.wrong", b'{"workspace_id": "%s", "nope": 1}' % workspace_id.encode())
            letters = await _dead_letters(js, f"dead.{workspace_id}.{durable}", len(kinds) + 1)
            (unknown,) = await _dead_letters(js, f"dead._.{durable}", 1)
            await _wait_until(lambda: sum(1 for e in logs if e["event"] == "message_dead") == len(kinds) + 2)
    info = await js.consumer_info(stream, durable)

    assert calls == Counter(kinds), "each was handled once: never retried"
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0
    by_subject = {m.headers[DEAD_SUBJECT_HEADER]: m for m in letters if m.headers}
    for kind in kinds:
        seq, body = published[kind]
        letter = by_subject[f"t{tag}.{kind}"]
        assert letter.subject == f"dead.{workspace_id}.{durable}"
        assert letter.data == body, "payload unchanged"
        assert letter.headers is not None
        assert letter.headers[DEAD_CONSUMER_HEADER] == durable
        assert letter.headers[DEAD_SEQUENCE_HEADER] == str(seq)
        assert letter.headers[DEAD_REASON_HEADER].startswith("rejected: ")
        assert letter.headers["Nats-Msg-Id"] == f"dead:{stream}:{durable}:{seq}", "a second filing is de-duplicated"
        assert letter.headers[BUS_CORRELATION_HEADER] == "corr-1"
    assert "UntranslatableCharacter" in by_subject[f"t{tag}.nul_in_jsonb"].headers[DEAD_REASON_HEADER]  # type: ignore[index]
    wrong = by_subject[f"t{tag}.wrong"]
    assert wrong.headers and wrong.headers[DEAD_REASON_HEADER].startswith("poison: ValidationError")
    assert wrong.headers[DEAD_SEQUENCE_HEADER] == str(not_a_membership.seq)
    assert unknown.data == b"{not json" and unknown.headers
    assert unknown.headers[DEAD_SUBJECT_HEADER] == f"t{tag}.garbage"
    assert unknown.headers[DEAD_SEQUENCE_HEADER] == str(not_json.seq)
    dead_lines = [e for e in logs if e["event"] == "message_dead"]
    assert all(e["log_level"] == "error" and e["consumer"] == durable and e["exc_info"] for e in dead_lines)
    assert {(e["subject"], e["sequence"]) for e in dead_lines} == {
        *((f"t{tag}.{k}", published[k][0]) for k in kinds),
        (f"t{tag}.garbage", not_json.seq),
        (f"t{tag}.wrong", not_a_membership.seq),
    }
    assert not [e for e in logs if e["event"] == "message_retry"]


async def test_a_transient_failure_on_the_last_allowed_delivery_is_dead_lettered_not_dropped(
    nc: NATS, workspace_id: str
) -> None:
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:10]
    stream, durable = f"T_{tag}", f"d{tag}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"t{tag}.>"]))
    calls: list[str] = []

    async def handler(message: MembershipChanged) -> None:
        """Fail transiently, every time."""
        calls.append(message.segment_id)
        raise RuntimeError("the database blinked again")

    spec = bus.ConsumerSpec(
        stream=stream, durable=durable, subject=f"t{tag}.>", model=MembershipChanged, handler=handler, max_deliver=2
    )
    async with bus.consuming(js, [spec]):
        ack = await js.publish(f"t{tag}.a", payload(workspace_id, "flaky"))
        (letter,) = await _dead_letters(js, f"dead.{workspace_id}.{durable}", 1)
    assert calls == ["flaky", "flaky"], "delivered max_deliver times, then filed"
    assert letter.headers is not None
    assert letter.headers[DEAD_REASON_HEADER] == "exhausted: RuntimeError: the database blinked again"
    assert letter.headers[DEAD_SEQUENCE_HEADER] == str(ack.seq)
    info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_herald_replay_re_drives_dead_letters_to_their_consumer_once_the_cause_is_gone(
    nc: NATS, workspace_id: str
) -> None:
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:10]
    stream, durable = f"T_{tag}", f"d{tag}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"t{tag}.>"]))
    since = datetime.now(UTC) - timedelta(minutes=1)
    broken = True
    handled: list[str] = []

    async def handler(message: MembershipChanged) -> None:
        """Fail permanently until the fix is deployed."""
        if broken:
            raise PermanentError("the campaign's template does not render")
        handled.append(message.segment_id)

    spec = bus.ConsumerSpec(stream=stream, durable=durable, subject=f"t{tag}.>", model=MembershipChanged, handler=handler)
    async with bus.consuming(js, [spec]):
        for segment in ("one", "two"):
            await js.publish(f"t{tag}.{segment}", payload(workspace_id, segment))
        await _dead_letters(js, f"dead.{workspace_id}.>", 2)
        assert handled == []
        broken = False  # the fix is deployed
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["replay", workspace_id, "--since", since.isoformat(), "--dead-letters"]
        )
        assert result.exit_code == 0, result.output
        assert "re-drove 2 dead letter(s)" in result.output
        await _wait_until(lambda: sorted(handled) == ["one", "two"])
    assert await _pending_dead_letters(js, f"dead.{workspace_id}.>") == 0, "re-driven dead letters leave the stream"
    info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0
