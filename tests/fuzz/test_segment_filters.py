"""Segment filters from anyone with an API key: refused cleanly, or stored, readable and evaluated; never a 5xx."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    STORED_BOUND_SECONDS,
    Fuzz,
    api_json,
    assert_answered_cleanly,
    assert_still_serving,
    describe,
    eventually,
    fuzzing,
)
from tests.fuzz.strategies import encode, nested, segments

EXAMPLES = 250
# Profiles for the filters to meet: every JSON type under the keys the filters name, and a few events.
SEED_TRAITS: list[dict[str, Any]] = [
    {
        "plan": "pro",
        "price": 150,
        "city": "Berlin",
        "items": ["a", "b"],
        "tags": [],
        "email": "ada@example.com",
        "nested": {"a": {"b": 1}},
        "created_at": "2024-01-01T00:00:00Z",
        "first_name": "Ada",
    },
    {"plan": 3, "price": "150", "city": None, "items": "not a list", "nested": [1, 2], "name": 9007199254740993},
    {"plan": True, "price": 1.5e300, "tags": ["x"] * 50, "first_name": "Ünïcødé \x00 nul", "nested": nested(20)},
    {"plan": {"tier": "pro"}, "price": -0.0, "city": "", "items": [None, 1, "1", [1]], "created_at": 1704067200},
    {},
]
SEED_PROPERTIES: list[dict[str, Any]] = [
    {"price": 150, "name": "Red Shoes", "items": [{"sku": "a"}]},
    {"price": "cheap", "name": None, "tags": ["%_\\"]},
    {"price": 2**60, "nested": {"k": [1, 2, 3]}},
]


async def seed(fuzz: Fuzz) -> None:
    """Identify the seed users and send their events; wait until all of it is stored."""
    message_ids = []
    for n, traits in enumerate(SEED_TRAITS):
        message_ids.append(fuzz.unique("seed"))
        response = await fuzz.ws.identify(f"seed-{n}", traits, messageId=message_ids[-1])
        assert response.status_code == 200, response.text
        for event, properties in zip(
            ["Product Added", "Order Completed", "Product Added"], SEED_PROPERTIES, strict=True
        ):
            message_ids.append(fuzz.unique("seed"))
            response = await fuzz.ws.track(f"seed-{n}", event, properties=properties, messageId=message_ids[-1])
            assert response.status_code == 200, response.text
    stored = "SELECT count(*) FROM profiles.events WHERE workspace_id = :ws AND message_id = ANY(:ids)"

    async def all_stored() -> bool:
        return (await fuzz.query(stored, ws=fuzz.ws.workspace_id, ids=message_ids))[0][0] == len(message_ids)

    await eventually(all_stored, timeout=STORED_BOUND_SECONDS)


async def create(fuzz: Fuzz, body: Any, ensure_ascii: bool, created: dict[str, dict[str, Any]]) -> None:
    """POST one fuzzed segment; a 201 must read back as it was answered."""
    content = encode(body, ensure_ascii)
    shown = describe("POST", "/api/v1/segments", content)
    response = await fuzz.ws.api.post("/api/v1/segments", content=content, headers={"content-type": "application/json"})
    assert_answered_cleanly(response, shown)
    unknown = set(body) - {"name", "filter"} if isinstance(body, dict) else set()
    assert not (unknown and response.status_code < 400), f"unknown fields {sorted(unknown)} accepted: {shown}"
    if response.status_code != 201:
        return
    segment = response.json()
    assert (segment["name"], segment["filter"]) == (body["name"], body["filter"]), f"{segment!r} for {shown}"
    assert 0 <= segment["size"] <= len(SEED_TRAITS), f"{segment!r} for {shown}"
    read = await fuzz.ws.api.get(f"/api/v1/segments/{segment['id']}")
    assert read.status_code == 200, f"GET: HTTP {read.status_code} {read.text[:300]!r} after {shown}"
    assert read.json() == segment, f"GET {read.json()!r} != {segment!r} after {shown}"
    created[segment["id"]] = segment


async def assert_segments_evaluated(fuzz: Fuzz, created: dict[str, dict[str, Any]]) -> None:
    """Every segment is listed, and a changed profile is re-evaluated against all of them (they run in one query)."""
    listed: dict[str, Any] = {}
    page = await api_json(fuzz.ws, "/api/v1/segments", limit=500)
    while True:  # every page of the list
        listed |= {s["id"]: s for s in page["segments"]}
        if page["next_cursor"] is None:
            break
        page = await api_json(fuzz.ws, "/api/v1/segments", limit=500, cursor=page["next_cursor"])
    assert created.keys() <= listed.keys(), f"created but not listed: {sorted(created.keys() - listed.keys())}"
    assert all((listed[i]["name"], listed[i]["filter"]) == (s["name"], s["filter"]) for i, s in created.items())

    probe = {"name": "probe", "filter": {"trait": "fuzz_probe", "op": "eq", "value": "yes"}}
    response = await fuzz.ws.api.post("/api/v1/segments", json=probe)
    assert response.status_code == 201, response.text
    probe_id = response.json()["id"]
    response = await fuzz.ws.identify("probe-user", {"fuzz_probe": "yes"}, messageId=fuzz.unique("probe"))
    assert response.status_code == 200, response.text
    member = "SELECT 1 FROM segmenter.memberships WHERE workspace_id = :ws AND segment_id = :segment"
    await eventually(
        lambda: fuzz.query(member, ws=fuzz.ws.workspace_id, segment=probe_id), timeout=STORED_BOUND_SECONDS
    )


def test_segment_filters_are_refused_cleanly_or_stored_and_evaluated(fuzz: Fuzz) -> None:
    fuzz.run(seed(fuzz))
    created: dict[str, dict[str, Any]] = {}

    @fuzzing(EXAMPLES)
    @given(body=segments(), ensure_ascii=st.booleans())
    def one_segment(body: Any, ensure_ascii: bool) -> None:
        fuzz.run(create(fuzz, body, ensure_ascii, created))

    one_segment()
    assert created, "no fuzzed segment was accepted: the strategy no longer reaches the evaluation"
    fuzz.run(assert_segments_evaluated(fuzz, created))
    fuzz.run(assert_still_serving(fuzz))
