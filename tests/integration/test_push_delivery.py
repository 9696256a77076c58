"""Push sends through the dispatcher to the dev sinks' APNs and FCM servers, with devices and tokens read
from the profiles service's view and dead tokens deactivated through it: each device on its own."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from cryptography.fernet import Fernet
from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import PROFILE_QUERY_SUBJECT, TOKEN_DEACTIVATION_SUBJECT, ProfileQuery, TokenDeactivation
from kernel.db import unit_of_work
from kernel.outbox import Outbox
from services.dispatcher import models, service
from services.dispatcher.api import lookup_deliveries
from services.dispatcher.domain import WebhookPolicy
from services.dispatcher.models import PushAttempt
from services.dispatcher.providers import ApnsProvider, FcmProvider, SmtpProvider, WebhookProvider
from services.dispatcher.schemas import ApnsChannelIn, DeliveryLookup, FcmChannelIn
from services.profiles import handlers as profile_handlers
from services.profiles import service as profiles
from services.profiles.models import Profile
from services.profiles.views import segment_devices
from tests.integration.helpers import person
from tests.integration.test_dispatch_delivery import a_send, delivery, handle, retry_now, settings
from tests.integration.test_push_providers import Sink, apns_token, fcm_token, sink  # noqa: F401  (fixture)

MESSAGE = {
    "title": "Hi {{ user.traits.first_name }}", "body": "Your {{ event.properties.name }} is waiting",
    "deep_link": "shop://cart", "data": {"cart": "{{ event.properties.name }}"}, "collapse_key": "cart",
    "ios": {"title": "Hey {{ user.traits.first_name }}", "badge": "{{ user.traits.cart_items }}"},
    "android": {"channel_id": "promo"},
}


@pytest.fixture
async def responders(sessions: async_sessionmaker[AsyncSession], nc: NATS) -> AsyncIterator[None]:
    """The profiles service's answers: profile lookups and dead tokens."""
    lookups = await bus.serve_requests(nc, PROFILE_QUERY_SUBJECT, ProfileQuery, partial(profile_handlers.on_profile_query, sessions=sessions))
    dead = await bus.serve_requests(nc, TOKEN_DEACTIVATION_SUBJECT, TokenDeactivation,
                                    partial(profile_handlers.on_token_deactivation, sessions=sessions))
    yield
    await lookups.stop()
    await dead.stop()


@pytest.fixture
async def pusher(sessions: async_sessionmaker[AsyncSession], nc: NATS, sink: Sink, workspace_id: str) -> AsyncIterator[service.Dispatcher]:  # noqa: F811
    """A dispatcher whose push providers are the sink's, with this workspace's APNs and FCM credentials saved."""
    configured = settings(secrets_key=Fernet.generate_key().decode(), fcm_token_origins=sink.url)
    apns, fcm = ApnsProvider(f"{sink.url}/apns", f"{sink.url}/apns", 5), FcmProvider(f"{sink.url}/fcm", 5, configured.token_origins())
    webhook = WebhookProvider(WebhookPolicy.parse(""), timeout=5)
    key, account = await sink.apns_key(), await sink.service_account()
    async with unit_of_work(sessions) as session:
        await service.save_apns(session, configured, workspace_id, ApnsChannelIn(
            team_id=key.team_id, key_id=key.key_id, private_key=key.private_key, topic="com.example.shop", environment="sandbox"))
        await service.save_fcm(session, configured, workspace_id, FcmChannelIn(service_account=account))
    providers = service.Providers(SmtpProvider("127.0.0.1", 1, "t@herald.local", timeout=1), webhook, apns, fcm)
    yield service.Dispatcher(sessions, nc, nc.jetstream(), providers, Outbox(models.outbox), configured)
    for provider in (apns, fcm, webhook):
        await provider.aclose()


