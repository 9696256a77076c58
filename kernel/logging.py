"""structlog configured once per process, with a correlation id bound per request or message."""

import logging
import sys
import uuid
from typing import Any

import orjson
import structlog

CORRELATION_HEADER = "X-Correlation-Id"
BUS_CORRELATION_HEADER = "Herald-Correlation-Id"


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(service: str, fmt: str = "json", level: str = "INFO") -> None:
    """Configure structlog and route stdlib logging (uvicorn, alembic) through it."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
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


def current_correlation_id() -> str | None:
    """The correlation id bound to the current task, if any."""
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value else None


def bind_correlation_id(value: str | None) -> str:
    """Bind a correlation id (a new one when none is given) to the current task's logs."""
    value = value or new_correlation_id()
    structlog.contextvars.bind_contextvars(correlation_id=value)
    return value
