"""Which failures mean "the database or the bus is unreachable or timed out" (503, retry) and which are bugs (500)."""

import errno
import socket

import asyncpg.exceptions
import nats.errors
import nats.js.errors
import pytest
import sqlalchemy.exc

from kernel.errors import is_dependency_outage


def _caused_by(exc: BaseException, cause: BaseException) -> BaseException:
    """`exc` raised `from cause`, as a library that wraps errors does."""
    exc.__cause__ = cause
    return exc


def _raised_while_handling(exc: BaseException, context: BaseException) -> BaseException:
    """`exc` raised inside an `except` block that was handling `context` (no `from`)."""
    exc.__context__ = context
    return exc


OUTAGES = [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 5432)"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    BrokenPipeError(errno.EPIPE, "Broken pipe"),
    TimeoutError(),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    OSError(errno.ENETUNREACH, "Network is unreachable"),
    OSError(errno.ETIMEDOUT, "Connection timed out"),
    socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.ConnectionFailureError("server closed the connection unexpectedly"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.InterfaceError("cannot call Connection.fetch(): connection is closed"),
    sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached, connection timed out"),
    sqlalchemy.exc.OperationalError("SELECT 1", None, ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
    sqlalchemy.exc.InterfaceError("SELECT 1", None, Exception("connection is closed"), connection_invalidated=True),
    sqlalchemy.exc.InternalError("SELECT 1", None, Exception("another operation"), connection_invalidated=True),
    sqlalchemy.exc.DBAPIError("SELECT 1", None, asyncpg.exceptions.TooManyConnectionsError("too many clients")),
    _caused_by(
        sqlalchemy.exc.DBAPIError("SELECT 1", None, Exception("adapted")),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    ),
    nats.errors.ConnectionClosedError(),
    nats.errors.NoServersError(),
    nats.errors.TimeoutError(),
    nats.errors.FlushTimeoutError(),
    nats.errors.NoRespondersError(),
    nats.errors.StaleConnectionError(),
    nats.errors.UnexpectedEOF(),
    nats.errors.ConnectionReconnectingError(),
    nats.errors.ConnectionDrainingError(),
    nats.errors.OutboundBufferLimitError(),
    nats.js.errors.NoStreamResponseError(),
    nats.js.errors.ServiceUnavailableError(),
    _caused_by(RuntimeError("the segmenter did not answer"), nats.errors.NoRespondersError()),
]

BUGS = [
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/etc/herald/templates/missing.liquid"),
    PermissionError(errno.EACCES, "Permission denied", "/var/lib/herald"),
    IsADirectoryError(errno.EISDIR, "Is a directory"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError("an OSError without an errno"),
    ValueError("invalid literal for int()"),
    KeyError("traits"),
    RuntimeError("bad answer on profiles.query"),
    asyncpg.exceptions.InvalidPasswordError('password authentication failed for user "herald"'),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
    sqlalchemy.exc.OperationalError("SELECT 1", None, Exception("could not serialize access")),
    sqlalchemy.exc.InterfaceError("SELECT 1", None, Exception("another operation is in progress")),
    sqlalchemy.exc.IntegrityError("INSERT …", None, asyncpg.exceptions.ForeignKeyViolationError("violates fk")),
    sqlalchemy.exc.DBAPIError("SELECT 1/0", None, asyncpg.exceptions.DivisionByZeroError("division by zero")),
    nats.errors.MaxPayloadError(),
    nats.errors.BadSubjectError(),
    nats.errors.AuthorizationError(),
    nats.js.errors.BadRequestError(),
    nats.js.errors.NotFoundError(),
    _raised_while_handling(KeyError("answer"), ConnectionResetError(errno.ECONNRESET, "reset")),
]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
def test_an_unreachable_or_timed_out_database_or_bus_is_an_outage(exc: BaseException) -> None:
    assert is_dependency_outage(exc)


@pytest.mark.parametrize("exc", BUGS, ids=lambda e: type(e).__name__)
def test_every_other_failure_is_not_an_outage(exc: BaseException) -> None:
    assert not is_dependency_outage(exc)


def test_a_cause_chain_that_loops_back_on_itself_ends() -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__cause__, second.__cause__ = second, first
    assert not is_dependency_outage(first)
