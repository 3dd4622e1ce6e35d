"""The one place where exceptions become RFC 9457 problem-details responses."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Literal, get_args

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.audit import audit
from app.metrics import AUTH_FAILURES, RATE_LIMITED

__all__ = (
    "PROBLEM_JSON",
    "DomainError",
    "FieldError",
    "NotFoundError",
    "PreconditionFailedError",
    "ProblemDetails",
    "ServiceUnavailableError",
    "exception_handlers",
    "explain_pattern",
    "problem_response",
)

logger = logging.getLogger(__name__)

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

    def __init__(self, detail: str | None = None, **context: str) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail
        self.context = context


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


_PATTERN_MEANINGS: dict[str, str] = {}


def explain_pattern(pattern: str, meaning: str) -> str:
    """Register how a regex constraint reads to a person; msgspec's own message only quotes the regex."""
    _PATTERN_MEANINGS[f"matching regex {pattern!r}"] = meaning
    return pattern


def _readable(message: str) -> str:
    for quoted, meaning in _PATTERN_MEANINGS.items():
        if quoted in message:
            return meaning
    return message


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


def _field_from_msgspec(message: str) -> FieldError:
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
    return FieldError(field=path or "body", message=_readable(text))


def _on_msgspec_validation(_: Request[Any, Any, Any], exc: msgspec.ValidationError) -> Response[ProblemDetails]:
    return _validation_response([_field_from_msgspec(str(exc))])


def _on_msgspec_decode(_: Request[Any, Any, Any], exc: msgspec.DecodeError) -> Response[ProblemDetails]:
    return _validation_response([FieldError(field="body", message=f"Malformed JSON: {exc}")])


def _on_litestar_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ProblemDetails]:
    errors: list[FieldError] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        key = str(item.get("key", "body"))
        source = item.get("source", "body")
        message = _readable(str(item.get("message", "Invalid value")))
        if key == "data":
            key, message = "body", "A JSON request body is required."
        errors.append(FieldError(field=key, message=message, source=source if source in _SOURCES else "body"))
    if not errors:
        errors.append(FieldError(field="body", message=exc.detail))
    return _validation_response(errors)


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ProblemDetails]:
    status = exc.status_code
    if status >= 500:
        # A framework 5xx carries internal wording (a misconfiguration, say); log it, do not show it.
        logger.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
        detail = _default_detail(status)
    else:
        detail = exc.detail if exc.detail and exc.detail != HTTPStatus(status).phrase else _default_detail(status)
    headers = dict(exc.headers or {})
    if status == 429 and "Retry-After" not in headers and "RateLimit-Reset" in headers:
        # Litestar's limiter sends the draft RateLimit-* headers; Retry-After is what clients act on.
        headers["Retry-After"] = headers["RateLimit-Reset"]
    _record(request, status, detail)
    return problem_response(status, detail, headers=headers)


def _on_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[ProblemDetails]:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status_code == 503 else None
    _record(request, exc.status_code, exc.detail)
    return problem_response(exc.status_code, exc.detail, headers=headers)


def _on_database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetails]:
    # The type only: a database error message can quote SQL parameters, which are user data.
    _record(request, 503, f"database unavailable: {type(exc).__name__}")
    return problem_response(503, ServiceUnavailableError.detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _on_database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[ProblemDetails]:
    # Lost connections and timeouts are transient; anything else is a bug and must be seen as one.
    if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
        return _on_database_unavailable(request, exc)
    return _on_unexpected(request, exc)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetails]:
    logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    _record(request, 500, f"unhandled {type(exc).__name__}")
    return problem_response(500, "An unexpected error occurred.")


_EVENTS = {401: "auth.failed", 403: "auth.forbidden", 412: "task.conflict", 429: "rate.limited"}


def _record(request: Request[Any, Any, Any], status: int, detail: str) -> None:
    """Write the audit event for a refused or failed request (never the token itself)."""
    event = _EVENTS.get(status) or ("server.error" if status >= 500 else None)
    if event is None:
        return
    scope = request.scope
    subject = getattr(scope.get("user"), "id", None)
    path_params = scope.get("path_params") or {}
    fields: dict[str, Any] = {"status": status, "subject": subject}
    if status == 401:
        fields["reason"] = getattr(scope.get("auth"), "reason", None) or "no bearer token"
        AUTH_FAILURES.labels(fields["reason"]).inc()
    elif status == 403:
        fields["path_user"] = path_params.get("user_id")
    elif status == 412:
        fields["task_id"] = str(path_params.get("task_id"))
    else:
        fields["detail"] = detail
        if status == 429:
            RATE_LIMITED.labels("user" if subject else "address").inc()
    audit(event, scope, **fields)


def _default_detail(status: int) -> str:
    try:
        return HTTPStatus(status).description or HTTPStatus(status).phrase
    except ValueError:  # pragma: no cover - Litestar only raises standard codes
        return "Error"


exception_handlers: ExceptionHandlersMap = {
    msgspec.ValidationError: _on_msgspec_validation,
    msgspec.DecodeError: _on_msgspec_decode,
    ValidationException: _on_litestar_validation,
    HTTPException: _on_http_exception,
    DomainError: _on_domain_error,
    PoolTimeoutError: _on_database_unavailable,
    TimeoutError: _on_database_unavailable,
    ConnectionError: _on_database_unavailable,
    # Raised by asyncpg while connecting, where SQLAlchemy does not wrap them: the server is starting up,
    # shutting down or out of connection slots, or the link dropped.
    asyncpg.exceptions.PostgresConnectionError: _on_database_unavailable,
    asyncpg.exceptions.OperatorInterventionError: _on_database_unavailable,
    asyncpg.exceptions.InsufficientResourcesError: _on_database_unavailable,
    asyncpg.exceptions.InterfaceError: _on_database_unavailable,
    DBAPIError: _on_database_error,
    Exception: _on_unexpected,
}
"""Exception type → handler, registered on the app. Litestar picks the most specific type in the MRO."""
