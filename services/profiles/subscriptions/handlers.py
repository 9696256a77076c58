"""Subscription bus handlers: the `rpc.profiles.set_subscription` responder (C1)."""

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import SubscriptionChange, SubscriptionSet
from kernel.db import unit_of_work
from services.profiles.subscriptions import service


async def on_set_subscription(
    change: SubscriptionChange, sessions: async_sessionmaker[AsyncSession], js: JetStreamContext
) -> SubscriptionSet:
    """Set one profile's state on a channel or in a group (an unsubscribe link, an SMS STOP); answer the state held."""
    async with unit_of_work(sessions) as session:
        answer, staged = await service.set_from_request(session, change)
    await service.OUTBOX.publish_after_commit(sessions, js, staged)
    return answer