async def with_devices(sessions: async_sessionmaker[AsyncSession], workspace_id: str, traits: dict[str, Any],
                       devices: dict[str, dict[str, str]]) -> str:
    """A profile with these devices registered through the profiles service; returns its id."""
    profile_id = await person(sessions, workspace_id, traits)
    async with unit_of_work(sessions) as session:
        profile = await session.scalar(select(Profile).where(Profile.workspace_id == workspace_id, Profile.profile_id == profile_id))
        assert profile is not None
        for device_id, fields in devices.items():
            await profiles.register_device(session, profile, device_id, fields, datetime.now(UTC))
    return profile_id


async def attempts(sessions: async_sessionmaker[AsyncSession], send_id: str) -> dict[str, tuple[str, str | None]]:
    async with sessions() as s:
        rows = await s.scalars(select(PushAttempt).where(PushAttempt.send_id == send_id))
        return {r.device_id: (r.status, r.reason_code) for r in rows}


async def push_enabled(sessions: async_sessionmaker[AsyncSession], workspace_id: str, device_id: str) -> bool:
    async with sessions() as s:
        value = await s.scalar(select(segment_devices.c.push_enabled).where(
            segment_devices.c.workspace_id == workspace_id, segment_devices.c.device_id == device_id))
        return bool(value)


async def test_one_send_reaches_every_push_enabled_device_and_a_dead_token_is_turned_off(
    pusher: service.Dispatcher, responders: None, sink: Sink, sessions, workspace_id: str  # noqa: F811
) -> None:
    iphone, pixel = apns_token(), fcm_token()
    profile_id = await with_devices(sessions, workspace_id, {"first_name": "Ada", "cart_items": "3"}, {
        "iphone": {"platform": "ios", "app": "Shop", "push_token": iphone},
        "pixel": {"platform": "android", "app": "Shop", "push_token": pixel},
        "tablet": {"platform": "android", "app": "Shop"},  # no token: not push-enabled
    })
    send = a_send(workspace_id, profile_id, "push", MESSAGE)
    await handle(pusher, send)

    row = await delivery(sessions, send.send_id)
    assert (row.status, row.recipient, row.provider_response) == ("sent", "2 devices", "2 sent")
    assert await attempts(sessions, send.send_id) == {"iphone": ("sent", "ok"), "pixel": ("sent", "ok")}
    apns, fcm = [p for p in sink.catcher.pushes if p["service"] == "apns"], [p for p in sink.catcher.pushes if p["service"] == "fcm"]
    assert [p["token"] for p in apns] == [iphone] and [p["token"] for p in fcm] == [pixel]
    assert apns[0]["payload"]["aps"]["alert"] == {"title": "Hey Ada", "body": "Your Kite is waiting"}
    assert apns[0]["payload"]["aps"]["badge"] == 3 and apns[0]["payload"]["cart"] == "Kite"
    assert fcm[0]["message"]["notification"] == {"title": "Hi Ada", "body": "Your Kite is waiting"}
    assert fcm[0]["message"]["android"]["notification"] == {"channel_id": "promo"}
    async with sessions() as s:
        [shown] = (await lookup_deliveries(DeliveryLookup(send_ids=[send.send_id]), workspace_id, s)).messages
    assert shown.devices is not None and {(d.device_id, d.service, d.status) for d in shown.devices} == {
        ("iphone", "apns", "sent"), ("pixel", "fcm", "sent")}

    await sink.dead(iphone)  # the app was deleted from the iPhone
    again = a_send(workspace_id, profile_id, "push", MESSAGE)
    await handle(pusher, again)
    assert (await delivery(sessions, again.send_id)).status == "sent"  # the Pixel still took it
    status, code = (await attempts(sessions, again.send_id))["iphone"]
    assert (status, code) == ("failed", "unregistered")
    assert not await push_enabled(sessions, workspace_id, "iphone") and await push_enabled(sessions, workspace_id, "pixel")

    third = a_send(workspace_id, profile_id, "push", MESSAGE)
    await handle(pusher, third)
    assert await attempts(sessions, third.send_id) == {"pixel": ("sent", "ok")}  # the dead token is no longer pushed to


