"""The dispatcher against a real HTTP server and a real SMTP server: retries, never twice, reasons."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from nats.aio.client import Client as NATS
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from herald.infra import free_port
from herald.sinks import Catcher
from kernel import bus
from kernel.contracts import PROFILE_QUERY_SUBJECT, ProfileQuery, SendRequested, TriggerEvent
from kernel.db import unit_of_work
from kernel.errors import TransientError
from services.dispatcher import handlers, service
from services.dispatcher.models import Delivery
from services.dispatcher.providers import SmtpProvider, WebhookProvider
from services.profiles import handlers as profile_handlers
from tests.integration.helpers import person

NOW = datetime.now(UTC)


class FlakyHook:
    """A webhook receiver that fails the first `failures` calls with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict] = []
        self.app = FastAPI()
        self.app.post("/hook")(self.receive)

    async def receive(self, request: Request) -> Response:
        self.calls.append({"body": orjson.loads(await request.body()), "key": request.headers.get("idempotency-key")})
        if self.failures > 0:
            self.failures -= 1
            return Response(status_code=503)
        return Response(status_code=204)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[FlakyHook, str]]:
    receiver, port = FlakyHook(failures=1), free_port()
    server = uvicorn.Server(uvicorn.Config(receiver.app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield receiver, f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    await task


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Catcher, int]]:
    from aiosmtpd.smtp import SMTP

    catcher, port = Catcher(None), free_port()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(catcher), "127.0.0.1", port)
    yield catcher, port
    server.close()


@pytest.fixture
async def deps(sessions: async_sessionmaker[AsyncSession], nc: NATS, smtp) -> AsyncIterator[handlers.Deps]:  # type: ignore[no-untyped-def]
    responder = await bus.serve_requests(nc, PROFILE_QUERY_SUBJECT, ProfileQuery, partial(profile_handlers.on_profile_query, sessions=sessions))
    async with httpx.AsyncClient(timeout=5) as client:
        providers = service.Providers(SmtpProvider("127.0.0.1", smtp[1], "Herald <t@herald.local>"), WebhookProvider(client))
        yield handlers.Deps(sessions, nc, nc.jetstream(), providers, max_attempts=3)
    await responder.unsubscribe()


def a_send(workspace_id: str, profile_id: str, channel: str, message: dict) -> SendRequested:
    return SendRequested(
        send_id=str(uuid.uuid4()), workspace_id=workspace_id, campaign_id="cmp_test", channel=channel,
        profile_id=profile_id, user_id=profile_id, message=message, requested_at=NOW,
        trigger=TriggerEvent(message_id="m1", name="Product Added", properties={"name": "Kite"}, timestamp=NOW),
    )


async def delivery(sessions: async_sessionmaker[AsyncSession], send_id: str) -> Delivery:
    async with sessions() as s:
        row = await s.scalar(select(Delivery).where(Delivery.send_id == send_id))
        assert row is not None
        return row


async def handle(send: SendRequested, deps: handlers.Deps) -> None:
    """One send through the consumer's batched handler; its failure raised, as the consumer would nak it."""
    failure = (await handlers.on_sends([bus.Received(send)], deps))[0]
    if failure is not None:
        raise failure


