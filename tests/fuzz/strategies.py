"""Hypothesis strategies for what anyone holding a write key or an API key can send: hostile, but plausible.

Each strategy mixes what a real client sends (most of the time) with what a broken or malicious one
does: NUL and lone surrogates, numbers past every reader's range, timestamps at the ends of the
calendar, nesting past the limits, wrong types where an id or an object belongs, and raw bodies that
are not JSON at all. The values come from the limits the docs promise (docs/operations.md, "Input
limits"), so every branch meets the edge of a rule rather than the middle of one.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from hypothesis import strategies as st

from kernel.contracts import CONDITION_OPS

MAX_SAFE_INTEGER = 2**53 - 1
CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
# The ids and names the fuzzed calls share, so that identities merge, aliases join and filters match stored data.
USER_IDS = ("ada", "bob", "42", "user with spaces", "Ünïcødé")
ANONYMOUS_IDS = ("anon-1", "anon-2", "device-ada")
EVENT_NAMES = ("Product Added", "Order Completed", "Signed Up", "Fuzz Trigger")
KEYS = ("name", "price", "email", "city", "plan", "items", "tags", "nested", "first_name", "created_at")


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], odds: int = 12) -> st.SearchStrategy[Any]:
    """`usual`, and about one time in `odds` `odd`: most requests should reach the rules behind the first check."""
    # Hypothesis favours the ends of a range: the odd one is in the middle.
    return st.integers(0, odds - 1).flatmap(lambda roll: odd if roll == odds // 2 else usual)


def chance(odds: int) -> st.SearchStrategy[bool]:
    """True about one time in `odds`."""
    return mostly(st.just(False), st.just(True), odds)


@dataclass(frozen=True)
class UniqueId:
    """A placeholder for a messageId the test makes unique per request (`suffix` is fuzzed)."""

    suffix: str


# --- scalars ---------------------------------------------------------------------------------

NASTY_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ufffd",
    "\ufeffbom",
    "\u202eright-to-left",
    "e\u0301",
    "😀",
    "\u2028\u2029",
    "\r\n",
    "'; DROP TABLE events; --",
    "%s%n%x",
    "{{ 7 * 7 }}",
    "../../etc/passwd",
    "null",
    "NaN",
    "1e400",
    "9007199254740993",
    "2024-01-01T00:00:00Z",
)
# Lone surrogates are no Unicode text, and have no UTF-8 encoding: whatever carries one is refused, so they are rare.
SURROGATES = st.sampled_from(["\ud800", "x\udfffy", "\udbff\udc00\udc00"])
# Characters that break parsers, encoders, URL routing or PostgreSQL, among harmless ones.
ODD_CHARACTERS = st.sampled_from(
    [
        "a",
        "b",
        "Z",
        "0",
        " ",
        "é",
        "ß",
        "😀",
        "\x00",
        "\x1f",
        "\x7f",
        "\n",
        "\\",
        '"',
        "'",
        "%",
        "/",
        ".",
        "?",
        "#",
        "\u200b",
        "\u0085",
    ]
)


def texts(max_size: int = 24, min_size: int = 0) -> st.SearchStrategy[str]:
    """Strings: printable ASCII, any Unicode (but lone surrogates), odd characters, or a known nasty string."""
    return st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=min_size, max_size=max_size),
        st.text(min_size=min_size, max_size=max_size),
        st.text(ODD_CHARACTERS, min_size=min_size, max_size=max_size),
        st.sampled_from([s for s in NASTY_STRINGS if len(s) >= min_size]),
    )


INTEGERS = st.one_of(
    st.integers(-1000, 1000),
    st.integers(-(2**70), 2**70),
    st.sampled_from(
        [
            MAX_SAFE_INTEGER,
            MAX_SAFE_INTEGER + 1,
            -MAX_SAFE_INTEGER,
            -MAX_SAFE_INTEGER - 2,
            2**63 - 1,
            2**63,
            2**64,
            -(2**63) - 1,
            10**30,
            10**308,
        ]
    ),
)
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, -0.0, 1e20, 1.7976931348623157e308, 5e-324, 9007199254740993.0, 1e-7]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, texts())


def nested(depth: int, leaf: Any = "leaf") -> Any:
    """`leaf` inside `depth` levels of alternating arrays and objects (the outermost counting as 1)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(texts(8), children, max_size=4)),
    max_leaves=10,
)
DEEP_VALUES = st.integers(28, 36).map(nested)  # around the 32-level limit
PADDING = st.integers(30_000, 34_000).map(lambda n: "x" * n)  # around the 32 KB limit of a call
WRONG_OBJECTS = st.one_of(st.none(), st.booleans(), INTEGERS, texts(8), st.lists(SCALARS, max_size=3))


