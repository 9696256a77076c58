"""The profiles handler on real PostgreSQL and NATS: once-only storage, order-independence, merges."""

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import Event
from kernel.db import unit_of_work
from services.profiles import handlers, service

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def event(workspace_id: str, **fields: object) -> Event:
    base = {"workspace_id": workspace_id, "message_id": uuid.uuid4().hex, "type": "track", "event": "Viewed",
            "timestamp": T0, "received_at": T0}
    return Event.model_validate({**base, **fields})


async def apply(sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, *events: Event) -> None:
    """Events through the consumer's handler, all in one batch."""
    await handlers.on_events([bus.Received(e) for e in events], sessions, js)


async def profile(sessions: async_sessionmaker[AsyncSession], workspace_id: str, user_id: str, by: str = "user_id") -> dict:
    async with unit_of_work(sessions) as s:
        return await service.describe(s, await service.find_profile(s, workspace_id, user_id, by))


async def test_a_redelivered_event_counts_once_but_is_republished(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    changes = await js.subscribe(f"profiles.changed.{workspace_id}", ordered_consumer=True)
    once = event(workspace_id, user_id="u1", event="Order Completed")
    for _ in range(3):
        await apply(sessions, js, once)
    assert (await profile(sessions, workspace_id, "u1"))["computed"]["event_counts"] == {"Order Completed": 1}
    first = orjson.loads((await changes.next_msg(timeout=5)).data)
    assert first["cause_message_id"] == once.message_id and first["user_id"] == "u1"


async def test_traits_converge_whatever_order_identifies_arrive_in(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    newer = event(workspace_id, type="identify", user_id="u2", traits={"plan": "pro"}, timestamp=T0 + timedelta(hours=1))
    older = event(workspace_id, type="identify", user_id="u2", traits={"plan": "free", "city": "Oslo"}, timestamp=T0)
    await apply(sessions, js, newer)
    await apply(sessions, js, older)
    seen = await profile(sessions, workspace_id, "u2")
    assert seen["traits"] == {"plan": "pro", "city": "Oslo"}
    assert seen["computed"]["first_seen"] == T0 and seen["computed"]["last_seen"] == T0 + timedelta(hours=1)


async def test_identify_merges_an_anonymous_history_into_an_existing_user(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    changes = await js.subscribe(f"profiles.changed.{workspace_id}", ordered_consumer=True)
    await apply(sessions, js, event(workspace_id, type="identify", user_id="u3", traits={"name": "Uma"}))
    await apply(sessions, js, event(workspace_id, anonymous_id="a3", event="Viewed"))
    await apply(sessions, js, event(workspace_id, anonymous_id="a3", event="Viewed"))
    await apply(sessions, js, event(workspace_id, type="identify", user_id="u3", anonymous_id="a3"))

    merged = await profile(sessions, workspace_id, "u3")
    assert merged["anonymous_ids"] == ["a3"]
    assert merged["computed"]["event_counts"] == {"identify": 2, "Viewed": 2}
    assert merged["traits"] == {"name": "Uma"}
    assert (await profile(sessions, workspace_id, "a3", by="anonymous_id"))["user_id"] == "u3"
    published = [orjson.loads((await changes.next_msg(timeout=5)).data) for _ in range(4)]
    assert published[-1]["merged_profile_ids"] == [published[1]["profile_id"]]


async def test_a_redelivered_merge_announces_the_merge_again(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    # The first publish of a merge's change can be lost (the process dies after the commit); the
    # redelivery must say again which profile was merged away, or its memberships stay forever.
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, type="identify", user_id="u9", traits={"name": "Ivo"}))
    await apply(sessions, js, event(workspace_id, anonymous_id="a9", event="Viewed"))
    anonymous = (await profile(sessions, workspace_id, "a9", by="anonymous_id"))["profile_id"]
    merging = event(workspace_id, type="identify", user_id="u9", anonymous_id="a9")
    async with unit_of_work(sessions) as s:
        [first] = await service.apply_events(s, [merging])
    async with unit_of_work(sessions) as s:
        [again] = await service.apply_events(s, [merging])
    assert first.changed.merged_profile_ids == [anonymous]
    assert first.changed.event_name == "identify"
    # The re-announcement does not claim to know what changed: consumers re-check everything it could touch.
    assert again.duplicate and again.changed == first.changed.model_copy(update={"changed_traits": [], "changed_parts": None, "event_name": None})


async def test_alias_joins_two_known_ids_into_one_profile(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, type="identify", user_id="old@example.com", traits={"a": 1}))
    await apply(sessions, js, event(workspace_id, type="identify", user_id="u4", traits={"b": 2}))
    await apply(sessions, js, event(workspace_id, type="alias", user_id="u4", previous_id="old@example.com"))
    joined = await profile(sessions, workspace_id, "old@example.com")
    assert joined["user_id"] == "u4" and joined["aliases"] == ["old@example.com"]
    assert joined["traits"] == {"a": 1, "b": 2}


def history(workspace_id: str) -> list[Event]:
    """A day in two people's lives: anonymous browsing, a login, a redelivery, an alias, a late identify."""
    browse = event(workspace_id, anonymous_id="a5", event="Viewed")
    return [
        event(workspace_id, type="identify", user_id="u5", traits={"name": "Ann"}, timestamp=T0 + timedelta(hours=2)),
        browse,
        browse,  # the same messageId twice: stored once
        event(workspace_id, anonymous_id="a5", event="Viewed"),
        event(workspace_id, type="identify", user_id="u5", anonymous_id="a5", traits={"plan": "pro"}),
        event(workspace_id, user_id="u6", event="Order Completed", timestamp=T0 - timedelta(days=1)),
        event(workspace_id, type="alias", user_id="u6", previous_id="u5"),
        event(workspace_id, anonymous_id="a5", event="Viewed"),
        event(workspace_id, type="identify", user_id="u6", traits={"name": "Old"}, timestamp=T0),
    ]


def _comparable(p: dict) -> dict:
    return {k: v for k, v in p.items() if k != "profile_id"}


async def test_one_batch_ends_where_one_event_at_a_time_does(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    single, batched, other = workspace_id, f"{workspace_id}b", f"{workspace_id}c"
    for e in history(single):
        await apply(sessions, js, e)
    changes = await js.subscribe(f"profiles.changed.{batched}", ordered_consumer=True)
    # One batch, two workspaces interleaved: the lock and write paths must keep them apart.
    mixed = [e for pair in zip(history(batched), history(other), strict=True) for e in pair]
    await apply(sessions, js, *mixed)

    for ws in (batched, other):
        for who, by in (("u5", "user_id"), ("u6", "user_id"), ("a5", "anonymous_id")):
            assert _comparable(await profile(sessions, ws, who, by)) == _comparable(await profile(sessions, single, who, by))
    merged = await profile(sessions, batched, "u6")
    assert merged["aliases"] == ["u5"] and merged["anonymous_ids"] == ["a5"]
    assert merged["traits"] == {"name": "Ann", "plan": "pro"}  # the late identify lost to the newer name
    assert merged["computed"]["event_counts"] == {"identify": 3, "Viewed": 3, "Order Completed": 1, "alias": 1}
    published = [orjson.loads((await changes.next_msg(timeout=5)).data) for _ in range(len(history(batched)) - 1)]
    assert published[-1]["profile_id"] == merged["profile_id"]
    assert len({p["cause_message_id"] for p in published}) == len(published)  # the duplicate is de-duplicated on the bus
