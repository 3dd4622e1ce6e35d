"""The one place where exceptions become RFC 9457 problem-details responses.

Only the mapping lives here: every handler is a pure function from an exception to its response. What a failure
leaves behind (audit events, failure counters, error logs) is recorded by the ``after_exception`` observer in
app/observability/failures.py, which asks :func:`status_for` how an exception is answered. Domain errors say
themselves what they mean (:class:`DomainError`), and the words for field constraints come from the schemas
that own them (:func:`exception_handlers`), so this module knows no domain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Literal, get_args

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = (
    "PROBLEM_JSON",
    "DomainError",
    "FieldError",
    "InvalidFieldError",
    "NotFoundError",
    "PreconditionFailedError",
    "ProblemDetails",
    "ServiceUnavailableError",
    "exception_handlers",
    "is_database_unavailable",
    "problem_response",
    "public_detail",
    "status_for",
)

PROBLEM_JSON = "application/problem+json"
#: Seconds a client should wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 1

FieldSource = Literal["body", "query", "path", "header"]
_SOURCES = frozenset(get_args(FieldSource))


class FieldError(msgspec.Struct, frozen=True):
    """One invalid part of a request."""

    field: str
    message: str
    source: FieldSource = "body"


class ProblemDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """An error response body (RFC 9457). ``type`` is ``about:blank``: the status says what went wrong."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | msgspec.UnsetType = msgspec.UNSET


class DomainError(Exception):
    """An expected failure raised by a service and mapped to an HTTP status here.

    ``audit_event`` names the audit event a failure of this kind records (``None``: not audited), and
    ``context`` carries what the domain knows about it (a task id, say): the error says what happened, so
    nothing downstream has to work it out from the request.
    """

    status_code: int = 400
    detail: str = "The request cannot be processed."
    audit_event: ClassVar[str | None] = None
    #: Seconds after which a retry may succeed, sent as ``Retry-After`` (``None``: no such promise).
    retry_after_seconds: ClassVar[int | None] = None

    def __init__(self, detail: str | None = None, **context: str) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail
        self.context = context


class IncompleteRequestError(DomainError):
    """The client closed its connection before the whole request body arrived: its request, not the service,
    failed (nobody reads the answer; the status is for the request log, metrics and audit)."""

    detail = "The connection was closed before the request body was complete."


class InvalidFieldError(DomainError):
    """A well-formed value the domain refuses (a revision from the future, say): 422 naming the field."""

    status_code = 422

    def __init__(self, field: str, message: str, source: FieldSource = "query") -> None:
        super().__init__("1 field is invalid.")
        self.field_error = FieldError(field=field, message=message, source=source)


class NotFoundError(DomainError):
    """The resource does not exist, or belongs to someone else (the two are indistinguishable on purpose)."""

    status_code = 404
    detail = "Not found."


class PreconditionFailedError(DomainError):
    """An If-Match precondition does not hold: the resource changed since the client read it."""

    status_code = 412
    detail = "The resource has changed since it was read; fetch it again."


class ServiceUnavailableError(DomainError):
    """A dependency (the database) cannot answer right now; retrying later may succeed."""

    status_code = 503
    detail = "The service is temporarily unavailable; retry shortly."
    retry_after_seconds = RETRY_AFTER_SECONDS


