"""Profiles app factory and lifespan: the API, the EVENTS consumer, the profile responder and the dead-token one,
the subscription responder and the outbox drain (subscription and consent announcements)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from kernel import bus, contracts
from kernel.contracts import (
    PROFILE_QUERY_SUBJECT,
    SUBSCRIPTION_SUBJECT,
    TOKEN_DEACTIVATION_SUBJECT,
    Event,
    ProfileQuery,
    SubscriptionChange,
    TokenDeactivation,
)
from kernel.privacy import erasure_consumer
from kernel.web import create_app, open_resources
from services.profiles import handlers
from services.profiles.api import devices_router, router
from services.profiles.attributes.api import router as attributes_router
from services.profiles.braze import handlers as braze_handlers
from services.profiles.config import get_settings
from services.profiles.privacy import handlers as privacy_handlers
from services.profiles.privacy import service as privacy
from services.profiles.privacy.api import erasures_router
from services.profiles.privacy.api import users_router as privacy_router
from services.profiles.subscriptions import handlers as subscription_handlers
from services.profiles.subscriptions.api import groups_router, users_router
from services.profiles.subscriptions.service import OUTBOX


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with open_resources("profiles", settings) as res:
        app.state.resources = res
        consumer = bus.ConsumerSpec.for_service(
            "profiles",
            Event,
            partial(handlers.on_events, sessions=res.db, js=res.jetstream, rules=settings.rules()),
            settings,
            batched=True,
        )
        responder = await bus.serve_requests(
            res.nats, PROFILE_QUERY_SUBJECT, ProfileQuery, partial(handlers.on_profile_query, sessions=res.db)
        )
        lookups = await bus.serve_requests(
            res.nats, contracts.PROFILE_LOOKUP_SUBJECT, contracts.ProfileLookup,
            partial(handlers.on_profile_lookup, sessions=res.db),
        )
        deactivations = await bus.serve_requests(
            res.nats, TOKEN_DEACTIVATION_SUBJECT, TokenDeactivation,
            partial(handlers.on_token_deactivation, sessions=res.db),
        )
        subscriptions = await bus.serve_requests(
            res.nats, SUBSCRIPTION_SUBJECT, SubscriptionChange,
            partial(subscription_handlers.on_set_subscription, sessions=res.db, js=res.jetstream),
        )
        braze = await bus.serve_requests(
            res.nats, contracts.BRAZE_LOOKUP_SUBJECT, contracts.BrazeLookup,
            partial(braze_handlers.on_lookup, sessions=res.db),
        )
        stop = asyncio.Event()
        drain = asyncio.create_task(OUTBOX.drain(res.db, res.jetstream, stop), name="profiles:outbox")
        try:
            erasures = [
                erasure_consumer("profiles", privacy.erase, res.db, res.jetstream, settings),
                privacy_handlers.report_consumer(res.db, settings),
            ]
            async with bus.consuming(res.jetstream, [consumer, *erasures], readiness=res.readiness):
                yield
        finally:
            stop.set()
            await asyncio.gather(drain, return_exceptions=True)
            await subscriptions.stop()
            await braze.stop()
            await deactivations.stop()
            await lookups.stop()
            await responder.stop()  # answers in flight go out before the connection drains


def build() -> FastAPI:
    """The profiles ASGI app."""
    return create_app("Herald profiles", lifespan, [
        router, devices_router, users_router, groups_router, attributes_router, privacy_router, erasures_router,
    ])
