"""Dispatcher app factory and lifespan: the API, the SENDS consumer, the retry loop and the outbox drain."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from kernel import bus
from kernel.contracts import SendRequested
from kernel.outbox import Outbox
from kernel.privacy import erasure_consumer, serve_export
from kernel.web import create_app, open_resources
from services.dispatcher import handlers, models, service
from services.dispatcher.api import channels_router, router
from services.dispatcher.config import get_settings
from services.dispatcher.domain import WebhookPolicy
from services.dispatcher.inbox.api import router as inbox_router
from services.dispatcher.privacy import service as privacy
from services.dispatcher.providers import ApnsProvider, FcmProvider, SmtpProvider, TwilioProvider, WebhookProvider


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with open_resources("dispatcher", settings) as res:
        app.state.resources = res
        webhook = WebhookProvider(WebhookPolicy.parse(settings.webhook_allowed_hosts), settings.webhook_timeout_seconds)
        res.http = webhook.client  # closed with the other resources
        providers = service.Providers(
            email=SmtpProvider(
                settings.smtp_host,
                settings.smtp_port,
                settings.email_from,
                settings.smtp_username or None,  # an empty value (a ConfigMap default) means no login
                settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                settings.smtp_starttls,
                pool_size=settings.smtp_pool_size,
                idle_seconds=settings.smtp_idle_seconds,
            ),
            webhook=webhook,
            apns=ApnsProvider(settings.apns_url, settings.apns_sandbox_url, settings.push_timeout_seconds),
            fcm=FcmProvider(settings.fcm_url, settings.push_timeout_seconds, settings.token_origins()),
            sms=TwilioProvider(settings.twilio_url, settings.sms_timeout_seconds),
        )
        dispatcher = service.Dispatcher(res.db, res.nats, res.jetstream, providers, Outbox(models.outbox), settings)
        app.state.dispatcher = dispatcher
        consumer = bus.ConsumerSpec.for_service(
            "dispatcher", SendRequested, partial(handlers.on_sends, dispatcher=dispatcher), settings, batched=True
        )
        erasures = erasure_consumer("dispatcher", privacy.erase, res.db, res.jetstream, settings)
        exports = await serve_export(res.nats, "dispatcher", privacy.export, res.db)
        stop = asyncio.Event()
        loops: list[asyncio.Task[None]] = []
        try:
            async with bus.consuming(res.jetstream, [consumer, erasures], readiness=res.readiness) as consumers:
                # An attempt is bounded by attempt_timeout_seconds, and a batch still being handled
                # holds its messages (in_progress) past the ack wait the server really applies: an
                # attempt older than both was interrupted.
                dispatcher.interrupted_after_seconds = max(
                    consumers["dispatcher"].ack_wait, settings.attempt_timeout_seconds * 1.5
                )
                loops += [
                    asyncio.create_task(service.run_retries(dispatcher, stop), name="dispatcher:retries"),
                    asyncio.create_task(
                        dispatcher.outbox.drain(res.db, res.jetstream, stop, settings.retry_poll_seconds),
                        name="dispatcher:outbox",
                    ),
                ]
                yield
        finally:
            stop.set()
            await exports.stop()
            await asyncio.gather(*loops, return_exceptions=True)
            for push in (providers.apns, providers.fcm):
                if push is not None:
                    await push.aclose()
            await providers.email.aclose()
            if providers.sms is not None:
                await providers.sms.aclose()


def build() -> FastAPI:
    """The dispatcher ASGI app."""
    return create_app("Herald dispatcher", lifespan, [router, channels_router, inbox_router])
