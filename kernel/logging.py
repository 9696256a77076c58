"""structlog configured once per process, with a correlation id bound per request or message.

A traceback is rendered as plain text by `format_traceback`, in both formats and for both structlog's
and the standard library's records (uvicorn, asyncio): never with local variables (they hold keys,
tokens and users' data, and rendering a deeply nested one took minutes), and bounded in frames and
size, so logging an error costs about what raising it did.
"""

import json
import logging
import re
import sys
import traceback
import uuid
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog

CORRELATION_HEADER = "X-Correlation-Id"
BUS_CORRELATION_HEADER = "Herald-Correlation-Id"
# What a correlation id may be before it is echoed in a response or put on the bus: a client picks
# it, so anything else (other characters, longer) is replaced with a fresh one.
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

MAX_TRACEBACK_FRAMES = 30  # the innermost ones, per exception in a chain
MAX_TRACEBACK_CHARS = 20_000  # the head and the tail of a longer text are kept

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def format_traceback(exc_info: ExcInfo) -> str:
    """An exception with its traceback as plain text: no local variables, at most MAX_TRACEBACK_FRAMES frames each."""
    _, exc, tb = exc_info
    try:
        lines = traceback.TracebackException(
            type(exc), exc, tb, limit=-MAX_TRACEBACK_FRAMES, capture_locals=False
        ).format()
        text = "".join(lines).rstrip("\n")
    except Exception as failure:  # a broken __str__ must not lose the log line
        text = f"{type(exc).__name__} (its traceback could not be rendered: {type(failure).__name__})"
    if len(text) > MAX_TRACEBACK_CHARS:
        half = MAX_TRACEBACK_CHARS // 2
        text = f"{text[:half]}\n… {len(text) - 2 * half} characters left out …\n{text[-half:]}"
    return text


def _console_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """ConsoleRenderer's exception formatter: the same plain text (never rich's, which shows locals)."""
    sio.write("\n" + format_traceback(exc_info))


_render_exception = structlog.processors.ExceptionRenderer(format_traceback)


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    """One JSON log line; a value orjson refuses (a huge integer, deep nesting) never loses the line."""
    try:
        return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        try:
            return json.dumps(obj, default=repr, ensure_ascii=False)
        except (ValueError, TypeError, RecursionError):
            return orjson.dumps({str(k): repr(v)[:2000] for k, v in obj.items()}).decode()


def configure_logging(service: str, fmt: str = "json", level: str = "INFO") -> None:
    """Configure structlog and route stdlib logging (uvicorn, alembic) through it."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=_console_traceback
        )
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    # The exception is rendered to text in the shared chain, so both renderers, and the records of
    # the standard library (whose exc_info would otherwise reach the JSON renderer as a repr), print it
    # the same way.
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _render_exception,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


def new_correlation_id() -> str:
    """A fresh correlation id."""
    return uuid.uuid4().hex


def valid_correlation_id(value: str | bytes | None) -> str | None:
    """`value` if it is a correlation id Herald passes on (≤ 128 of `[A-Za-z0-9._:-]`), else None."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value and CORRELATION_ID.fullmatch(value):
        return value
    return None


def current_correlation_id() -> str | None:
    """The correlation id bound to the current task, if any."""
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value else None


def bind_correlation_id(value: str | bytes | None) -> str:
    """Bind a correlation id to the current task's logs: `value` if valid, else a new one."""
    correlation_id = valid_correlation_id(value) or new_correlation_id()
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    return correlation_id
