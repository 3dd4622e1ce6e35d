"""What a refused or failed request leaves behind: its audit event, its failure counter, its error log line.

:func:`record_failure` is Litestar's ``after_exception`` hook, so app/errors.py stays a pure mapping from exception
to response and every side effect of an error happens here. It keys on the status the mapping will answer
(:func:`app.errors.status_for`), since the hook runs before the exception handler:

- a domain error names its own event (``DomainError.audit_event``) and brings its own fields
  (``DomainError.context``: the task id of a conflict, the foreign path user of a 403), so nothing here reads
  path parameters or knows a domain;
- any other 401 is ``auth.failed``, with the authentication middleware's reason, counted by reason;
- a 429 (the rate limiter's, or too many of one user's requests at once) is ``rate.limited``, counted by whether
  a user or a client address was limited;
- any 5xx is ``server.error``, with what the client was told or the error's type (never its message, which can
  quote user data); the internal wording of a framework 5xx and the traceback of an unexpected error are logged.

Each failure is seen once. This leans on how Litestar 2.25 places its internal exception middleware
(``litestar/middleware/_internal/exceptions``): one layer between each route's handler and its middleware (every
route here has middleware) catches what handlers, guards and dependencies raise, and one around the router
catches what middleware raises (the limiters' 429s) and the router's own 404s and 405s; the layer that catches
an exception calls the hooks, once, then answers with the handler, so nothing reaches the next layer. Responses
made without an exception (app/http_layers.py, the CORS preflight layer) were never audited and are not seen
here. tests/test_audit.py and tests/test_observability.py hold the contract.
"""

from __future__ import annotations

import logging

from litestar.exceptions import HTTPException
from litestar.types import Scope

from app.errors import DomainError, is_database_unavailable, public_detail, status_for
from app.observability.audit import audit
from app.observability.metrics import AUTH_FAILURES, RATE_LIMITED

__all__ = ("ERROR_LOGGER", "record_failure")

#: The logger of 5xx lines. The name they were always written under (log queries may select on it), not this
#: module's path.
ERROR_LOGGER = "app.errors"
_logger = logging.getLogger(ERROR_LOGGER)


async def record_failure(exc: Exception, scope: Scope) -> None:
    """Audit, count and log the failure ``exc`` of the request in ``scope`` (never the token itself).

    ``async`` on purpose: Litestar runs a synchronous hook in a worker thread.
    """
    status = status_for(exc)
    subject = getattr(scope.get("user"), "id", None)
    if isinstance(exc, DomainError) and exc.audit_event is not None:
        audit(exc.audit_event, scope, status=status, subject=subject, **exc.context)
    elif status == 401:
        # The middleware leaves its verdict in the scope; no verdict means no Authorization header at all.
        reason = getattr(scope.get("auth"), "reason", None) or "no bearer token"
        AUTH_FAILURES.labels(reason).inc()
        audit("auth.failed", scope, status=status, subject=subject, reason=reason)
    elif status == 429:
        RATE_LIMITED.labels("user" if subject else "address").inc()
        audit("rate.limited", scope, status=status, subject=subject, detail=_detail(exc))
    elif status >= 500:
        _log_server_error(exc, scope, status)
        audit("server.error", scope, status=status, subject=subject, detail=_detail(exc))


def _detail(exc: Exception) -> str:
    """What an audit line says about a failure: what the client was told, or the error's type."""
    if isinstance(exc, DomainError):
        return exc.detail
    if isinstance(exc, HTTPException):
        return public_detail(exc)
    if is_database_unavailable(exc):
        # The type only: a database error message can quote SQL parameters, which are user data.
        return f"database unavailable: {type(exc).__name__}"
    return f"unhandled {type(exc).__name__}"


def _log_server_error(exc: Exception, scope: Scope, status: int) -> None:
    """Log what a 5xx hides from the client; an unavailable database is expected and says so in the audit line."""
    method = scope.get("method")
    path = f"{scope.get('root_path', '')}{scope.get('path', '')}"  # as ``Request.url.path`` reads it
    if isinstance(exc, HTTPException):
        # A framework 5xx carries internal wording (a misconfiguration, say): logged here, never shown.
        _logger.error("HTTP %s on %s %s: %s", status, method, path, exc.detail)
    elif not isinstance(exc, DomainError) and not is_database_unavailable(exc):
        _logger.error("Unhandled error on %s %s", method, path, exc_info=exc)
