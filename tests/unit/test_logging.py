"""Logs in both formats: tracebacks as plain text, never local variables, cheap to render; correlation ids checked."""

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from kernel.logging import (
    MAX_TRACEBACK_CHARS,
    bind_correlation_id,
    configure_logging,
    current_correlation_id,
    valid_correlation_id,
)

SECRET = "hk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"


class Output(io.StringIO):
    """What a process configured by `configure` writes to stderr."""

    def configure(self, fmt: str) -> None:
        """configure_logging, writing to this buffer instead of the real stderr."""
        real, sys.stderr = sys.stderr, self
        try:
            configure_logging("test", fmt)
        finally:
            sys.stderr = real


@pytest.fixture
def output() -> Iterator[Output]:
    """A buffer to log to; structlog and the root logger are put back as they were afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    context = structlog.contextvars.get_contextvars()
    try:
        yield Output()
    finally:
        structlog.reset_defaults()
        structlog.configure(**saved)
        root.handlers[:], root.level = handlers, level
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**context)


def fail_holding_secrets(depth: int = 0) -> None:
    """Raise from a frame whose locals hold a key, a token and a deeply nested document."""
    api_key = SECRET  # noqa: F841 - a local variable a traceback must not show
    internal_token = {"X-Herald-Internal-Token": SECRET}  # noqa: F841
    document: Any = SECRET
    for _ in range(1000):
        document = {"a": document}
    if depth:
        fail_holding_secrets(depth - 1)
    raise ValueError("the lookup failed")


def log_failures() -> None:
    """Log one failure through structlog and one through the standard library (as uvicorn does)."""
    try:
        fail_holding_secrets()
    except ValueError as exc:
        structlog.get_logger("test.structlog").error("request_failed", exc_info=exc)
    try:
        fail_holding_secrets()
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_exception_never_shows_local_variables_and_costs_little(output: Output, fmt: str) -> None:
    output.configure(fmt)
    started = time.perf_counter()
    log_failures()
    elapsed = time.perf_counter() - started
    text = output.getvalue()
    assert SECRET not in text
    assert text.count("Traceback (most recent call last)") == 2
    assert text.count("fail_holding_secrets") >= 2 and text.count("ValueError: the lookup failed") == 2
    # Rendering the nested local took minutes and 195,000 lines; the traceback itself is a few lines.
    assert len(text.splitlines()) < 60, text
    assert elapsed < 0.5


def test_json_logs_carry_the_traceback_as_text_for_structlog_and_stdlib_records(output: Output) -> None:
    output.configure("json")
    log_failures()
    lines = [orjson.loads(line) for line in output.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["request_failed", "Exception in ASGI application"]
    for line in lines:
        assert line["level"] == "error" and line["service"] == "test"
        assert "exc_info" not in line
        assert line["exception"].startswith("Traceback (most recent call last)")
        assert "in fail_holding_secrets" in line["exception"]
        assert line["exception"].endswith("ValueError: the lookup failed")
    assert "<traceback object" not in output.getvalue()


def test_a_deep_recursion_renders_a_bounded_traceback(output: Output) -> None:
    output.configure("json")

    def recurse(n: int) -> None:
        """Fail at the bottom of a deep stack."""
        if n == 0:
            raise RuntimeError("bottom")
        recurse(n - 1)

    try:
        recurse(500)
    except RuntimeError:
        logging.getLogger("asyncio").exception("task failed")
    [line] = [orjson.loads(x) for x in output.getvalue().splitlines()]
    assert len(line["exception"]) <= MAX_TRACEBACK_CHARS + 100
    assert line["exception"].endswith("RuntimeError: bottom")


def test_a_field_orjson_refuses_does_not_lose_the_log_line(output: Output) -> None:
    output.configure("json")
    log = structlog.get_logger("test.fields")
    log.info("odd_fields", huge=10**30, keyed={1: "one"})
    [line] = [json.loads(x) for x in output.getvalue().splitlines()]
    assert line["event"] == "odd_fields" and line["huge"] == 10**30 and line["keyed"] == {"1": "one"}


@pytest.mark.parametrize(
    "given, kept",
    [
        ("req-42:retry.1_A", "req-42:retry.1_A"),
        (b"0123456789abcdef", "0123456789abcdef"),
        ("x" * 128, "x" * 128),
        ("x" * 129, None),
        ("two words", None),
        ("caf\u00e9", None),
        (b"\xff\xfe", None),
        ("line\r\nInjected: yes", None),
        ("", None),
        (None, None),
    ],
)
def test_only_a_well_formed_correlation_id_is_kept(given: str | bytes | None, kept: str | None) -> None:
    assert valid_correlation_id(given) == kept


def test_binding_a_malformed_correlation_id_binds_a_fresh_one() -> None:
    saved = structlog.contextvars.get_contextvars()
    try:
        fresh = bind_correlation_id(b"\xff" * 200)
        assert fresh != "\xff" * 200 and valid_correlation_id(fresh) == fresh
        assert current_correlation_id() == fresh
        assert bind_correlation_id("abc-1") == "abc-1"
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**saved)
