"""The audit trail: one JSON line per security-relevant event, tied to the request by its id.

Events: ``auth.failed`` (401, with the reason), ``auth.forbidden`` (403 cross-user attempt), ``task.conflict``
(412), ``rate.limited`` (429) and ``server.error`` (5xx); ``failures.py`` decides which request records which.
Tokens and secrets are never logged: an event carries the token's subject at most. The logger keeps the name
``app.audit`` (docs/security.md), wherever this module lives.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from typing import Any

from litestar.types import Scope

from app.observability.logging import JSONFormatter
from app.observability.request_id import request_id

__all__ = ("AUDIT_LOGGER", "audit", "configure_audit_logging")

AUDIT_LOGGER = "app.audit"
_logger = logging.getLogger(AUDIT_LOGGER)


def audit(event: str, scope: Scope, **fields: Any) -> None:
    """Record one audit event for the request in ``scope``."""
    client = scope.get("client")
    _logger.warning(
        event,
        extra={
            "audit": {
                "event": event,
                "request_id": request_id(scope),
                "client": client[0] if client else None,
                "method": scope.get("method"),
                "path": scope.get("path"),
                **fields,
            }
        },
    )


def configure_audit_logging() -> None:
    """Send audit events to stderr as JSON lines (once per process, whatever else logging does).

    Through a queue: the request only enqueues the record; a thread formats and writes it, so a flood of
    refused tokens does not turn into a flood of blocking writes on the event loop.
    """
    if any(isinstance(handler, logging.handlers.QueueHandler) for handler in _logger.handlers):
        return
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JSONFormatter())
    listener = logging.handlers.QueueListener(records, stream, respect_handler_level=False)
    listener.start()
    atexit.register(listener.stop)
    _logger.addHandler(logging.handlers.QueueHandler(records))
    _logger.setLevel(logging.INFO)
    _logger.propagate = False
