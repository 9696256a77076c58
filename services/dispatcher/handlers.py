"""Dispatcher bus handler: SENDS in, handed to the delivery use case."""

from kernel import bus
from kernel.contracts import SendRequested
from kernel.db import unit_of_work
from services.dispatcher import service


async def on_sends(received: list[bus.Received[SendRequested]], dispatcher: service.Dispatcher) -> None:
    """Record a batch of sends and make each one's first attempt; retries continue from the delivery log.

    Every message of the batch is done once this returns: its send's row is durable from then on.
    """
    async with unit_of_work(dispatcher.sessions) as session:
        claimed = await service.claim(session, [(m.payload, m.correlation_id) for m in received], dispatcher.settings)
    await service.deliver(dispatcher, claimed)