def documents() -> st.SearchStrategy[Any]:
    """An object for `properties`, `traits` or `context`: usually one, with hostile values; sometimes not an object."""
    keys = st.one_of(st.sampled_from(KEYS), texts(12))
    values = mostly(JSON_VALUES, st.one_of(DEEP_VALUES, PADDING, SURROGATES), odds=30)
    return mostly(st.dictionaries(keys, values, max_size=5), WRONG_OBJECTS, odds=25)


def ids(pool: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """A userId, anonymousId, previousId or groupId: from a small shared pool, odd text or a number; now and then a wrong type."""
    return mostly(
        st.one_of(st.sampled_from(pool), st.sampled_from(pool), st.sampled_from(pool), texts(24), INTEGERS, FLOATS),
        st.one_of(
            st.text(min_size=505, max_size=520, alphabet="ab"),  # around the 512-character limit
            st.booleans(),
            st.lists(SCALARS, max_size=2),
            st.dictionaries(texts(4), SCALARS, max_size=2),
            SURROGATES,
        ),
        odds=25,
    )


OFFSETS = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-14)), timezone(timedelta(hours=5, minutes=30))]
)


def datetimes(low: datetime = datetime.min, high: datetime = datetime.max) -> st.SearchStrategy[datetime]:
    """Times between `low` and `high`, naive (taken as UTC) or with an offset up to ±14:00."""
    return st.one_of(st.datetimes(low, high), st.datetimes(low, high, timezones=OFFSETS))


def timestamps() -> st.SearchStrategy[Any]:
    """A `timestamp`, `originalTimestamp` or `sentAt`: plausible times, the calendar's ends, garbage."""
    recent = datetimes(datetime(1999, 6, 1), datetime(2100, 6, 1))
    anywhen = datetimes()  # years 1 to 9999
    odd = st.one_of(
        anywhen.map(datetime.isoformat),
        st.sampled_from(
            [
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-14:00",
                "1970-01-01T00:00:00Z",
                "2099-12-31T23:59:59.999999Z",
                "2100-01-01T00:00:00Z",
                "2024-02-30T00:00:00Z",
                "2024-06-01T23:59:60Z",
                "2024-06-01T12:00:00.123456789Z",
                "2024-06-01",
                "now",
                "",
            ]
        ),
        INTEGERS,
        FLOATS,
        st.booleans(),
    )
    return mostly(st.one_of(recent.map(datetime.isoformat), st.none()), odd, odds=12)


def message_ids() -> st.SearchStrategy[Any]:
    """Usually a unique id (with a fuzzed suffix), or none; now and then one that must be refused."""
    return mostly(
        st.one_of(texts(16).map(UniqueId), texts(16).map(UniqueId), texts(16).map(UniqueId), st.none()),
        st.one_of(st.sampled_from(["", "m" * 257]), INTEGERS, st.booleans(), st.lists(SCALARS, max_size=2)),
        odds=25,
    )


def names() -> st.SearchStrategy[Any]:
    """An `event` or `name`: a known event or odd text; now and then text around the 512-character limit, or a wrong type."""
    return mostly(
        st.one_of(st.sampled_from(EVENT_NAMES), st.sampled_from(EVENT_NAMES), texts(24)),
        st.one_of(
            st.text(min_size=505, max_size=520, alphabet="e"), INTEGERS, st.none(), st.lists(SCALARS, max_size=2)
        ),
        odds=25,
    )


