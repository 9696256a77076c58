"""Custom attributes with Braze's operations on real PostgreSQL and NATS: inc / add / remove, nested objects,
dates, null removing, order-independence, redelivery, a cap, and wrong-typed values listed as rejections."""

import random
from datetime import timedelta
from typing import Any

from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from kernel.contracts import Event
from services.ingest.app import build as build_ingest
from services.ingest.config import get_settings as ingest_settings
from services.profiles.attributes.domain import ARRAY_CAP, MAX_OPS
from tests.conftest import eventually
from tests.integration.helpers import running
from tests.integration.test_profile_updates import T0, apply, event, profile


def identify(ws: str, traits: dict[str, Any], hours: float, user_id: str = "ada", **fields: Any) -> Event:
    return event(ws, type="identify", user_id=user_id, traits=traits, timestamp=T0 + timedelta(hours=hours), **fields)


def history(ws: str) -> list[Event]:
    """A week of a shopper's traits: counters, a set of tags, an object, a date, a removal, a late reset."""
    return [
        identify(ws, {"visits": {"inc": 1}, "tags": {"add": ["new", "shoes"]}}, 1),
        identify(ws, {"visits": {"inc": 2}, "tags": {"add": ["shoes", "bags"]}}, 2),
        identify(ws, {"tags": {"remove": ["new"]}, "address": {"city": "Berlin", "zip": "10115"}}, 3),
        identify(ws, {"visits": 10, "renewal": "2027-01-31T00:00:00Z"}, 0.5),  # a set older than every inc
        identify(ws, {"tags": {"add": ["new"]}}, 0.75),  # older than the remove: removed after all
        identify(ws, {"visits": {"inc": 5}, "nickname": "ada"}, 4),
        identify(ws, {"nickname": None, "score": 2.5}, 5),  # null removes
        identify(ws, {"nickname": "late"}, 4.5),  # older than its removal: stays removed
        identify(ws, {"score": {"inc": -1}}, 6),
    ]


EXPECTED = {
    "visits": 18,  # 10, then 1 + 2 + 5 on top
    "tags": ["shoes", "bags"],
    "address": {"city": "Berlin", "zip": "10115"},
    "renewal": "2027-01-31T00:00:00Z",
    "score": 1.5,
}


async def test_operations_apply_in_event_time_order_whatever_the_arrival_order(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    in_order, shuffled, batched = workspace_id, f"{workspace_id}s", f"{workspace_id}b"
    for e in sorted(history(in_order), key=lambda e: e.timestamp):
        await apply(sessions, js, e)
    events = history(shuffled)
    random.Random(12).shuffle(events)
    for e in events:
        await apply(sessions, js, e)
    await apply(sessions, js, *reversed(history(batched)))
    for ws in (in_order, shuffled, batched):
        traits = (await profile(sessions, ws, "ada"))["traits"]
        assert {**traits, "tags": sorted(traits["tags"])} == {**EXPECTED, "tags": sorted(EXPECTED["tags"])}, ws
    assert (await profile(sessions, in_order, "ada"))["traits"]["tags"] == ["shoes", "bags"]


async def test_a_redelivered_inc_counts_once(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    once = identify(workspace_id, {"logins": {"inc": 1}}, 1)
    for _ in range(3):
        await apply(sessions, js, once)  # JetStream redelivers: the message id was applied already
    await apply(sessions, js, once, identify(workspace_id, {"logins": {"inc": 1}}, 2), once)  # and within a batch
    assert (await profile(sessions, workspace_id, "ada"))["traits"]["logins"] == 2


async def test_many_operations_fold_into_the_base_and_a_set_older_than_them_is_late(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, *(identify(workspace_id, {"n": {"inc": 1}}, i + 1) for i in range(MAX_OPS + 4)))
    await apply(sessions, js, identify(workspace_id, {"n": 100}, MAX_OPS + 10))  # newer than all: a reset
    await apply(sessions, js, identify(workspace_id, {"n": {"inc": 1}}, MAX_OPS + 11))
    assert (await profile(sessions, workspace_id, "ada"))["traits"]["n"] == 101


async def test_a_merge_keeps_both_profiles_operations(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, identify(workspace_id, {"points": {"inc": 3}, "tags": {"add": ["a"]}}, 1, user_id="bo"))
    await apply(sessions, js, event(workspace_id, type="identify", anonymous_id="anon-bo",
                                    traits={"points": {"inc": 4}, "tags": {"add": ["b"]}}, timestamp=T0 + timedelta(hours=2)))
    await apply(sessions, js, identify(workspace_id, {}, 3, user_id="bo", anonymous_id="anon-bo"))
    traits = (await profile(sessions, workspace_id, "bo"))["traits"]
    assert traits["points"] == 7 and traits["tags"] == ["a", "b"]


def _ignored(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_profiles_ignored_values_total", {"reason": reason}) or 0.0


async def test_wrong_typed_operations_and_bad_values_are_ignored_counted_and_listed(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    before = {r: _ignored(r) for r in ("wrong_type_operation", "array_truncated", "invalid_time_zone")}
    await apply(sessions, js, identify(workspace_id, {"plan": "pro", "visits": 3}, 1))
    bad = identify(workspace_id, {
        "plan": {"inc": 1},  # inc on a text trait
        "visits": {"add": ["x"]},  # add on a number
        "tags": {"add": "vip"},  # add of a non-list
        "level": {"inc": "2"},  # inc of a non-number
        "history": list(range(ARRAY_CAP + 5)),  # over the cap: cut
        "city_name": "Oslo",
    }, 2, context={"timezone": "Mars/Olympus"})
    await apply(sessions, js, bad)
    await apply(sessions, js, bad)  # redelivered: counted and listed once
    traits = (await profile(sessions, workspace_id, "ada"))["traits"]
    assert traits == {"plan": "pro", "visits": 3, "history": list(range(ARRAY_CAP)), "city_name": "Oslo"}
    assert {r: _ignored(r) - n for r, n in before.items()} == {
        "wrong_type_operation": 4, "array_truncated": 1, "invalid_time_zone": 1,
    }

    async with running(build_ingest, ingest_settings, workspace_id) as ingest:
        async def listed() -> list[dict[str, Any]] | None:
            found = (await ingest.get("/api/v1/ingest/rejections")).json()["rejections"]
            return found if len(found) >= 3 else None

        rejections = await eventually(listed)
    assert len(rejections) == 3
    by_reason = {r["reason"]: r for r in rejections}
    assert set(by_reason) == {"wrong_type_operation", "array_truncated", "invalid_time_zone"}
    assert all(r["message_id"] == bad.message_id and r["route"] == "profiles" for r in rejections)
    wrong = by_reason["wrong_type_operation"]["errors"]
    assert sorted(tuple(e["loc"]) for e in wrong) == [("traits", "level"), ("traits", "plan"), ("traits", "tags"),
                                                      ("traits", "visits")]
    assert any("inc on a string trait" in e["msg"] for e in wrong)
    assert by_reason["array_truncated"]["errors"][0]["loc"] == ["traits", "history"]
