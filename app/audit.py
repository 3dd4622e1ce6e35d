"""The audit trail: one JSON line per security-relevant event, tied to the request by its id.

Events: ``auth.failed`` (401, with the reason), ``auth.forbidden`` (403 cross-user attempt), ``task.conflict``
(412), ``rate.limited`` (429) and ``server.error`` (5xx). Tokens and secrets are never logged: an event carries
the token's subject at most.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import random
import re
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar.types import Scope

__all__ = ("AUDIT_LOGGER", "JSONFormatter", "audit", "configure_audit_logging", "request_id")

AUDIT_LOGGER = "app.audit"
REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_logger = logging.getLogger(AUDIT_LOGGER)


def request_id(scope: Scope) -> str:
    """This request's id: the caller's ``X-Request-ID`` when it is a safe token, else a new one; stable per request."""
    state: dict[str, Any] = scope.setdefault("state", {})
    current = state.get("request_id")
    if isinstance(current, str):
        return current
    incoming = next(
        (value.decode("latin-1") for name, value in scope.get("headers", []) if name == REQUEST_ID_HEADER.encode()),
        "",
    )
    if not _SAFE_REQUEST_ID.fullmatch(incoming):
        # A correlation token, not a secret: Python's PRNG (reseeded in every worker) spares each request the
        # system call behind uuid4.
        incoming = f"{random.getrandbits(128):032x}"
    state["request_id"] = incoming
    return str(state["request_id"])


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


# Anything msgspec cannot encode natively (an exception's argument, say) is logged as its str().
_encoder = msgspec.json.Encoder(enc_hook=str)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an audit record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "audit", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


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
