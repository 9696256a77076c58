"""The segmenter re-evaluates only the changed profile and publishes who entered and exited."""

import uuid

import orjson
from nats.aio.client import Client as NATS
from sqlalchemy import update

from kernel import bus
from kernel.contracts import ProfileChanged
from kernel.db import unit_of_work
from kernel.outbox import Outbox
from services.profiles.models import Profile
from services.segmenter import handlers, models, service
from tests.integration.helpers import person


async def test_entered_then_exited_are_published_once_each(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    memberships = await js.subscribe(f"segments.membership.{workspace_id}", ordered_consumer=True)
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Oslo", {"trait": "city", "op": "eq", "value": "Oslo"})
    profile_id = await person(sessions, workspace_id, {"city": "Oslo"})

    def changed() -> ProfileChanged:
        return ProfileChanged(workspace_id=workspace_id, profile_id=profile_id, user_id=profile_id, cause_message_id=uuid.uuid4().hex)

    await handlers.on_profile_changes([bus.Received(changed())], sessions, js, Outbox(models.outbox))
    await handlers.on_profile_changes([bus.Received(changed())], sessions, js, Outbox(models.outbox))  # no change: nothing published
    async with unit_of_work(sessions) as s:
        await s.execute(update(Profile).where(Profile.profile_id == profile_id).values(traits={"city": "Rome"}))
    await handlers.on_profile_changes([bus.Received(changed())], sessions, js, Outbox(models.outbox))

    first = orjson.loads((await memberships.next_msg(timeout=5)).data)
    second = orjson.loads((await memberships.next_msg(timeout=5)).data)
    assert (first["segment_id"], first["change"]) == (segment.id, "entered")
    assert (second["segment_id"], second["change"]) == (segment.id, "exited")
    assert first["profile_id"] == second["profile_id"] == profile_id
    async with unit_of_work(sessions) as s:
        assert await service.size(s, segment) == 0


async def test_a_membership_change_whose_publish_failed_is_published_by_the_drain(sessions, nc: NATS, workspace_id: str, infra) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import nats

    js = nc.jetstream()
    memberships = await js.subscribe(f"segments.membership.{workspace_id}", ordered_consumer=True)
    async with unit_of_work(sessions) as s:
        segment = await service.create_segment(s, workspace_id, "Paris", {"trait": "city", "op": "eq", "value": "Paris"})
    profile_id = await person(sessions, workspace_id, {"city": "Paris"})
    change = ProfileChanged(workspace_id=workspace_id, profile_id=profile_id, user_id=profile_id, cause_message_id="m1")
    gone = await nats.connect(infra.nats_url)
    await gone.close()  # NATS is unreachable between the commit and the publish
    outbox = Outbox(models.outbox, publish_timeout=1.0)
    await handlers.on_profile_changes([bus.Received(change)], sessions, gone.jetstream(), outbox)
    await handlers.on_profile_changes([bus.Received(change)], sessions, js, outbox)  # the redelivery: no new verdict

    stop = asyncio.Event()
    drain = asyncio.create_task(outbox.drain(sessions, js, stop, interval=0.1))
    try:
        entered = orjson.loads((await memberships.next_msg(timeout=5)).data)
    finally:
        stop.set()
        await drain
    assert (entered["segment_id"], entered["profile_id"], entered["change"]) == (segment.id, profile_id, "entered")


async def test_a_batch_is_evaluated_once_per_profile_for_the_segments_its_changes_may_affect(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    async with unit_of_work(sessions) as s:
        oslo = await service.create_segment(s, workspace_id, "Oslo", {"trait": "city", "op": "eq", "value": "Oslo"})
        rome = await service.create_segment(s, workspace_id, "Rome", {"trait": "city", "op": "eq", "value": "Rome"})
    ada, bo, cy = [await person(sessions, workspace_id, {"city": "Oslo"}) for _ in range(3)]

    def changed(profile_id: str, **kw: object) -> ProfileChanged:
        return ProfileChanged.model_validate(
            {"workspace_id": workspace_id, "profile_id": profile_id, "user_id": profile_id, "cause_message_id": uuid.uuid4().hex, **kw}
        )

    # Ada: two changes, the second one to `city`; Bo: a trait the segments do not read; Cy: an event
    # no segment counts. Only Ada's verdicts are looked at, once, as of now.
    batch = [changed(ada, event_name="Product Viewed"), changed(bo, event_name="identify", changed_traits=["email"]),
             changed(ada, event_name="identify", changed_traits=["city"]), changed(cy, event_name="Product Viewed")]
    async with unit_of_work(sessions) as s:
        out = await service.reevaluate_many(s, batch)
    assert [(m.profile_id, m.segment_id, m.change, m.cause_message_id) for m in out] == [
        (ada, oslo.id, "entered", batch[2].cause_message_id)
    ]
    # Bo and Cy are in Oslo by their traits, but nothing said so: a change their traits' segments could
    # see (here: one of unknown cause, as a re-announcement is) puts them in, each in one statement.
    async with unit_of_work(sessions) as s:
        await s.execute(update(Profile).where(Profile.profile_id.in_([ada, bo])).values(traits={"city": "Rome"}))
    async with unit_of_work(sessions) as s:
        out = await service.reevaluate_many(s, [changed(p) for p in (ada, bo, cy)])
    got = sorted((m.profile_id, m.segment_id, m.change) for m in out)
    assert got == sorted([(ada, oslo.id, "exited"), (ada, rome.id, "entered"), (bo, rome.id, "entered"), (cy, oslo.id, "entered")])
    async with unit_of_work(sessions) as s:
        assert (await service.size(s, oslo), await service.size(s, rome)) == (1, 2)


async def test_a_profile_merged_away_in_a_batch_leaves_its_segments_and_is_not_evaluated(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    async with unit_of_work(sessions) as s:
        oslo = await service.create_segment(s, workspace_id, "Oslo", {"trait": "city", "op": "eq", "value": "Oslo"})
    kept, gone = [await person(sessions, workspace_id, {"city": "Oslo"}) for _ in range(2)]
    async with unit_of_work(sessions) as s:
        entered = await service.reevaluate_many(s, [ProfileChanged(workspace_id=workspace_id, profile_id=p, cause_message_id=p) for p in (kept, gone)])
    assert len(entered) == 2
    merge = ProfileChanged(workspace_id=workspace_id, profile_id=kept, cause_message_id="merge", merged_profile_ids=[gone],
                           event_name="identify")
    earlier = ProfileChanged(workspace_id=workspace_id, profile_id=gone, cause_message_id="earlier", event_name="identify",
                             changed_traits=["city"])
    async with unit_of_work(sessions) as s:
        out = await service.reevaluate_many(s, [earlier, merge])
    assert [(m.profile_id, m.segment_id, m.change, m.cause_message_id) for m in out] == [(gone, oslo.id, "exited", "merge")]
