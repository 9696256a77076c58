"""Segment calls from anyone with a write key: refused cleanly, or stored and readable; never a 5xx."""

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given

from tests.fuzz.conftest import (
    STORED_BOUND_SECONDS,
    Fuzz,
    api_json,
    assert_answered_cleanly,
    assert_still_serving,
    describe,
    eventually,
    fuzzing,
    path_segment,
)
from tests.fuzz.strategies import SdkRequest, UniqueId, encode, sdk_requests

EXAMPLES = 400
TIMELINE_LIMIT = 1000  # the most events one timeline request shows


@dataclass
class Ledger:
    """What the gateway answered, and what it therefore promised to store."""

    answers: Counter[int] = field(default_factory=Counter)
    # messageId as stored -> the request that carried it
    promised: dict[str, str] = field(default_factory=dict)
    # the requests of calls answered 200 without a messageId (ingest names them `herald-<uuid>`)
    unnamed: list[str] = field(default_factory=list)


def with_unique_ids(fuzz: Fuzz, document: Any) -> Any:
    """The document with every `UniqueId` placeholder (top level, or a batched call's) made unique."""

    def fill(call: Any) -> Any:
        if isinstance(call, dict) and isinstance(call.get("messageId"), UniqueId):
            return {**call, "messageId": fuzz.unique(call["messageId"].suffix)}
        return call

    document = fill(document)
    if isinstance(document, dict) and isinstance(document.get("batch"), list):
        document = {**document, "batch": [fill(call) for call in document["batch"]]}
    return document


def wire(request: SdkRequest, document: Any) -> tuple[bytes, dict[str, str]]:
    """The request's body and headers as a client sends them."""
    headers = {"content-type": "application/json"}
    if request.encoding == "raw":
        return request.raw, headers
    body = encode(document, ensure_ascii=request.encoding == "ascii")
    if request.encoding == "gzip":
        return gzip.compress(body), {**headers, "content-encoding": "gzip"}
    if request.encoding == "false-gzip":
        return body, {**headers, "content-encoding": "gzip"}
    return body, headers


def accepted_calls(call: str, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The calls a request answered 200 carried, read back from what was sent."""
    raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
    document = json.loads(raw.decode("utf-8-sig", "surrogatepass"))
    return document["batch"] if call in ("batch", "import") else [document]


def stored_message_id(message_id: str) -> str:
    """A messageId as ingest stores it: U+0000 and lone surrogates become U+FFFD (docs/operations.md, Input limits)."""
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in message_id)


def readable_through_the_api(user_id: str) -> bool:
    """Whether the API can look this id up: not with "/" (a 404 by design)."""
    return "/" not in user_id


async def send(fuzz: Fuzz, request: SdkRequest, ledger: Ledger) -> None:
    """Send one fuzzed request; check the answer, and note what a 200 promised."""
    document = with_unique_ids(fuzz, request.document)
    body, headers = wire(request, document)
    shown = describe("POST", f"/v1/{request.call}", body, headers)
    response = await fuzz.ws.sdk.post(f"/v1/{request.call}", content=body, headers=headers)
    assert_answered_cleanly(response, shown)
    ledger.answers[response.status_code] += 1
    if response.status_code != 200:
        return
    answer = response.json()
    assert answer["success"] is True and set(answer) <= {"success", "rejected"}, f"{response.text!r} for {shown}"
    # A batch keeps its good calls and drops each malformed one; the newest rejections are this request's.
    dropped: set[int] = set()
    if answer.get("rejected"):
        listed = (await api_json(fuzz.ws, "/api/v1/ingest/rejections", limit=answer["rejected"]))["rejections"]
        dropped = {r["index"] for r in listed}
        assert len(dropped) == answer["rejected"], f"{listed} for {shown}"
    for index, call in enumerate(accepted_calls(request.call, body, headers)):
        if index in dropped:
            continue
        message_id = call.get("messageId")
        if isinstance(message_id, str):
            ledger.promised[stored_message_id(message_id)] = shown
        else:
            ledger.unnamed.append(shown)


async def assert_everything_accepted_is_stored_and_shown(fuzz: Fuzz, ledger: Ledger) -> None:
    """Every call answered 200 is stored once (and nothing refused is), and on its user's timeline through the API."""
    expected = len(ledger.promised) + len(ledger.unnamed)

    async def rows() -> list[Any] | None:
        found = await fuzz.query(
            "SELECT message_id, user_id, anonymous_id FROM profiles.events WHERE workspace_id = :ws",
            ws=fuzz.ws.workspace_id,
        )
        return found if len(found) >= expected and set(ledger.promised) <= {r.message_id for r in found} else None

    try:
        stored = await eventually(rows, timeout=STORED_BOUND_SECONDS)
    except AssertionError:
        found = {
            r.message_id
            for r in await fuzz.query(
                "SELECT message_id FROM profiles.events WHERE workspace_id = :ws", ws=fuzz.ws.workspace_id
            )
        }
        missing = {m: ledger.promised[m] for m in set(ledger.promised) - found}
        raise AssertionError(
            f"{len(missing)} calls answered 200 were not stored ({len(found)} of {expected} stored); e.g.\n"
            + "\n".join(f"  {m!r}: {r}" for m, r in list(missing.items())[:5])
        ) from None
    # Calls without a messageId are named by ingest (`herald-<uuid>`); anything else stored was never promised.
    unpromised = {r.message_id for r in stored} - set(ledger.promised)
    assert len(unpromised) == len(ledger.unnamed) and all(m.startswith("herald-") for m in unpromised), (
        f"stored but not answered 200: {sorted(unpromised)[:5]} ({len(ledger.unnamed)} unnamed calls were accepted)"
    )

    # Each user's timeline shows their events (a merged profile shows its merged-in events too).
    timelines: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in stored:
        who, by = (row.user_id, "user_id") if row.user_id is not None else (row.anonymous_id, "anonymous_id")
        if readable_through_the_api(who):
            timelines[(who, by)].add(row.message_id)
    for (who, by), message_ids in timelines.items():
        path = f"/api/v1/users/{path_segment(who)}"
        await api_json(fuzz.ws, path, by=by)  # the profile reads too, whatever its traits hold
        events = (await api_json(fuzz.ws, f"{path}/events", by=by, limit=TIMELINE_LIMIT))["events"]
        shown = {e["message_id"] for e in events}
        if len(message_ids) >= TIMELINE_LIMIT:  # only the newest are shown (many more examples than usual)
            assert len(shown) == TIMELINE_LIMIT, f"{by} {who!r}: {len(shown)} events shown of {len(message_ids)}"
        else:
            assert message_ids <= shown, f"{by} {who!r}: stored, not on the timeline: {sorted(message_ids - shown)[:5]}"


def test_segment_calls_are_refused_cleanly_or_stored_and_shown(fuzz: Fuzz) -> None:
    ledger = Ledger()

    @fuzzing(EXAMPLES)
    @given(request=sdk_requests())
    def one_request(request: SdkRequest) -> None:
        fuzz.run(send(fuzz, request, ledger))

    one_request()
    # The examples reached the services: some calls were stored, some refused (none of it by the rate limiter).
    assert ledger.answers[200] and ledger.answers[400] and not ledger.answers[429], ledger.answers
    fuzz.run(assert_everything_accepted_is_stored_and_shown(fuzz, ledger))
    fuzz.run(assert_still_serving(fuzz))
