"""Webhooks cannot reach the private network, and the delivery log tells nothing of the network they leave from.

A real HTTP receiver on 127.0.0.1 stands for a service inside the cluster; the dispatcher runs its
real provider (its own connection pool and resolver), with the allow-list empty unless a test says.
"""

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from herald.infra import free_port
from kernel import bus
from kernel.contracts import PROFILE_QUERY_SUBJECT, ProfileQuery, SendRequested, TriggerEvent
from kernel.outbox import Outbox
from services.dispatcher import handlers, models, service
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.domain import IPAddress, WebhookPolicy
from services.dispatcher.models import Delivery
from services.dispatcher.providers import SmtpProvider, WebhookProvider, resolve
from services.profiles import handlers as profile_handlers
from services.scheduler import app as scheduler_app
from services.scheduler import config as scheduler_config
from services.scheduler import schemas as scheduler_schemas
from tests.integration.helpers import person, running

NOW = datetime.now(UTC)
SECRET = "db-password-hunter2"


class Receiver:
    """An internal service: records every request; /secret fails with a body, /slow answers late."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.api_route("/{path:path}", methods=["POST", "PUT", "PATCH"])(self.receive)

    async def receive(self, path: str, request: Request) -> Response:
        self.calls.append({"path": path, "host": request.headers.get("host"), "headers": dict(request.headers)})
        if path == "secret":
            return Response(SECRET, status_code=500)
        if path == "slow":
            await asyncio.sleep(3)
        return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    server = uvicorn.Server(uvicorn.Config(found.app, host="127.0.0.1", port=found.port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield found
    server.should_exit = True
    await task


@pytest.fixture
async def responder(sessions: async_sessionmaker[AsyncSession], nc: NATS) -> AsyncIterator[None]:
    """The profiles service's answer to profile lookups."""
    sub = await bus.serve_requests(
        nc, PROFILE_QUERY_SUBJECT, ProfileQuery, partial(profile_handlers.on_profile_query, sessions=sessions)
    )
    yield
    await sub.unsubscribe()