# --- Segment calls ---------------------------------------------------------------------------

DOCUMENTS = documents()
TIMESTAMPS = timestamps()
# Each field of a call, with what it may hold.
CALL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "userId": ids(USER_IDS),
    "anonymousId": ids(ANONYMOUS_IDS),
    "messageId": message_ids(),
    "event": names(),
    "name": names(),
    "properties": documents(),
    "traits": documents(),
    "context": st.one_of(
        documents(), st.fixed_dictionaries({"traits": documents(), "ip": texts(8), "library": documents()})
    ),
    "integrations": documents(),
    "timestamp": timestamps(),
    "originalTimestamp": timestamps(),
    "sentAt": timestamps(),
    "previousId": ids(USER_IDS + ANONYMOUS_IDS),
    "groupId": ids(("acme", "initech")),
    "type": st.sampled_from([*CALL_TYPES, "bogus"]),
    "writeKey": texts(8),
    "extra": JSON_VALUES,
}
# What each call type must carry (left out now and then), and what it normally carries; other fields appear less often.
REQUIRED_FIELDS = {"track": ("event",), "alias": ("userId", "previousId"), "group": ("groupId",)}
USUAL_FIELDS = {
    "identify": ("userId", "anonymousId", "messageId", "traits", "context", "timestamp"),
    "track": ("userId", "anonymousId", "messageId", "event", "properties", "context", "timestamp"),
    "page": ("userId", "anonymousId", "messageId", "name", "properties", "context"),
    "screen": ("userId", "anonymousId", "messageId", "name", "properties", "context"),
    "group": ("userId", "anonymousId", "messageId", "groupId", "traits", "context"),
    "alias": ("userId", "previousId", "messageId", "context", "timestamp"),
}


@st.composite
def calls(draw: st.DrawFn, call_type: str) -> dict[str, Any]:
    """One Segment call of `call_type`: its usual fields mostly present, any other field now and then."""
    body: dict[str, Any] = {}
    for field, values in CALL_FIELDS.items():
        # A required field is left out one time in 25, a usual one one time in three; any other is there one time in 12.
        if field in REQUIRED_FIELDS.get(call_type, ()):
            present = not draw(chance(25))
        elif field in USUAL_FIELDS[call_type]:
            present = not draw(chance(3))
        else:
            present = draw(chance(12))
        if present:
            body[field] = draw(values)
    return body


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    """A `/v1/batch` body: calls with their `type`, and the batch's shared `context`, `integrations` and `sentAt`."""
    items: list[Any] = []
    for _ in range(draw(mostly(st.integers(1, 5), st.just(0), odds=25))):
        call_type = draw(st.sampled_from(CALL_TYPES))
        item = draw(mostly(calls(call_type), WRONG_OBJECTS, odds=40))
        if isinstance(item, dict) and not draw(chance(40)):
            item["type"] = call_type
        items.append(item)
    body: dict[str, Any] = {"batch": draw(mostly(st.just(items), WRONG_OBJECTS, odds=25))}
    for field, values in (("context", DOCUMENTS), ("integrations", DOCUMENTS), ("sentAt", TIMESTAMPS)):
        if draw(st.booleans()):
            body[field] = draw(values)
    return body


@dataclass(frozen=True)
class SdkRequest:
    """One request to `/v1/<call>`: the JSON document (before its messageIds are made unique) and how it is sent."""

    call: str
    document: Any
    encoding: str  # "json", "ascii" (every non-ASCII character escaped), "gzip", "false-gzip", "raw"
    raw: bytes = b""


