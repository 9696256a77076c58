"""One error base with a status code, rendered as `{"error": ..., "detail": ...}`."""

from typing import Any


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


class TransientError(Exception):
    """A failure worth retrying later (bus consumers `nak` with a delay)."""


class PermanentError(Exception):
    """A failure that retrying cannot fix (bus consumers `term` the message)."""