class Names:
    """The test's own DNS: the names it knows resolve to its addresses, the rest as the system resolves them."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host in self.answers:
            return [ipaddress.ip_address(a) for a in self.answers[host]]
        return await resolve(host, port)


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
async def dispatch(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, responder: None, names: Names
) -> AsyncIterator[Callable[[str], Any]]:
    """A dispatcher factory: `dispatch(allowed)` runs with HERALD_WEBHOOK_ALLOWED_HOSTS=allowed."""
    providers: list[WebhookProvider] = []

    def make(allowed: str = "") -> service.Dispatcher:
        settings = DispatcherSettings(webhook_allowed_hosts=allowed, webhook_timeout_seconds=1.0, attempt_timeout_seconds=5.0)  # type: ignore[call-arg]
        webhook = WebhookProvider(WebhookPolicy.parse(settings.webhook_allowed_hosts), 1.0, resolver=names)
        providers.append(webhook)
        email = SmtpProvider("127.0.0.1", free_port(), "Herald <t@herald.local>", timeout=1)
        return service.Dispatcher(sessions, nc, nc.jetstream(), service.Providers(email, webhook), Outbox(models.outbox), settings)

    yield make
    for webhook in providers:
        await webhook.aclose()


def hook_send(workspace_id: str, profile_id: str, url: str, **message: Any) -> SendRequested:
    return SendRequested.model_validate(dict(
        send_id=str(uuid.uuid4()), workspace_id=workspace_id, campaign_id="cmp_hooks", channel="webhook",
        profile_id=profile_id, user_id=profile_id, message={"url": url, **message}, requested_at=NOW,
        trigger=TriggerEvent(message_id="m1", name="Product Added", properties={}, timestamp=NOW),
    ))


async def outcomes(dispatcher: service.Dispatcher, sessions: async_sessionmaker[AsyncSession], *sends: SendRequested) -> list[Delivery]:
    """Hand the sends to the dispatcher as one fetch and read back their rows, in order."""
    await handlers.on_sends([bus.Received(s) for s in sends], dispatcher)
    async with sessions() as s:
        rows = {r.send_id: r for r in await s.scalars(select(Delivery).where(Delivery.send_id.in_([x.send_id for x in sends])))}
    return [rows[x.send_id] for x in sends]


async def test_webhooks_to_private_addresses_fail_at_once_and_reach_nothing(  # type: ignore[no-untyped-def]
    dispatch, receiver, sessions, workspace_id
) -> None:
    port = receiver.port
    urls = [
        f"http://127.0.0.1:{port}/ok",
        f"http://localhost:{port}/ok",
        f"http://2130706433:{port}/ok",  # 127.0.0.1 as one decimal number
        f"http://[::ffff:127.0.0.1]:{port}/ok",
        f"http://0.0.0.0:{port}/ok",  # on Linux, connecting to 0.0.0.0 reaches the local host
        f"http://[::1]:{port}/ok",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.1/",
    ]
    profile_id = await person(sessions, workspace_id, {})
    sends = [hook_send(workspace_id, profile_id, url) for url in urls]
    started = asyncio.get_running_loop().time()
    rows = await outcomes(dispatch(""), sessions, *sends)
    assert [(r.status, r.reason_code, r.attempts) for r in rows] == [("failed", "blocked_address", 1)] * len(urls)
    assert asyncio.get_running_loop().time() - started < 3  # refused before connecting: no timeouts waited out
    assert receiver.calls == []
    for row in rows:
        assert str(port) not in (row.reason or "") and "127." not in (row.reason or "") and row.provider_response is None


async def test_a_name_is_judged_by_every_address_it_resolves_to(dispatch, receiver, names, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    names.answers = {
        "intranet.example.test": ["10.1.2.3"],
        "metadata.example.test": ["169.254.169.254"],
        "mixed.example.test": ["93.184.216.34", "127.0.0.1"],  # one public answer does not make the other safe
    }
    profile_id = await person(sessions, workspace_id, {})
    sends = [hook_send(workspace_id, profile_id, f"http://{name}:{receiver.port}/ok") for name in names.answers]
    rows = await outcomes(dispatch(""), sessions, *sends)
    assert [(r.status, r.reason_code) for r in rows] == [("failed", "blocked_address")] * 3
    assert receiver.calls == []


async def test_the_connection_goes_to_the_address_that_was_checked(dispatch, receiver, names, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    # No real DNS knows this name: the request can only arrive if the provider connected to the address
    # it resolved and checked itself, with one lookup (a second lookup is what DNS rebinding exploits).
    names.answers = {"hooks.example.test": ["127.0.0.1"]}
    profile_id = await person(sessions, workspace_id, {})
    send = hook_send(workspace_id, profile_id, f"http://hooks.example.test:{receiver.port}/ok")
    (row,) = await outcomes(dispatch("127.0.0.1"), sessions, send)
    assert (row.status, row.reason_code) == ("sent", "ok")
    assert [c["host"] for c in receiver.calls] == [f"hooks.example.test:{receiver.port}"]
    assert names.asked == ["hooks.example.test"]

    names.answers = {"hooks.example.test": ["10.9.9.9"]}  # the name now points elsewhere
    (again,) = await outcomes(dispatch("127.0.0.1"), sessions, hook_send(workspace_id, profile_id, f"http://hooks.example.test:{receiver.port}/ok"))
    assert (again.status, again.reason_code) == ("failed", "blocked_address")
    assert len(receiver.calls) == 1


async def test_the_allow_list_admits_the_operators_own_hosts(dispatch, receiver, names, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    names.answers = {"sinks.internal": ["127.0.0.1"]}
    profile_id = await person(sessions, workspace_id, {})
    by_network = hook_send(workspace_id, profile_id, f"http://127.0.0.1:{receiver.port}/a")
    by_name = hook_send(workspace_id, profile_id, f"http://sinks.internal:{receiver.port}/b")
    rows = await outcomes(dispatch("127.0.0.0/8"), sessions, by_network)
    rows += await outcomes(dispatch("sinks.internal"), sessions, by_name)
    assert [(r.status, r.reason_code) for r in rows] == [("sent", "ok"), ("sent", "ok")]
    assert [c["path"] for c in receiver.calls] == ["a", "b"]


async def test_the_delivery_log_holds_a_status_or_an_error_type_never_a_body_or_an_address(  # type: ignore[no-untyped-def]
    dispatch, receiver, sessions, workspace_id
) -> None:
    profile_id = await person(sessions, workspace_id, {})
    closed = free_port()
    sends = [
        hook_send(workspace_id, profile_id, f"http://127.0.0.1:{receiver.port}/secret"),
        hook_send(workspace_id, profile_id, f"http://127.0.0.1:{receiver.port}/slow"),
        hook_send(workspace_id, profile_id, f"http://127.0.0.1:{closed}/nobody"),
    ]
    rows = await outcomes(dispatch("127.0.0.1"), sessions, *sends)
    assert [(r.status, r.reason_code, r.reason) for r in rows] == [
        ("retrying", "http_500", "webhook answered HTTP 500"),
        ("retrying", "provider_unreachable", "webhook unreachable: ReadTimeout"),
        ("retrying", "provider_unreachable", "webhook unreachable: ConnectError"),
    ]
    assert all(r.provider_response is None for r in rows)


async def test_a_stored_campaigns_framing_headers_never_go_out(dispatch, receiver, sessions, workspace_id) -> None:  # type: ignore[no-untyped-def]
    # Campaigns saved before headers were checked at save time are checked again when they send.
    profile_id = await person(sessions, workspace_id, {})
    url = f"http://127.0.0.1:{receiver.port}/ok"
    sends = [
        hook_send(workspace_id, profile_id, url, headers={"Host": "admin.internal"}),
        hook_send(workspace_id, profile_id, url, headers={"Content-Length": "0"}),
        hook_send(workspace_id, profile_id, url, headers={"Idempotency-Key": "mine"}),
        hook_send(workspace_id, profile_id, url, headers={"X-Token": "t"}),
    ]
    rows = await outcomes(dispatch("127.0.0.1"), sessions, *sends)
    assert [(r.status, r.reason_code) for r in rows] == [("failed", "invalid_message")] * 3 + [("sent", "ok")]
    (call,) = receiver.calls
    assert call["headers"]["x-token"] == "t" and call["headers"]["idempotency-key"] == sends[3].send_id


@asynccontextmanager
async def scheduler(workspace_id: str, allowed: str) -> AsyncIterator[Any]:
    """The scheduler's API in-process, with this allow-list."""
    scheduler_schemas.webhook_policy.cache_clear()
    try:
        async with running(
            scheduler_app.build, scheduler_config.get_settings, workspace_id, HERALD_WEBHOOK_ALLOWED_HOSTS=allowed
        ) as client:
            yield client
    finally:
        scheduler_schemas.webhook_policy.cache_clear()


async def test_saving_a_webhook_to_a_private_address_is_a_422_naming_the_url(workspace_id: str) -> None:
    body = {"name": "Hook", "channel": "webhook", "trigger": {"event": "Product Added"}, "message": {"url": "http://169.254.169.254/latest"}}
    async with scheduler(workspace_id, "") as api:
        refused = await api.post("/api/v1/campaigns", json=body)
        assert refused.status_code == 422
        (error,) = refused.json()["detail"]
        assert (error["loc"], error["type"]) == (["body", "message", "url"], "blocked_address")
        headers = await api.post("/api/v1/campaigns", json={**body, "message": {"url": "https://hooks.example.com/", "headers": {"X-City": "café"}}})
        assert headers.status_code == 422 and headers.json()["detail"][0]["loc"] == ["body", "message", "headers", "X-City"]
    async with scheduler(workspace_id, "169.254.169.254") as api:
        assert (await api.post("/api/v1/campaigns", json=body)).status_code == 201