# Bodies no JSON encoder writes: what a broken client, a proxy or an attacker sends.
RAW_BODIES = (
    b"",
    b"null",
    b"[]",
    b'"track"',
    b"{",
    b'{"userId": "ada", "event": "e"',
    b'{"userId": "ada", "event": "e", "properties": {"x": NaN}}',
    b'{"userId": "ada", "event": "e", "properties": {"x": Infinity}}',
    b'{"userId": "ada", "event": "e", "properties": {"x": 1e400}}',
    b'{"userId": "ada", "event": "e", "properties": {"x": 123456789012345678901234567890}}',
    b'{"userId": "ada", "event": "e", "properties": {"x": "\\ud800"}}',
    b'{"userId": "ada", "event": "e", "properties": {"\\u0000": 1, "\\ufffd": 2}}',
    b'{"userId": "ada", "userId": ["dup"], "event": "e"}',
    b'\xef\xbb\xbf{"userId": "ada", "event": "e"}',
    b'{"userId": "\xff\xfe", "event": "e"}',
    b'{"userId": "ada", "event": "e", "properties": ' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"batch": [' + b",".join([b'{"type": "track", "userId": "ada", "event": "e"}'] * 3000) + b"]}",
)


@st.composite
def sdk_requests(draw: st.DrawFn) -> SdkRequest:
    """A request to one of the Segment routes, usually a JSON object for that call, sometimes raw bytes."""
    call = draw(st.sampled_from([*CALL_TYPES, "batch", "import"]))
    document: Any = draw(batches()) if call in ("batch", "import") else draw(calls(call))
    encoding = draw(
        mostly(st.sampled_from(["json", "json", "ascii", "gzip"]), st.sampled_from(["false-gzip", "raw"]), odds=15)
    )
    if encoding == "raw":
        return SdkRequest(call, None, "raw", draw(st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64))))
    return SdkRequest(call, document, encoding)


def encode(document: Any, ensure_ascii: bool = False) -> bytes:
    """JSON as a client writes it: lone surrogates reach the wire as `\\ud800` escapes, or as the bytes a lax encoder makes."""
    return json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


# --- segment filters -------------------------------------------------------------------------

OPS = mostly(
    st.sampled_from(CONDITION_OPS),
    st.one_of(st.sampled_from(["EQ", "like", "", "between"]), st.none(), INTEGERS),
    odds=15,
)


def condition_values() -> st.SearchStrategy[Any]:
    """A condition's value: a plausible scalar or a short list; now and then one around the limits, or any JSON."""
    return mostly(
        st.one_of(SCALARS, st.lists(SCALARS, min_size=1, max_size=5)),
        st.one_of(
            st.integers(95, 105).map(lambda n: list(range(n))),  # around the 100-value limit of `in`
            st.text(min_size=2040, max_size=2056, alphabet="v"),  # around the 2,048-character limit
            st.integers(3, 8).map(lambda depth: nested(depth, 1)),  # around the 5-level limit
            st.just(list(range(1001))),  # past the 1,000-item limit
            SURROGATES,
            JSON_VALUES,
        ),
        odds=8,
    )


# Paths into nested documents: objects (`nested.a.b`), arrays (`items[].sku`), and names that are no path.
PATHS = ("nested.a.b", "items[]", "items[].sku", "nested.k[]", "a..b", ".a", "tags[][]", "a[].b[].c[].d[]", "x." * 17)
CONDITION_KEYS = mostly(
    st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS), st.sampled_from(PATHS), texts(12, min_size=1)),
    st.one_of(st.text(min_size=510, max_size=515), st.sampled_from(["", "a\x00"]), SURROGATES, INTEGERS),
    odds=15,
)
# Values the date and version operators take, and ones they refuse.
DATES_AND_VERSIONS = st.one_of(
    st.integers(-1, 36_501),
    st.sampled_from(["2024-01-01", "2024-01-01T00:00:00Z", "2026-02-30", "2024-01-01T24:00:00", "yesterday",
                     "3.10", "3.2.0-beta", "v3", "1" * 30, "0.0"]),
)
CONDITION_VALUES = mostly(condition_values(), DATES_AND_VERSIONS, odds=4)


@st.composite
def comparisons(draw: st.DrawFn, key_name: str) -> dict[str, Any]:
    """`{"trait" | "property": key, "op": op, "value": value}`; now and then a key missing, mistyped or unknown."""
    condition: dict[str, Any] = {key_name: draw(CONDITION_KEYS), "op": draw(OPS)}
    if not draw(chance(15)):
        condition["value"] = draw(CONDITION_VALUES)
    if draw(chance(20)):
        condition.pop(draw(st.sampled_from([key_name, "op"])))
    if draw(chance(20)):
        condition[draw(texts(8))] = draw(SCALARS)
    return condition