async def test_a_transient_failure_is_retried_and_the_send_never_goes_twice(deps, hook, sessions, nc, workspace_id) -> None:  # type: ignore[no-untyped-def]
    receiver, url = hook
    outcomes = await nc.jetstream().subscribe(f"events.{workspace_id}.track", ordered_consumer=True)
    profile_id = await person(sessions, workspace_id, {"first_name": "Ida"})
    send = a_send(workspace_id, profile_id, "webhook", {"url": url, "body": {"hi": "{{ user.traits.first_name }}"}})

    with pytest.raises(TransientError):
        await handle(send, deps)  # the receiver answers 503
    assert (await delivery(sessions, send.send_id)).status == "retrying"

    await handle(send, deps)  # redelivered: succeeds
    await handle(send, deps)  # redelivered again: already sent, nothing goes out
    row = await delivery(sessions, send.send_id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert [c["body"] for c in receiver.calls] == [{"hi": "Ida"}, {"hi": "Ida"}]
    assert {c["key"] for c in receiver.calls} == {send.send_id}

    event = orjson.loads((await outcomes.next_msg(timeout=5)).data)
    assert event["event"] == "$message_sent" and event["properties"]["send_id"] == send.send_id


async def test_email_is_delivered_over_smtp_or_skipped_with_a_reason(deps, smtp, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    catcher, _ = smtp
    message = {"subject": "Hi {{ user.traits.first_name }}", "body": "Your {{ event.properties.name }}."}
    with_address = await person(sessions, workspace_id, {"first_name": "Jo", "email": "jo@example.com"})
    without = await person(sessions, workspace_id, {"first_name": "Kim"})

    sent = a_send(workspace_id, with_address, "email", message)
    await handle(sent, deps)
    assert [(e["rcpt_tos"], e["subject"], e["send_id"]) for e in catcher.emails] == [(["jo@example.com"], "Hi Jo", sent.send_id)]

    skipped = a_send(workspace_id, without, "email", message)
    await handle(skipped, deps)
    row = await delivery(sessions, skipped.send_id)
    assert row.status == "skipped" and "no email address" in (row.reason or "")
    assert len(catcher.emails) == 1


async def test_a_template_error_fails_that_send_only(deps, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    profile_id = await person(sessions, workspace_id, {"email": "x@example.com"})
    broken = a_send(workspace_id, profile_id, "email", {"subject": "ok", "body": "{{ user.traits.name | nosuchfilter }}"})
    await handle(broken, deps)
    row = await delivery(sessions, broken.send_id)
    assert row.status == "failed" and "template error" in (row.reason or "")


async def test_an_interrupted_attempt_is_not_resent(deps, hook, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    receiver, url = hook
    profile_id = await person(sessions, workspace_id, {})
    send = a_send(workspace_id, profile_id, "webhook", {"url": url})
    async with unit_of_work(sessions) as s:
        await service.begin_many(s, [send], deps.in_flight_seconds)  # a worker claimed it ...
    # ... while it may still be working, a redelivery waits instead of judging it
    with pytest.raises(TransientError):
        await handle(send, deps)
    # ... and once the ack wait has passed, it has died before recording the outcome
    async with unit_of_work(sessions) as s:
        await s.execute(
            update(Delivery).where(Delivery.send_id == send.send_id).values(updated_at=NOW - timedelta(minutes=5))
        )
    await handle(send, deps)
    row = await delivery(sessions, send.send_id)
    assert row.status == "failed" and "interrupted" in (row.reason or "")
    assert receiver.calls == []


async def test_a_batch_settles_each_send_on_its_own(deps, hook, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    receiver, url = hook
    profile_id = await person(sessions, workspace_id, {"first_name": "Lea"})
    retried = a_send(workspace_id, profile_id, "webhook", {"url": url, "body": {"n": "{{ user.traits.first_name }}"}})
    with pytest.raises(TransientError):
        await handle(retried, deps)  # the receiver's one 503
    done = a_send(workspace_id, profile_id, "webhook", {"url": url, "body": {"n": "done"}})
    await handle(done, deps)
    broken = a_send(workspace_id, profile_id, "webhook", {"url": url, "body": {"n": "{{ user | nosuchfilter }}"}})
    busy = a_send(workspace_id, profile_id, "webhook", {"url": url})
    async with unit_of_work(sessions) as s:
        await service.begin_many(s, [busy], deps.in_flight_seconds)  # another worker is delivering it

    failures = await handlers.on_sends([bus.Received(x) for x in (retried, done, broken, busy)], deps)
    assert [type(f) for f in failures] == [type(None), type(None), type(None), TransientError]
    assert [(await delivery(sessions, x.send_id)).status for x in (retried, done, broken, busy)] == [
        "sent", "sent", "failed", "sending"
    ]
    assert [c["body"] for c in receiver.calls] == [{"n": "Lea"}, {"n": "done"}, {"n": "Lea"}]  # nothing twice
