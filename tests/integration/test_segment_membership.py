"""The segmenter re-evaluates only the changed profile and publishes who entered and exited."""

import uuid

import orjson
from nats.aio.client import Client as NATS
from sqlalchemy import update

from kernel import bus
from kernel.contracts import ProfileChanged
from kernel.db import unit_of_work
from services.profiles.models import Profile
from services.segmenter import handlers, service
from tests.integration.helpers import person


async def test_entered_then_exited_are_published_once_each(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    memberships = await js.subscribe(f"segments.membership.{workspace_id}", ordered_consumer=True)
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Oslo", {"trait": "city", "op": "eq", "value": "Oslo"})
    profile_id = await person(sessions, workspace_id, {"city": "Oslo"})

    def changed() -> ProfileChanged:
        return ProfileChanged(workspace_id=workspace_id, profile_id=profile_id, user_id=profile_id, cause_message_id=uuid.uuid4().hex)

    await handlers.on_profile_changes([bus.Received(changed())], sessions, js)
    await handlers.on_profile_changes([bus.Received(changed())], sessions, js)  # no change: nothing published
    async with unit_of_work(sessions) as s:
        await s.execute(update(Profile).where(Profile.profile_id == profile_id).values(traits={"city": "Rome"}))
    await handlers.on_profile_changes([bus.Received(changed())], sessions, js)

    first = orjson.loads((await memberships.next_msg(timeout=5)).data)
    second = orjson.loads((await memberships.next_msg(timeout=5)).data)
    assert (first["segment_id"], first["change"]) == (segment.id, "entered")
    assert (second["segment_id"], second["change"]) == (segment.id, "exited")
    assert first["profile_id"] == second["profile_id"] == profile_id
    async with unit_of_work(sessions) as s:
        assert await service.size(s, segment) == 0