def problem_response(
    status: int,
    detail: str,
    *,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[ProblemDetails]:
    """Build a problem-details response; every error body of the service goes through here."""
    body = ProblemDetails(
        type="about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=list(errors) if errors else msgspec.UNSET,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _validation_response(errors: Sequence[FieldError]) -> Response[ProblemDetails]:
    count = len(errors)
    detail = "1 field is invalid." if count == 1 else f"{count} fields are invalid."
    return problem_response(422, detail, errors=errors)


_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`$")
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _field_from_msgspec(message: str, readable: Callable[[str], str]) -> FieldError:
    """Split msgspec's ``Expected `str` of length <= 200 - at `$.title``` into field and message."""
    match = _MSGSPEC_PATH.match(message)
    if match is None:  # pragma: no cover - the pattern matches every string
        return FieldError(field="body", message=message)
    path = (match.group("path") or "").lstrip(".")
    text = match.group("message")
    if missing := _MISSING_FIELD.match(text):
        # msgspec reports a missing field at its parent object; name the field itself.
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        text = "Field required."
    return FieldError(field=path or "body", message=readable(text))


def _on_msgspec_decode(_: Request[Any, Any, Any], exc: msgspec.DecodeError) -> Response[ProblemDetails]:
    return _validation_response([FieldError(field="body", message=f"Malformed JSON: {exc}")])


def public_detail(exc: HTTPException) -> str:
    """What the client is told about a framework exception: its own words, unless it is a 5xx or has none."""
    status = exc.status_code
    if status >= 500:
        # A framework 5xx carries internal wording (a misconfiguration, say): logged by the observer, never shown.
        return _default_detail(status)
    return exc.detail if exc.detail and exc.detail != HTTPStatus(status).phrase else _default_detail(status)


def _on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ProblemDetails]:
    headers = dict(exc.headers or {})
    if exc.status_code == 429 and "Retry-After" not in headers and "RateLimit-Reset" in headers:
        # Litestar's limiter sends the draft RateLimit-* headers; Retry-After is what clients act on.
        headers["Retry-After"] = headers["RateLimit-Reset"]
    return problem_response(exc.status_code, public_detail(exc), headers=headers)


def _on_domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[ProblemDetails]:
    if isinstance(exc, InvalidFieldError):
        return _validation_response([exc.field_error])
    headers = {"Retry-After": str(exc.retry_after_seconds)} if exc.retry_after_seconds else None
    return problem_response(exc.status_code, exc.detail, headers=headers)


#: Failures that mean the database cannot answer right now (503, retry shortly), not that a query is wrong.
_DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    PoolTimeoutError,
    TimeoutError,
    ConnectionError,
    # Raised by asyncpg while connecting, where SQLAlchemy does not wrap them: the server is starting up,
    # shutting down or out of connection slots, or the link dropped.
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InterfaceError,
)


def is_database_unavailable(exc: Exception) -> bool:
    """Whether ``exc`` means the database cannot answer right now (503) rather than a bug (500)."""
    if isinstance(exc, DBAPIError):
        # Lost connections and timeouts are transient; anything else is a bug and must be seen as one.
        return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    return isinstance(exc, _DATABASE_UNAVAILABLE)


def _on_database_unavailable(_: Request[Any, Any, Any], _exc: Exception) -> Response[ProblemDetails]:
    return problem_response(503, ServiceUnavailableError.detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _on_database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[ProblemDetails]:
    if is_database_unavailable(exc):
        return _on_database_unavailable(request, exc)
    return _on_unexpected(request, exc)


def _on_unexpected(_: Request[Any, Any, Any], _exc: Exception) -> Response[ProblemDetails]:
    return problem_response(500, "An unexpected error occurred.")


def _default_detail(status: int) -> str:
    try:
        return HTTPStatus(status).description or HTTPStatus(status).phrase
    except ValueError:  # pragma: no cover - Litestar only raises standard codes
        return "Error"


def status_for(exc: Exception) -> int:
    """The status the handlers of :func:`exception_handlers` answer ``exc`` with, without building a response.

    For whoever observes failures: Litestar's ``after_exception`` hooks run before the handler. Kept next to the
    table below, which it follows (tests/test_observability.py checks that the two agree).
    """
    if isinstance(exc, (msgspec.ValidationError, msgspec.DecodeError, ValidationException)):
        return 422
    if isinstance(exc, (DomainError, HTTPException)):
        return exc.status_code
    return 503 if is_database_unavailable(exc) else 500


def exception_handlers(explanations: Mapping[str, str] | None = None) -> ExceptionHandlersMap:
    """Exception type → handler, to register on the app; Litestar picks the most specific type in the MRO.

    ``explanations`` maps the regex of a field constraint to what it means in words: msgspec's message only
    quotes the regex. The schemas that declare the constraints provide them (app/tasks/schemas.py).
    """
    quoted = {f"matching regex {pattern!r}": meaning for pattern, meaning in (explanations or {}).items()}

    def readable(message: str) -> str:
        return next((meaning for regex, meaning in quoted.items() if regex in message), message)

    def on_msgspec_validation(_: Request[Any, Any, Any], exc: msgspec.ValidationError) -> Response[ProblemDetails]:
        return _validation_response([_field_from_msgspec(str(exc), readable)])

    def on_litestar_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ProblemDetails]:
        errors: list[FieldError] = []
        for item in exc.extra if isinstance(exc.extra, list) else []:
            key = str(item.get("key", "body"))
            source = item.get("source", "body")
            message = readable(str(item.get("message", "Invalid value")))
            if key == "data":
                key, message = "body", "A JSON request body is required."
            errors.append(FieldError(field=key, message=message, source=source if source in _SOURCES else "body"))
        if not errors:
            errors.append(FieldError(field="body", message=exc.detail))
        return _validation_response(errors)

    return {
        msgspec.ValidationError: on_msgspec_validation,
        msgspec.DecodeError: _on_msgspec_decode,
        ValidationException: on_litestar_validation,
        HTTPException: _on_http_exception,
        DomainError: _on_domain_error,
        **dict.fromkeys(_DATABASE_UNAVAILABLE, _on_database_unavailable),
        DBAPIError: _on_database_error,
        Exception: _on_unexpected,
    }
