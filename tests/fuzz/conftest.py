"""The fuzz tier: Hypothesis drives hostile but plausible requests through the whole stack the e2e tests run.

Each test fuzzes one workspace of its own and checks what a user would: no 5xx, every refusal a JSON
error, everything answered 2xx stored and readable back; and afterwards, that every process is
still up, ready and quick enough to store and show a plain call within a bound.

The examples run synchronously (Hypothesis calls the test once per example), each on this test's
own event loop, so that the checks that need all of them (is everything accepted stored?) run once,
after the last example, on the same loop and clients.
"""

import asyncio
import itertools
import os
import tempfile
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.stack import Stack, create_workspace, set_rate_limits
from kernel.db import make_engine
from tests.conftest import Infra, eventually
from tests.e2e.conftest import Workspace

# Hypothesis caches what it learns of the code (string constants, Unicode tables) in `.hypothesis/`
# under the working directory unless told otherwise: keep the repository clean.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "herald-hypothesis")

T = TypeVar("T")
# A workspace's own limits while it is fuzzed: every example should reach the services, not a 429.
RATE_LIMIT = 100_000
# How long a process may take to answer its readiness check, and a plain call to be stored and shown,
# once the fuzzing is over. Generous on purpose: they catch a wedged process, not a slow machine.
READY_BOUND_SECONDS = 10.0
STORED_BOUND_SECONDS = 30.0


def fuzzing(max_examples: int) -> settings:
    """Bounded and reproducible: a fixed number of examples from a seed derived from the test, no example database.

    No shrinking: it would replay requests against a stack the earlier examples changed, for minutes.
    A failure names the exact request instead.
    """
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


@dataclass
class Fuzz:
    """One fuzzed workspace: the stack, the workspace's clients, and the event loop its requests run on."""

    stack: Stack
    infra: Infra
    ws: Workspace
    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    serial: Iterator[int] = field(default_factory=itertools.count)

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        """Run one async step on this test's loop (Hypothesis calls each example synchronously)."""
        return self.loop.run_until_complete(step)

    def unique(self, suffix: str) -> str:
        """A messageId no other request of the session uses, ending in a fuzzed `suffix`."""
        return f"fz-{self.ws.workspace_id}-{next(self.serial)}-{suffix}"

    async def query(self, sql: str, **params: Any) -> list[Any]:
        """Rows of a read-only query, to see what the services stored (the API shows it one user at a time)."""
        async with self.engine.connect() as connection:
            return list(await connection.execute(text(sql), params))


@pytest.fixture
def fuzz(stack: Stack, infra: Infra) -> Iterator[Fuzz]:
    """A fresh workspace with room in its rate limits, its SDK and API clients, and an event loop for the test.

    Made by the functions behind `herald create-workspace` and `herald rate-limits` (the e2e tier runs the
    commands themselves), in-process: a command's start-up would cost seconds per test.
    """
    loop = asyncio.new_event_loop()
    creds = loop.run_until_complete(create_workspace(infra.database_url, "fuzz"))
    limits = {"sdk": RATE_LIMIT, "api": RATE_LIMIT}
    assert loop.run_until_complete(set_rate_limits(infra.database_url, creds["workspace_id"], limits))
    base = stack.config.url("gateway")
    sdk = httpx.AsyncClient(base_url=base, auth=(creds["write_key"], ""), timeout=30)
    api = httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {creds['api_key']}"}, timeout=30)
    sink = httpx.AsyncClient(base_url=stack.config.url("sinks"), timeout=30)
    ws = Workspace(creds["workspace_id"], creds["write_key"], creds["api_key"], sdk, api, sink)
    engine = make_engine(infra.database_url, pool_size=1, max_overflow=0)
    try:
        yield Fuzz(stack, infra, ws, loop, engine)
    finally:
        for client in (sdk, api, sink):
            loop.run_until_complete(client.aclose())
        loop.run_until_complete(engine.dispose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def describe(method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> str:
    """The request as a reproducer: method, path, headers and body (long bodies cut)."""
    shown = body if len(body) <= 2000 else body[:2000] + b"...(%d bytes)" % len(body)
    return f"{method} {path} headers={headers or {}} body={shown!r}"


def assert_answered_cleanly(response: httpx.Response, request: str) -> None:
    """No 5xx, and a refusal is a JSON object naming its error."""
    status = response.status_code
    assert status < 500, f"HTTP {status} {response.text[:500]!r}\n  for {request}"
    if status >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), (
            f"HTTP {status} not JSON: {response.headers.get('content-type')} {response.text[:300]!r}\n  for {request}"
        )
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), f"HTTP {status} {body!r}\n  for {request}"


def path_segment(value: str) -> str:
    """An id as one URL path segment, dots included (a client would otherwise resolve `.` and `..` away)."""
    return quote(value, safe="").replace(".", "%2E")


async def api_json(ws: Workspace, path: str, **params: Any) -> Any:
    """GET an API path until it answers 200 (a 429 or a not-yet-stored 404 is retried), and its JSON."""

    last: list[httpx.Response] = []

    async def answered() -> httpx.Response | None:
        response = await ws.api.get(path, params=params)
        assert response.status_code < 500, (
            f"HTTP {response.status_code} {response.text[:500]!r} for GET {path} {params}"
        )
        last[:] = [response]
        return response if response.status_code == 200 else None

    try:
        return (await eventually(answered, timeout=STORED_BOUND_SECONDS)).json()
    except AssertionError:
        raise AssertionError(f"GET {path} {params}: HTTP {last[0].status_code} {last[0].text[:300]!r}") from None


async def assert_still_serving(fuzz: Fuzz) -> None:
    """After the fuzzing: every process is up and ready within a bound, and a plain call is stored and shown."""
    stack = fuzz.stack
    exited = stack.first_exited()
    assert exited is None, f"{exited} exited with {stack.procs[exited].returncode}{stack.log_tail(exited)}"
    async with httpx.AsyncClient(timeout=READY_BOUND_SECONDS) as client:
        for name in stack.procs:
            path = "/healthz" if name == "sinks" else "/readyz"
            response = await client.get(stack.config.url(name) + path)
            assert response.status_code == 200, f"{name}{path}: HTTP {response.status_code} {response.text[:300]}"
    user, message_id = f"probe-{uuid.uuid4().hex[:8]}", fuzz.unique("probe")
    sent = await fuzz.ws.track(user, event="Probe", messageId=message_id, properties={"after": "fuzzing"})
    assert sent.status_code == 200, sent.text

    async def shown() -> bool:
        response = await fuzz.ws.api.get(f"/api/v1/users/{user}/events")
        return response.status_code == 200 and [e["message_id"] for e in response.json()["events"]] == [message_id]

    await eventually(shown, timeout=STORED_BOUND_SECONDS)