COUNTS = mostly(
    st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(["gte", "gt", "lte", "lt", "eq"]), st.integers(0, 5), min_size=1, max_size=2),
    ),
    st.one_of(
        st.dictionaries(
            st.sampled_from(["gte", "gt", "lte", "lt", "eq", "between"]),
            st.one_of(st.integers(-2, 5), st.integers(0, 2 * 10**9), st.booleans(), FLOATS, texts(4)),
            max_size=3,
        ),
        WRONG_OBJECTS,
    ),
    odds=8,
)
WITHIN_DAYS = mostly(
    st.integers(1, 3650),
    st.one_of(st.integers(-1, 0), st.integers(3651, 4000), st.booleans(), FLOATS, texts(4)),
    odds=8,
)


@st.composite
def event_conditions(draw: st.DrawFn) -> dict[str, Any]:
    """`{"event": name, "count": bounds, "within_days": n, "where": [property conditions]}`, fields now and then wrong."""
    condition: dict[str, Any] = {"event": draw(names())}
    if (count := draw(COUNTS)) is not None:
        condition["count"] = count
    if draw(st.booleans()):
        condition["within_days"] = draw(WITHIN_DAYS)
    if draw(st.booleans()):
        condition["where"] = draw(mostly(st.lists(comparisons("property"), max_size=3), WRONG_OBJECTS, odds=15))
    if draw(chance(4)):
        bounds = st.dictionaries(st.sampled_from(["gte", "gt", "lte", "lt"]), mostly(INTEGERS, FLOATS, odds=3), max_size=2)
        total = st.tuples(CONDITION_KEYS, bounds).map(lambda pair: {"property": pair[0], **pair[1]})
        condition["sum"] = draw(mostly(total, WRONG_OBJECTS, odds=10))
    return condition


ATTRIBUTES = mostly(
    st.sampled_from(["country", "city", "language", "location.lat", "app_version", "os_version", "location"]),
    st.one_of(texts(12), INTEGERS),
    odds=6,
)
COMPUTED = mostly(
    st.sampled_from(["first_seen", "last_seen", "sessions.count", "sessions.last", "purchases.revenue", "purchases.count"]),
    st.one_of(texts(12), INTEGERS),
    odds=6,
)
DEGREES = mostly(st.floats(-180, 180), st.one_of(FLOATS, INTEGERS, st.booleans(), texts(4), st.none()), odds=6)


@st.composite
def profile_conditions(draw: st.DrawFn) -> dict[str, Any]:
    """A condition on what apps send: an attribute, a computed value, a device, a place, a time of use."""
    kind = draw(st.sampled_from(["attribute", "computed", "device", "near", "active"]))
    if kind in ("attribute", "computed"):
        condition = draw(comparisons(kind))
        if condition.get(kind) is not None and not draw(chance(5)):
            condition[kind] = draw(ATTRIBUTES if kind == "attribute" else COMPUTED)
        return condition
    if kind == "device":
        device: dict[str, Any] = {"device": draw(mostly(st.sampled_from(["any", "ios", "android", "web"]), texts(6), odds=8))}
        if (count := draw(COUNTS)) is not None:
            device["count"] = count
        if draw(st.booleans()):
            device["within_days"] = draw(WITHIN_DAYS)
        if draw(st.booleans()):
            fields = st.sampled_from(["push_enabled", "platform", "app_version", "last_seen", "model", "token"])
            where = st.lists(st.tuples(comparisons("property"), fields), max_size=3).map(
                lambda pairs: [{**c, "property": f} if "property" in c else c for c, f in pairs]
            )
            device["where"] = draw(mostly(where, WRONG_OBJECTS, odds=15))
        return device
    if kind == "near":
        circle = {"lat": draw(DEGREES), "lon": draw(DEGREES), "km": draw(mostly(st.floats(0.1, 500), DEGREES, odds=6))}
        return {"near": draw(mostly(st.just(circle), WRONG_OBJECTS, odds=15))}
    active: dict[str, Any] = {}
    if draw(st.booleans()):
        active["days"] = draw(st.lists(mostly(st.sampled_from(["mon", "tue", "sat", "sun"]), texts(4), odds=10), max_size=4))
    if draw(st.booleans()):
        active["hours"] = {"from": draw(st.integers(-1, 25)), "to": draw(st.integers(-1, 25))}
    if draw(st.booleans()):
        active[draw(st.sampled_from(["sessions", "share"]))] = draw(
            mostly(st.dictionaries(st.sampled_from(["gte", "lte"]), st.one_of(st.integers(0, 5), st.floats(0, 1)), max_size=2),
                   WRONG_OBJECTS, odds=10)
        )
    return {"active": active}


