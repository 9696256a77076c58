"""One error base with a status code, rendered as `{"error": ..., "detail": ...}`, and the one rule
that tells an outage of the database or the bus (503, retry) from a bug (500)."""

import errno
import socket
from typing import Any

import asyncpg.exceptions
import nats.errors
import nats.js.errors
import sqlalchemy.exc


class HeraldError(Exception):
    """An expected failure with the HTTP status it maps to."""

    status_code = 400
    error = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any = None, *, error: str | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else error or self.error)
        self.detail = detail
        if error:
            self.error = error

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": self.error, "detail": self.detail}


class BadRequest(HeraldError):
    status_code = 400
    error = "bad_request"


class Unauthorized(HeraldError):
    status_code = 401
    error = "unauthorized"
    headers = {"WWW-Authenticate": 'Basic realm="herald"'}


class Forbidden(HeraldError):
    status_code = 403
    error = "forbidden"


class NotFound(HeraldError):
    status_code = 404
    error = "not_found"


class Conflict(HeraldError):
    status_code = 409
    error = "conflict"


class PayloadTooLarge(HeraldError):
    # Segment's API answers oversize calls with 400; so do we, with a precise error code.
    status_code = 400
    error = "payload_too_large"


class TooManyRequests(HeraldError):
    """Over a rate limit: SDKs retry with backoff after Retry-After, so nothing is lost."""

    status_code = 429
    error = "rate_limited"

    def __init__(self, detail: Any = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.headers = headers


class Unprocessable(HeraldError):
    status_code = 422
    error = "validation_error"


class Unavailable(HeraldError):
    """A dependency is down: the caller should retry later; nothing was stored."""

    status_code = 503
    error = "unavailable"

    def __init__(self, detail: Any = None, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class UpstreamTimeout(HeraldError):
    """A service took longer than the gateway waits: it may still finish, so this is not "unavailable"."""

    status_code = 504
    error = "upstream_timeout"


class TransientError(Exception):
    """A failure worth retrying later (bus consumers `nak` with a delay)."""


class PermanentError(Exception):
    """A failure that retrying cannot fix (bus consumers `term` the message)."""


# The database or the bus is unreachable, went away, refused a new connection or did not answer in
# time. Everything else (a missing file, a permission, a constraint, a bad query, a bug) is not an
# outage, and answering it with "retry later" would hide it.
OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # asyncio.timeout, connect and command timeouts, nats.errors.TimeoutError
    socket.gaierror,  # the dependency's host name does not resolve (DNS down, service not yet there)
    sqlalchemy.exc.TimeoutError,  # no pooled connection became free in time
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,  # nobody serves the request subject (peer service down)
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,  # the buffer filled up while reconnecting
    nats.js.errors.NoStreamResponseError,  # no JetStream stream answered the publish
    nats.js.errors.ServiceUnavailableError,  # JetStream answered 503 (no leader, no quorum)
)
# A plain OSError from connect() when the network cannot reach the host at all.
OUTAGE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT}
)
# SQLSTATEs of a connection problem, whether raised by asyncpg or carried by SQLAlchemy's adapted error.
OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_dependency_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database or the bus is unreachable or timed out (a 503), not a bug (a 500).

    Follows what a library raised `from` (and SQLAlchemy's `.orig`), never what was merely being
    handled when `exc` was raised: a KeyError in an `except ConnectionError` block is still a bug.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _is_outage_itself(current):
            return True
        pending.extend(
            linked
            for linked in (current.__cause__, getattr(current, "orig", None))
            if isinstance(linked, BaseException)
        )
    return False


def _is_outage_itself(exc: BaseException) -> bool:
    """The rule for one exception, without looking at what caused it."""
    if isinstance(exc, OUTAGE_TYPES):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        # SQLAlchemy asked the dialect and found the connection dead (it invalidates it for the pool).
        return bool(exc.connection_invalidated)
    if type(exc) is OSError:
        return exc.errno in OUTAGE_ERRNOS
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        # asyncpg says "connection is closed" with a plain InterfaceError; SQLAlchemy's own
        # disconnect test for asyncpg reads the same words.
        return "connection is closed" in str(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in OUTAGE_SQLSTATES)


# --- what a bus consumer does with a failure: retry it, or give up on the message ------------------

# SQLSTATE classes that fail the same way on every attempt: 22 is a data exception (a NUL byte in
# text or jsonb, invalid text representation, numeric value out of range), 23 an integrity
# constraint violation. Read from asyncpg's exceptions and from the DBAPI error SQLAlchemy wraps
# (`DataError`, `IntegrityError`), so raw asyncpg and SQLAlchemy code are classified alike.
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23"})


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying can never fix this failure: a PermanentError or a deterministic database error.

    Everything else is transient (redelivered with backoff). Follows what a library raised `from`
    (and SQLAlchemy's `.orig`), never what was merely being handled; the first TransientError,
    PermanentError or database error of a permanent SQLSTATE class met on that chain decides.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)  # outermost first
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TransientError):
            return False
        if isinstance(current, PermanentError) or _sqlstate_class(current) in PERMANENT_SQLSTATE_CLASSES:
            return True
        pending.extend(
            linked for linked in (getattr(current, "orig", None), current.__cause__) if isinstance(linked, BaseException)
        )
    return False


def _sqlstate_class(exc: BaseException) -> str | None:
    """The two-character SQLSTATE class of a database error (asyncpg `sqlstate`, psycopg `pgcode`)."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code[:2] if isinstance(code, str) and len(code) == 5 else None
