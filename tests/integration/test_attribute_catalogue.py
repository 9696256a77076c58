"""The per-workspace attribute catalogue on real PostgreSQL: GET /api/v1/attributes lists each custom attribute
with its inferred type, first and last seen and a few examples, written on first sight, on a type change and
on a bounded refresh, not once per event."""

from datetime import datetime, timedelta

from nats.aio.client import Client as NATS

from services.profiles.app import build
from services.profiles.attributes import service as catalogue
from services.profiles.attributes.domain import REFRESH_SECONDS, Remembered
from services.profiles.config import get_settings
from tests.integration.helpers import running
from tests.integration.test_profile_attribute_ops import identify
from tests.integration.test_profile_updates import T0, apply


async def test_the_catalogue_lists_each_attribute_with_its_type_times_and_examples(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js,
                identify(workspace_id, {"plan": "pro", "visits": {"inc": 1}, "vip": True, "renewal": "2027-01-31",
                                        "address": {"city": "Berlin"}, "tags": {"add": ["a"]}}, 2),
                identify(workspace_id, {"plan": "team", "visits": {"inc": 1}}, 5, user_id="bo"),
                identify(workspace_id, {"plan": "free", "gone": None}, 1, user_id="cy"))
    async with running(build, get_settings, workspace_id) as client:
        r = await client.get("/api/v1/attributes")
        assert r.status_code == 200, r.text
        listed = {a["name"]: a for a in r.json()["attributes"]}
        assert [a["name"] for a in r.json()["attributes"]] == sorted(listed)  # by name
        assert {name: a["type"] for name, a in listed.items()} == {
            "plan": "string", "visits": "number", "vip": "boolean", "renewal": "date", "address": "object", "tags": "array",
        }  # a null shows no attribute
        plan = listed["plan"]
        assert datetime.fromisoformat(plan["first_seen"]) == T0 + timedelta(hours=1)
        assert datetime.fromisoformat(plan["last_seen"]) == T0 + timedelta(hours=5)
        assert plan["examples"] == ["team"]  # one batch: the newest value is its example
        assert listed["address"]["examples"] == [{"city": "Berlin"}]

        page = (await client.get("/api/v1/attributes", params={"limit": 4})).json()
        rest = (await client.get("/api/v1/attributes", params={"limit": 4, "cursor": page["next_cursor"]})).json()
        assert [a["name"] for a in page["attributes"] + rest["attributes"]] == sorted(listed)
        assert rest["next_cursor"] is None
        bad = await client.get("/api/v1/attributes", params={"cursor": "nonsense"})
        assert bad.status_code == 422 and "cursor" in bad.text


async def test_a_new_type_and_new_examples_are_written_without_a_write_per_event(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, identify(workspace_id, {"level": "gold"}, 1))
    await apply(sessions, js, identify(workspace_id, {"level": "silver"}, 2, user_id="bo"))  # same type, lately written
    await apply(sessions, js, identify(workspace_id, {"level": 3}, 3, user_id="cy"))  # a type change: written
    async with running(build, get_settings, workspace_id) as client:
        [level] = (await client.get("/api/v1/attributes")).json()["attributes"]
    assert level["type"] == "number"
    assert level["examples"] == ["gold", 3]  # "silver" came while the attribute was fresh: not written


def test_a_replica_writes_an_attribute_on_first_sight_on_a_type_change_and_then_on_refresh() -> None:
    seen = Remembered()
    assert seen.due("ws", "plan", "string", 0.0)
    assert not seen.due("ws", "plan", "string", 1.0)
    assert seen.due("ws", "plan", "number", 2.0)
    assert not seen.due("ws", "plan", "number", 2.0 + REFRESH_SECONDS - 1)
    assert seen.due("ws", "plan", "number", 2.0 + REFRESH_SECONDS)
    assert seen.due("other", "plan", "number", 3.0)
    seen.forget("ws", ["plan"])
    assert seen.due("ws", "plan", "number", 4.0)
    assert catalogue.REMEMBERED is not seen