def filters() -> st.SearchStrategy[Any]:
    """A filter tree of all / any / not over every kind of condition; now and then past a limit, or no tree."""
    leaves = mostly(
        st.one_of(comparisons("trait"), comparisons("trait"), event_conditions(), profile_conditions()), WRONG_OBJECTS, odds=20
    )

    def branches(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        lists = mostly(st.lists(children, min_size=1, max_size=4), st.just([]), odds=20)
        return mostly(
            st.one_of(
                lists.map(lambda xs: {"all": xs}), lists.map(lambda xs: {"any": xs}), children.map(lambda x: {"not": x})
            ),
            st.tuples(children, children).map(lambda xs: {"all": [xs[0]], "not": xs[1]}),  # two kinds in one node
            odds=20,
        )

    return mostly(
        st.recursive(leaves, branches, max_leaves=8),
        st.one_of(
            # Past the limits: nesting (12 levels), conditions (100) and cost (500 comparisons; an `in` value is one).
            st.integers(10, 15).map(nested_filter),
            st.integers(95, 105).map(lambda n: {"any": [{"trait": "plan", "op": "eq", "value": i} for i in range(n)]}),
            st.integers(4, 6).map(lambda n: {"all": [{"trait": "n", "op": "in", "value": list(range(100))}] * n}),
            st.integers(45, 55).map(lambda n: {"all": [{"event": "Product Added"}] * n}),
            WRONG_OBJECTS,
        ),
        odds=8,
    )


def nested_filter(depth: int) -> dict[str, Any]:
    """A `not` chain `depth` levels deep around one trait condition."""
    node: dict[str, Any] = {"trait": "plan", "op": "exists"}
    for _ in range(depth):
        node = {"not": node}
    return node


# Names of segments and campaigns: odd text; now and then one to refuse (too long, NUL, lone surrogates, no string).
NAMES = texts(24, min_size=1).filter(lambda name: "\x00" not in name)
ODD_NAMES = st.one_of(
    st.text(min_size=195, max_size=205, alphabet="n"), st.sampled_from(["", "a\x00b"]), SURROGATES, INTEGERS, st.none()
)
FILTERS = filters()


@st.composite
def segments(draw: st.DrawFn) -> dict[str, Any]:
    """A `POST /api/v1/segments` body: a name and a filter, each now and then missing or wrong."""
    body: dict[str, Any] = {"name": draw(mostly(NAMES, ODD_NAMES, odds=20)), "filter": draw(FILTERS)}
    if draw(chance(20)):
        body.pop(draw(st.sampled_from(["name", "filter"])))
    if draw(chance(20)):
        body[draw(texts(8))] = draw(SCALARS)
    return body


# --- campaigns -------------------------------------------------------------------------------

VARIABLES = (
    "user.traits.first_name",
    "user.traits.email",
    "user.traits.items",
    "user.traits.nested.a.b",
    "user.traits['odd key']",
    "user.user_id",
    "event.properties.name",
    "event.properties.price",
    "event.properties.items",
    "event.properties.items[0]",
    "event.properties.items.size",
    "event.properties.text",
    "campaign.name",
    "send_id",
    "unknown_root",
    "event",
)
FILTER_CALLS = (
    "upcase",
    "downcase",
    "capitalize",
    "size",
    "first",
    "last",
    "sort",
    "reverse",
    "uniq",
    "strip",
    "escape",
    "url_encode",
    "abs",
    "round",
    "json",
    "sum",
    "nonexistent_filter",
    "join: ','",
    "split: ''",
    "default: 'friend'",
    "truncate: 5",
    "append: 'x'",
    "prepend: 'x'",
    "replace: 'a', 'bbbbbbbb'",
    "times: 1000000",
    "plus: 1",
    "divided_by: 0",
    "modulo: 0",
    "date: '%Y-%m-%d'",
    "slice: 0, 3",
    "map: 'x'",
    "where: 'a'",
)
RANGE_BOUNDS = st.sampled_from([0, 1, 3, 100, 10_000, 10_001, 100_000_000])


def templates() -> st.SearchStrategy[str]:
    """Liquid: outputs with filters, loops over data and over ranges (around the 10,000-iteration limit), tags
    the dispatcher must refuse (`include`, `render`), broken syntax, and plain text."""
    outputs = st.builds(
        lambda variable, calls: "{{ " + " | ".join([variable, *calls]) + " }}",
        st.sampled_from(VARIABLES),
        st.lists(st.sampled_from(FILTER_CALLS), max_size=3),
    )
    broken = st.sampled_from(
        [
            "{{",
            "}}",
            "{% for x in %}",
            "{% if %}",
            "{% endfor %}",
            "{% include 'x' %}",
            "{% render 'y' %}",
            "{{ (1..100000000) | sum }}",
            "{% raw %}{{ x }}{% endraw %}",
            "{% comment %}c{% endcomment %}",
            "{{ user.traits.first_name | append: user.traits.first_name | append: user.traits.first_name }}",
            "{% cycle 'a', 'b' %}",
            "{% tablerow x in event.properties.items %}{{ x }}{% endtablerow %}",
        ]
    )
    leaves = st.one_of(texts(12).filter(lambda text: "\x00" not in text), outputs, outputs, broken)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=4).map("".join),
            st.builds(lambda body: "{% for x in event.properties.items %}" + body + "{% endfor %}", inner),
            st.builds(
                lambda low, high, body: f"{{% for i in ({low}..{high}) %}}{body}{{% endfor %}}",
                RANGE_BOUNDS,
                RANGE_BOUNDS,
                inner,
            ),
            st.builds(lambda body: "{% if user.traits.first_name %}" + body + "{% else %}x{% endif %}", inner),
            st.builds(lambda body: "{% capture c %}" + body + "{% endcapture %}{{ c }}{{ c }}", inner),
            st.builds(lambda body: "{% assign a = " + "'" + body.replace("'", "") + "'" + " %}{{ a | size }}", inner),
        ),
        max_leaves=8,
    )


