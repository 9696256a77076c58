"""Dispatcher app factory and lifespan: the API and the SENDS consumer."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
from fastapi import FastAPI

from kernel import bus
from kernel.contracts import SendRequested
from kernel.web import create_app, open_resources
from services.dispatcher import handlers, service
from services.dispatcher.api import router
from services.dispatcher.config import get_settings
from services.dispatcher.providers import SmtpProvider, WebhookProvider


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with open_resources("dispatcher", settings) as res:
        app.state.resources = res
        res.http = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        providers = service.Providers(
            email=SmtpProvider(
                settings.smtp_host,
                settings.smtp_port,
                settings.email_from,
                settings.smtp_username or None,  # an empty value (a ConfigMap default) means no login
                settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                settings.smtp_starttls,
            ),
            webhook=WebhookProvider(res.http),
        )
        deps = handlers.Deps(
            res.db, res.nats, res.jetstream, providers, settings.max_attempts, settings.ack_wait_seconds
        )
        consumer = bus.ConsumerSpec.for_service(
            "dispatcher",
            SendRequested,
            partial(handlers.on_sends, deps=deps),
            settings,
            batched=True,
        )
        async with bus.consuming(res.jetstream, [consumer]):
            yield


def build() -> FastAPI:
    """The dispatcher ASGI app."""
    return create_app("Herald dispatcher", lifespan, [router])
