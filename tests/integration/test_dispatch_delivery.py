"""The dispatcher against a real HTTP server and a real SMTP server: durable retries, never twice, reasons."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial

import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from herald.infra import free_port
from herald.sinks import Catcher, smtp_server
from kernel import bus
from kernel.contracts import PROFILE_QUERY_SUBJECT, ProfileQuery, SendRequested, TriggerEvent
from kernel.db import unit_of_work
from kernel.outbox import Outbox
from services.dispatcher import handlers, models, service
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.domain import WebhookPolicy
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
            return Response(status_code=503, headers={"retry-after": "1"})
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


class SmtpSink:
    """A real SMTP server (aiosmtpd) that can be taken down and brought back on the same port."""

    def __init__(self) -> None:
        self.catcher, self.port = Catcher(None), free_port()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(lambda: smtp_server(self.catcher), "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def responder(sessions: async_sessionmaker[AsyncSession], nc: NATS) -> AsyncIterator[None]:
    """The profiles service's answer to profile lookups."""
    sub = await bus.serve_requests(
        nc, PROFILE_QUERY_SUBJECT, ProfileQuery, partial(profile_handlers.on_profile_query, sessions=sessions)
    )
    yield
    await sub.unsubscribe()


def settings(**overrides: object) -> DispatcherSettings:
    # The receivers here listen on loopback, which webhooks may reach only when allowed.
    defaults = {"retry_base_seconds": 1.0, "attempt_timeout_seconds": 5.0, "webhook_allowed_hosts": "127.0.0.1"}
    return DispatcherSettings(**{**defaults, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def dispatcher(sessions: async_sessionmaker[AsyncSession], nc: NATS, smtp: SmtpSink) -> AsyncIterator[service.Dispatcher]:
    configured = settings()
    webhook = WebhookProvider(WebhookPolicy.parse(configured.webhook_allowed_hosts), timeout=5)
    providers = service.Providers(SmtpProvider("127.0.0.1", smtp.port, "Herald <t@herald.local>", timeout=2), webhook)
    yield service.Dispatcher(sessions, nc, nc.jetstream(), providers, Outbox(models.outbox), configured)
    await webhook.aclose()


def a_send(workspace_id: str, profile_id: str, channel: str, message: dict) -> SendRequested:
    return SendRequested.model_validate(dict(
        send_id=str(uuid.uuid4()), workspace_id=workspace_id, campaign_id="cmp_test", channel=channel,
        profile_id=profile_id, user_id=profile_id, message=message, requested_at=NOW,
        trigger=TriggerEvent(message_id="m1", name="Product Added", properties={"name": "Kite"}, timestamp=NOW),
    ))


async def delivery(sessions: async_sessionmaker[AsyncSession], send_id: str) -> Delivery:
    async with sessions() as s:
        row = await s.scalar(select(Delivery).where(Delivery.send_id == send_id))
        assert row is not None
        return row


async def handle(dispatcher: service.Dispatcher, *sends: SendRequested) -> None:
    """Sends through the consumer's batched handler, as one fetch."""
    await handlers.on_sends([bus.Received(s) for s in sends], dispatcher)


async def retry_now(dispatcher: service.Dispatcher, sessions: async_sessionmaker[AsyncSession], *sends: SendRequested) -> int:
    """Bring these sends' next attempt forward to now (time controlled, not waited for) and run due retries."""
    async with unit_of_work(sessions) as s:
        await s.execute(
            update(Delivery).where(Delivery.send_id.in_([x.send_id for x in sends]), Delivery.status == "retrying")
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    return await service.retry_due(dispatcher, 100)


def counted(status: str, reason: str, channel: str = "email") -> float:
    return REGISTRY.get_sample_value(
        "herald_deliveries_total", {"channel": channel, "status": status, "reason": reason}
    ) or 0.0


async def test_a_transient_failure_is_retried_from_the_delivery_log_and_never_goes_twice(
    dispatcher, responder, hook, sessions, nc, workspace_id  # type: ignore[no-untyped-def]
) -> None:
    receiver, url = hook
    outcomes = await nc.jetstream().subscribe(f"events.{workspace_id}.track", ordered_consumer=True)
    profile_id = await person(sessions, workspace_id, {"first_name": "Ida"})
    send = a_send(workspace_id, profile_id, "webhook", {"url": url, "body": {"hi": "{{ user.traits.first_name }}"}})

    await handle(dispatcher, send)  # the receiver answers 503: the bus message is done, the retry is a row
    row = await delivery(sessions, send.send_id)
    assert (row.status, row.reason_code, row.attempts) == ("retrying", "http_503", 1)
    assert row.next_attempt_at is not None and row.next_attempt_at > datetime.now(UTC)
    assert row.request is not None and row.give_up_at is not None and row.give_up_at > NOW + timedelta(hours=23)

    assert await service.retry_due(dispatcher, 100) == 0  # not due yet
    assert await retry_now(dispatcher, sessions, send) == 1  # due: succeeds
    await handle(dispatcher, send)  # the bus redelivers the original: nothing goes out again
    assert await retry_now(dispatcher, sessions, send) == 0
    row = await delivery(sessions, send.send_id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert [c["body"] for c in receiver.calls] == [{"hi": "Ida"}, {"hi": "Ida"}]
    assert {c["key"] for c in receiver.calls} == {send.send_id}

    event = orjson.loads((await outcomes.next_msg(timeout=5)).data)
    assert event["event"] == "$message_sent" and event["properties"]["send_id"] == send.send_id


async def test_email_survives_an_smtp_outage_and_a_profiles_outage(dispatcher, smtp, sessions, nc, workspace_id) -> None:  # type: ignore[no-untyped-def]
    message = {"subject": "Hi {{ user.traits.first_name }}", "body": "Your {{ event.properties.name }}."}
    profile_id = await person(sessions, workspace_id, {"first_name": "Jo", "email": "jo@example.com"})
    sends = [a_send(workspace_id, profile_id, "email", message) for _ in range(3)]

    await handle(dispatcher, *sends)  # nobody answers profile lookups: the profiles service is down
    rows = [await delivery(sessions, s.send_id) for s in sends]
    assert {(r.status, r.reason_code) for r in rows} == {("retrying", "profile_unavailable")}

    await smtp.stop()  # ... and then the SMTP server is down too, through several retries
    sub = await bus.serve_requests(
        nc, PROFILE_QUERY_SUBJECT, ProfileQuery, partial(profile_handlers.on_profile_query, sessions=sessions)
    )
    try:
        for _ in range(3):
            assert await retry_now(dispatcher, sessions, *sends) == 3
        rows = [await delivery(sessions, s.send_id) for s in sends]
        assert {(r.status, r.reason_code, r.attempts) for r in rows} == {("retrying", "provider_unreachable", 4)}

        await smtp.start()
        assert await retry_now(dispatcher, sessions, *sends) == 3
    finally:
        await sub.unsubscribe()
    assert sorted(e["send_id"] for e in smtp.catcher.emails) == sorted(s.send_id for s in sends)
    assert {(await delivery(sessions, s.send_id)).status for s in sends} == {"sent"}


async def test_only_the_end_of_the_retry_horizon_fails_a_send(dispatcher, responder, smtp, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    profile_id = await person(sessions, workspace_id, {"email": "late@example.com"})
    send = a_send(workspace_id, profile_id, "email", {"subject": "s", "body": "b"})
    await smtp.stop()
    await handle(dispatcher, send)
    assert (await delivery(sessions, send.send_id)).status == "retrying"
    async with unit_of_work(sessions) as s:  # the horizon (24 h by default) has run out
        await s.execute(update(Delivery).where(Delivery.send_id == send.send_id).values(give_up_at=datetime.now(UTC)))
    before = counted("failed", "retries_exhausted")
    await retry_now(dispatcher, sessions, send)
    row = await delivery(sessions, send.send_id)
    assert (row.status, row.reason_code, row.attempts) == ("failed", "retries_exhausted", 2)
    assert "gave up after 2 attempts" in (row.reason or "")
    assert counted("failed", "retries_exhausted") == before + 1


async def test_email_is_delivered_over_smtp_or_skipped_with_a_reason(dispatcher, responder, smtp, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    message = {"subject": "Hi {{ user.traits.first_name }}", "body": "Your {{ event.properties.name }}."}
    with_address = await person(sessions, workspace_id, {"first_name": "Jo", "email": "jo@example.com"})
    without = await person(sessions, workspace_id, {"first_name": "Kim"})

    sent = a_send(workspace_id, with_address, "email", message)
    await handle(dispatcher, sent)
    assert [(e["rcpt_tos"], e["subject"], e["send_id"]) for e in smtp.catcher.emails] == [(["jo@example.com"], "Hi Jo", sent.send_id)]

    skipped = a_send(workspace_id, without, "email", message)
    await handle(dispatcher, skipped)
    row = await delivery(sessions, skipped.send_id)
    assert (row.status, row.reason_code) == ("skipped", "no_address") and "no email address" in (row.reason or "")
    assert len(smtp.catcher.emails) == 1


async def test_a_template_error_skips_that_send_only(dispatcher, responder, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    profile_id = await person(sessions, workspace_id, {"email": "x@example.com"})
    broken = a_send(workspace_id, profile_id, "email", {"subject": "ok", "body": "{{ user.traits.name | nosuchfilter }}"})
    before = counted("skipped", "template_error")
    await handle(dispatcher, broken)
    row = await delivery(sessions, broken.send_id)
    assert (row.status, row.reason_code) == ("skipped", "template_error") and "template error" in (row.reason or "")
    assert counted("skipped", "template_error") == before + 1


async def test_a_template_beyond_the_limits_is_skipped_at_once_and_the_batch_goes_on(  # type: ignore[no-untyped-def]
    dispatcher, responder, smtp, sessions, workspace_id
) -> None:
    profile_id = await person(sessions, workspace_id, {"email": "loop@example.com"})
    runaway = a_send(workspace_id, profile_id, "email", {"subject": "s", "body": "{% for i in (1..event.properties.n) %}x{% endfor %}"})
    runaway = runaway.model_copy(update={"trigger": runaway.trigger.model_copy(update={"properties": {"n": 10**7}})})  # type: ignore[union-attr]
    good = a_send(workspace_id, profile_id, "email", {"subject": "ok", "body": "b"})
    started = asyncio.get_running_loop().time()
    await handle(dispatcher, runaway, good)
    assert asyncio.get_running_loop().time() - started < 3  # the 10^7 loop once took 22 s and sent 10 MB
    rows = [await delivery(sessions, s.send_id) for s in (runaway, good)]
    assert [(r.status, r.reason_code) for r in rows] == [("skipped", "template_error"), ("sent", "ok")]
    assert "loop iteration limit" in (rows[0].reason or "")
    assert [e["send_id"] for e in smtp.catcher.emails] == [good.send_id]


async def test_one_sends_long_subject_or_long_error_never_fails_the_batchs_record(  # type: ignore[no-untyped-def]
    dispatcher, responder, smtp, sessions, workspace_id
) -> None:
    profile_id = await person(sessions, workspace_id, {"email": "long@example.com", "name": "N" * 1500})
    long_subject = a_send(workspace_id, profile_id, "email", {"subject": "Hi {{ user.traits.name }}", "body": "b"})
    long_error = a_send(workspace_id, profile_id, "email", {"subject": "s", "body": "x" * 3000 + "{{ user.traits.name | nosuchfilter }}"})
    good = a_send(workspace_id, profile_id, "email", {"subject": "ok", "body": "b"})
    await handle(dispatcher, long_subject, long_error, good)  # a text beyond its column once failed every send's record
    rows = [await delivery(sessions, s.send_id) for s in (long_subject, long_error, good)]
    assert [(r.status, r.reason_code) for r in rows] == [("sent", "ok"), ("skipped", "template_error"), ("sent", "ok")]
    assert len(rows[0].subject or "") == 1000 and (rows[0].subject or "").endswith("…")
    assert len(rows[1].reason or "") <= 1000
    assert sorted(e["send_id"] for e in smtp.catcher.emails) == sorted([long_subject.send_id, good.send_id])


async def test_an_interrupted_attempt_is_recorded_unknown_and_never_resent(dispatcher, responder, hook, sessions, nc, workspace_id) -> None:  # type: ignore[no-untyped-def]
    receiver, url = hook
    outcomes = await nc.jetstream().subscribe(f"events.{workspace_id}.track", ordered_consumer=True)
    profile_id = await person(sessions, workspace_id, {})
    send = a_send(workspace_id, profile_id, "webhook", {"url": url})
    async with unit_of_work(sessions) as s:
        await service.claim(s, [(send, None)], dispatcher.settings)  # a worker claimed it and began ...
    await handle(dispatcher, send)  # ... a redelivery meanwhile leaves it to that worker
    assert await service.judge_interrupted(dispatcher, 100) == 0  # still within its attempt time
    async with unit_of_work(sessions) as s:  # ... and it died: its attempt began long ago, never recorded
        await s.execute(
            update(Delivery).where(Delivery.send_id == send.send_id).values(updated_at=NOW - timedelta(minutes=5))
        )
    before = counted("unknown", "interrupted", "webhook")
    assert await service.judge_interrupted(dispatcher, 100) == 1
    await handle(dispatcher, send)
    assert await retry_now(dispatcher, sessions, send) == 0
    row = await delivery(sessions, send.send_id)
    assert (row.status, row.reason_code) == ("unknown", "interrupted")
    assert receiver.calls == []
    assert counted("unknown", "interrupted", "webhook") == before + 1
    event = orjson.loads((await outcomes.next_msg(timeout=5)).data)
    assert event["event"] == "$message_unknown" and event["properties"]["send_id"] == send.send_id


async def test_one_users_bad_data_or_one_campaigns_bad_header_never_fails_another_send(
    dispatcher, responder, smtp, hook, sessions, workspace_id  # type: ignore[no-untyped-def]
) -> None:
    receiver, url = hook
    receiver.failures = 0
    message = {"subject": "Hello {{ user.traits.name }}", "body": "b"}
    good = await person(sessions, workspace_id, {"email": "good@example.com", "name": "Ann"})
    injected = await person(sessions, workspace_id, {"email": "evil@example.com\nBcc: all@example.com"})
    newline_name = await person(sessions, workspace_id, {"email": "nl@example.com", "name": "Bo\r\nBcc: all@example.com"})
    not_text = await person(sessions, workspace_id, {"email": 42})
    sends = [
        a_send(workspace_id, good, "email", message),
        a_send(workspace_id, injected, "email", message),
        a_send(workspace_id, newline_name, "email", message),
        a_send(workspace_id, not_text, "email", message),
        a_send(workspace_id, good, "webhook", {"url": url, "headers": {"x-city": "café"}}),
        a_send(workspace_id, good, "email", {**message, "from": "Shop <shop@example.com>\r\nBcc: all@example.com"}),
        a_send(workspace_id, good, "webhook", {"url": url, "body": {"ok": True}}),
    ]
    await handle(dispatcher, *sends)
    rows = [await delivery(sessions, s.send_id) for s in sends]
    assert [(r.status, r.reason_code) for r in rows] == [
        ("sent", "ok"),
        ("skipped", "invalid_address"),
        ("sent", "ok"),  # the name is in the subject, folded onto one line
        ("skipped", "invalid_address"),
        ("failed", "invalid_message"),
        ("skipped", "invalid_address"),
        ("sent", "ok"),
    ]
    assert sorted(rcpt for e in smtp.catcher.emails for rcpt in e["rcpt_tos"]) == ["good@example.com", "nl@example.com"]
    assert {e["subject"] for e in smtp.catcher.emails} == {"Hello Ann", "Hello Bo Bcc: all@example.com"}
    assert [c["body"] for c in receiver.calls] == [{"ok": True}]


async def test_outcome_events_left_behind_by_a_failed_publish_are_drained(sessions, nc, workspace_id, infra) -> None:  # type: ignore[no-untyped-def]
    import nats

    outcomes = await nc.jetstream().subscribe(f"events.{workspace_id}.track", ordered_consumer=True)
    profile_id = await person(sessions, workspace_id, {})
    send = a_send(workspace_id, profile_id, "webhook", {"url": "http://127.0.0.1:9/none"})
    outbox = Outbox(models.outbox, publish_timeout=1.0)
    async with unit_of_work(sessions) as s:
        await service.claim(s, [(send, None)], settings())
        claimed = [service.Claimed(send, 1)]
        _, staged = await service.record(s, outbox, [(claimed[0], service.Result("skipped", "no_address", "none"))], settings())
    gone = await nats.connect(infra.nats_url)
    await gone.close()  # the bus is unreachable right after the commit
    await outbox.publish_after_commit(sessions, gone.jetstream(), staged)
    async with sessions() as s:
        assert await s.scalar(select(models.outbox.c.id).where(models.outbox.c.id.in_(staged))) is not None

    stop = asyncio.Event()
    drain = asyncio.create_task(outbox.drain(sessions, nc.jetstream(), stop, interval=0.1))
    try:
        event = orjson.loads((await outcomes.next_msg(timeout=5)).data)
    finally:
        stop.set()
        await drain
    assert event["event"] == "$message_skipped" and event["properties"]["send_id"] == send.send_id


async def test_templates_see_attributes_devices_and_computed_values_and_only_what_they_read_is_asked(  # type: ignore[no-untyped-def]
    dispatcher, responder, hook, sessions, workspace_id
) -> None:
    from kernel.contracts import Event
    from services.profiles import service as profiles

    receiver, url = hook
    receiver.failures = 0
    phone = {"device": {"id": "d-ada", "type": "ios", "model": "iPhone15,2"}, "os": {"name": "iOS", "version": "18.1"},
             "locale": "de-DE", "app": {"name": "Shop", "version": "3.2.0"}}
    async with unit_of_work(sessions) as s:
        [applied] = await profiles.apply_events(s, [Event.model_validate({
            "workspace_id": workspace_id, "message_id": uuid.uuid4().hex, "type": "track", "event": "Application Opened",
            "user_id": "ada", "context": phone, "timestamp": NOW, "received_at": NOW})])
    profile_id = applied.resolved.profile_id
    rich = a_send(workspace_id, profile_id, "webhook", {"url": url, "body": {
        "language": "{{ user.attributes.language }}",
        "phones": "{% for d in user.devices %}{{ d.model }}{% endfor %}",
        "sessions": "{{ user.computed.sessions.count }}"}})
    plain = a_send(workspace_id, profile_id, "webhook", {"url": url, "body": {"hi": "{{ user.traits.plan | default: 'x' }}"}})

    assert service._profile_parts([plain]) == {(workspace_id, profile_id): frozenset({"traits", "subscriptions"})}
    assert service._profile_parts([rich])[(workspace_id, profile_id)] == frozenset(
        {"traits", "subscriptions", "attributes", "devices", "computed"})
    await handle(dispatcher, rich)
    assert (await delivery(sessions, rich.send_id)).status == "sent"
    assert receiver.calls[-1]["body"] == {"language": "de", "phones": "iPhone15,2", "sessions": "1"}