def webhook_urls(sink: str) -> st.SearchStrategy[Any]:
    """Mostly the local webhook sink (any path under /webhooks/); else addresses Herald refuses, or no URL at all."""
    paths = st.one_of(texts(12), st.sampled_from(["hook", "a/b?c=d", "%2e%2e/x", "x#frag"]))
    elsewhere = st.one_of(
        st.sampled_from(
            [
                f"{sink}/not-webhooks",
                "http://10.0.0.1/hook",
                "http://169.254.169.254/latest/meta-data/",
                "http://localhost:1/hook",
                "http://[::1]/hook",
                "http://0.0.0.0/",
                "http://user:pass@example.invalid/hook",
                "ftp://example.com/hook",
                "javascript:alert(1)",
                "not a url",
                "",
            ]
        ),
        texts(12),
        INTEGERS,
    )
    return mostly(st.builds(lambda path: f"{sink}/webhooks/{path}", paths), elsewhere, odds=4)


HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "X-Token",
            "Content-Type",
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "X-Herald-Workspace",
            "bad name",
            "",
            "X-\r\nInjected",
        ]
    ),
    texts(8),
)
HEADER_VALUES = st.one_of(st.sampled_from(["v", "a\r\nX-Injected: 1", "é", "{{ send_id }}", "x" * 9000]), texts(12))
TEMPLATES = templates()