async def test_an_outage_retries_only_the_device_that_failed_honouring_retry_after(
    pusher: service.Dispatcher, responders: None, sink: Sink, sessions, workspace_id: str  # noqa: F811
) -> None:
    profile_id = await with_devices(sessions, workspace_id, {"first_name": "Bo", "cart_items": "1"}, {
        "iphone": {"platform": "ios", "push_token": apns_token()},
        "pixel": {"platform": "android", "push_token": fcm_token()},
    })
    await sink.outage("fcm", 503, retry_after=120)
    send = a_send(workspace_id, profile_id, "push", MESSAGE)
    await handle(pusher, send)
    row = await delivery(sessions, send.send_id)
    assert (row.status, row.reason_code) == ("retrying", "provider_unavailable")
    assert row.next_attempt_at is not None and (row.next_attempt_at - datetime.now(UTC)).total_seconds() > 100
    assert await attempts(sessions, send.send_id) == {"iphone": ("sent", "ok"), "pixel": ("retrying", "provider_unavailable")}

    assert await retry_now(pusher, sessions, send) == 1
    assert (await delivery(sessions, send.send_id)).status == "sent"
    assert await attempts(sessions, send.send_id) == {"iphone": ("sent", "ok"), "pixel": ("sent", "ok")}
    assert [p["service"] for p in sink.catcher.pushes] == ["apns", "fcm"]  # the iPhone got it once


async def test_bad_data_skips_its_own_send_and_never_another(
    pusher: service.Dispatcher, responders: None, sink: Sink, sessions, workspace_id: str  # noqa: F811
) -> None:
    fine = await with_devices(sessions, workspace_id, {"first_name": "Cy", "cart_items": "2"}, {"p": {"platform": "ios", "push_token": apns_token()}})
    huge = await with_devices(sessions, workspace_id, {"first_name": "x" * 5000, "cart_items": "2"}, {"p2": {"platform": "ios", "push_token": apns_token()}})
    odd = await with_devices(sessions, workspace_id, {"first_name": "Di", "cart_items": "lots"}, {"p3": {"platform": "ios", "push_token": apns_token()}})
    nobody = await with_devices(sessions, workspace_id, {"first_name": "Ed"}, {})
    sends = {who: a_send(workspace_id, who, "push", MESSAGE) for who in (fine, huge, odd, nobody)}
    await handle(pusher, *sends.values())
    outcome = {who: ((r := await delivery(sessions, s.send_id)).status, r.reason_code) for who, s in sends.items()}
    assert outcome == {fine: ("sent", "ok"), huge: ("skipped", "payload_too_large"), odd: ("skipped", "template_error"),
                       nobody: ("skipped", "no_device")}
    assert "4096" in ((await delivery(sessions, sends[huge].send_id)).reason or "")
    assert "message.ios.badge" in ((await delivery(sessions, sends[odd].send_id)).reason or "")
    assert len(sink.catcher.pushes) == 1


async def test_without_credentials_for_the_platform_a_device_is_skipped_saying_so(
    pusher: service.Dispatcher, responders: None, sessions, workspace_id: str  # noqa: F811
) -> None:
    profile_id = await with_devices(sessions, workspace_id, {"first_name": "Fa"}, {"p": {"platform": "ios", "push_token": apns_token()}})
    send = a_send(workspace_id, profile_id, "push", {**MESSAGE, "app_id": "app_other", "ios": None})
    async with unit_of_work(sessions) as session:
        await session.execute(models.ChannelConfig.__table__.delete().where(
            models.ChannelConfig.workspace_id == workspace_id, models.ChannelConfig.kind == "apns"))
    await handle(pusher, send)
    row = await delivery(sessions, send.send_id)
    assert (row.status, row.reason_code) == ("skipped", "no_credentials") and "PUT /api/v1/channels/apns" in (row.reason or "")
