"""Bus handlers of the user's rights in the profiles service: the erasure reports of every service."""

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import ERASURE_CONSUMERS, ErasureReport
from kernel.db import unit_of_work
from services.profiles.privacy import service


async def on_erasure_report(report: ErasureReport, sessions: async_sessionmaker[AsyncSession]) -> None:
    """A service finished its part of an erasure: note it on the job."""
    async with unit_of_work(sessions) as session:
        await service.record_report(session, report)


def report_consumer(sessions: async_sessionmaker[AsyncSession], settings: object) -> bus.ConsumerSpec:
    """The durable consumer of erasure reports (one at a time: a job's row is updated by one report at once)."""
    stream, durable, subject = ERASURE_CONSUMERS["profiles_reports"]

    async def handle(report: ErasureReport) -> None:
        await on_erasure_report(report, sessions)

    return bus.ConsumerSpec(
        stream=stream, durable=durable, subject=subject, model=ErasureReport, handler=handle, batch=16,
        ack_wait=getattr(settings, "ack_wait_seconds", 30.0),
    )
