"""The profiles handler on real PostgreSQL and NATS: once-only storage, order-independence, merges."""

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import Event
from kernel.db import unit_of_work
from services.profiles import handlers, service

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def event(workspace_id: str, **fields: object) -> Event:
    base = {"workspace_id": workspace_id, "message_id": uuid.uuid4().hex, "type": "track", "event": "Viewed",
            "timestamp": T0, "received_at": T0}
    return Event.model_validate({**base, **fields})


async def profile(sessions: async_sessionmaker[AsyncSession], workspace_id: str, user_id: str, by: str = "user_id") -> dict:
    async with unit_of_work(sessions) as s:
        return await service.describe(s, await service.find_profile(s, workspace_id, user_id, by))


async def test_a_redelivered_event_counts_once_but_is_republished(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    changes = await js.subscribe(f"profiles.changed.{workspace_id}", ordered_consumer=True)
    once = event(workspace_id, user_id="u1", event="Order Completed")
    for _ in range(3):
        await handlers.on_event(once, sessions, js)
    assert (await profile(sessions, workspace_id, "u1"))["computed"]["event_counts"] == {"Order Completed": 1}
    first = orjson.loads((await changes.next_msg(timeout=5)).data)
    assert first["cause_message_id"] == once.message_id and first["user_id"] == "u1"


async def test_traits_converge_whatever_order_identifies_arrive_in(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    newer = event(workspace_id, type="identify", user_id="u2", traits={"plan": "pro"}, timestamp=T0 + timedelta(hours=1))
    older = event(workspace_id, type="identify", user_id="u2", traits={"plan": "free", "city": "Oslo"}, timestamp=T0)
    await handlers.on_event(newer, sessions, js)
    await handlers.on_event(older, sessions, js)
    seen = await profile(sessions, workspace_id, "u2")
    assert seen["traits"] == {"plan": "pro", "city": "Oslo"}
    assert seen["computed"]["first_seen"] == T0 and seen["computed"]["last_seen"] == T0 + timedelta(hours=1)


async def test_identify_merges_an_anonymous_history_into_an_existing_user(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    changes = await js.subscribe(f"profiles.changed.{workspace_id}", ordered_consumer=True)
    await handlers.on_event(event(workspace_id, type="identify", user_id="u3", traits={"name": "Uma"}), sessions, js)
    await handlers.on_event(event(workspace_id, anonymous_id="a3", event="Viewed"), sessions, js)
    await handlers.on_event(event(workspace_id, anonymous_id="a3", event="Viewed"), sessions, js)
    await handlers.on_event(event(workspace_id, type="identify", user_id="u3", anonymous_id="a3"), sessions, js)

    merged = await profile(sessions, workspace_id, "u3")
    assert merged["anonymous_ids"] == ["a3"]
    assert merged["computed"]["event_counts"] == {"identify": 2, "Viewed": 2}
    assert merged["traits"] == {"name": "Uma"}
    assert (await profile(sessions, workspace_id, "a3", by="anonymous_id"))["user_id"] == "u3"
    published = [orjson.loads((await changes.next_msg(timeout=5)).data) for _ in range(4)]
    assert published[-1]["merged_profile_ids"] == [published[1]["profile_id"]]


async def test_alias_joins_two_known_ids_into_one_profile(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await handlers.on_event(event(workspace_id, type="identify", user_id="old@example.com", traits={"a": 1}), sessions, js)
    await handlers.on_event(event(workspace_id, type="identify", user_id="u4", traits={"b": 2}), sessions, js)
    await handlers.on_event(event(workspace_id, type="alias", user_id="u4", previous_id="old@example.com"), sessions, js)
    joined = await profile(sessions, workspace_id, "old@example.com")
    assert joined["user_id"] == "u4" and joined["aliases"] == ["old@example.com"]
    assert joined["traits"] == {"a": 1, "b": 2}