@lru_cache
def messages(sink: str) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """An email campaign's message and a webhook campaign's (built once: building these strategies is slow)."""
    senders = mostly(
        st.sampled_from(["Herald <news@example.com>", "news@example.com"]),
        st.one_of(st.sampled_from(["a@b", "x\r\nBcc: e@example.com", "a@b, c@d", ""]), texts(12)),
        odds=3,
    )
    email = st.fixed_dictionaries({"subject": TEMPLATES, "body": TEMPLATES}, optional={"from": senders})
    body = st.one_of(
        st.none(),
        TEMPLATES,
        st.dictionaries(texts(8), st.one_of(TEMPLATES, SCALARS, st.lists(TEMPLATES, max_size=2)), max_size=3),
        st.lists(TEMPLATES, max_size=2),
    )
    headers = mostly(
        st.dictionaries(
            st.sampled_from(["X-Token", "X-Fuzz", "Accept"]), st.sampled_from(["v", "{{ send_id }}", "a b"]), max_size=2
        ),
        st.one_of(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3), WRONG_OBJECTS),
        odds=3,
    )
    webhook = st.fixed_dictionaries(
        {"url": webhook_urls(sink)},
        optional={
            "method": mostly(st.sampled_from(["POST", "PUT", "PATCH"]), st.sampled_from(["GET", "post", ""]), odds=8),
            "headers": headers,
            "body": body,
        },
    )
    return email, webhook


TRIGGER_EVENT = "Fuzz Trigger"
NAME_VALUES = names()
CAMPAIGN_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "delay_seconds": mostly(st.just(0), st.one_of(st.integers(-1, 90 * 24 * 3600 + 1), FLOATS, texts(4)), odds=5),
    # Exception events: names, or {event, where} with the segments' conditions.
    "cancel_on": mostly(
        st.lists(
            st.one_of(
                NAME_VALUES,
                st.fixed_dictionaries(
                    {"event": NAME_VALUES}, optional={"where": st.lists(comparisons("property"), max_size=2)}
                ),
            ),
            max_size=3,
        ),
        WRONG_OBJECTS,
        odds=10,
    ),
    "audience": mostly(
        st.fixed_dictionaries({"segment_id": texts(12)}),
        st.one_of(st.fixed_dictionaries({"segment_id": st.text(min_size=64, max_size=66)}), WRONG_OBJECTS),
        odds=5,
    ),
    "starts_at": TIMESTAMPS,
    "ends_at": TIMESTAMPS,
}
CHANNELS = mostly(st.sampled_from(["email", "webhook"]), st.one_of(st.sampled_from(["sms", ""]), INTEGERS), odds=20)
TRIGGER_WHERE = mostly(st.lists(comparisons("property"), max_size=3), WRONG_OBJECTS, odds=15)


@st.composite
def campaigns(draw: st.DrawFn, sink: str) -> dict[str, Any]:
    """A `POST /api/v1/campaigns` body. Most trigger on `TRIGGER_EVENT` with no delay, so the test can fire them."""
    email, webhook = messages(sink)
    channel = draw(CHANNELS)
    trigger: Any = {"event": draw(mostly(st.just(TRIGGER_EVENT), NAME_VALUES, odds=4))}
    if draw(st.booleans()):
        trigger["where"] = draw(TRIGGER_WHERE)
    body: dict[str, Any] = {
        "name": draw(mostly(NAMES, ODD_NAMES, odds=20)),
        "channel": channel,
        "trigger": draw(mostly(st.just(trigger), WRONG_OBJECTS, odds=20)),
        "message": draw(
            mostly(email if channel == "email" else webhook, st.one_of(email, webhook, WRONG_OBJECTS), odds=10)
        ),
    }
    for field, values in CAMPAIGN_FIELDS.items():
        if draw(chance(4)):
            body[field] = draw(values)
    if draw(chance(15)):
        body[draw(texts(8))] = draw(SCALARS)
    return body
