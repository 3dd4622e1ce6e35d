"""How the standard library's log records are written: one JSON object per line, or plain text for a terminal.

:class:`JSONFormatter` shapes every stdlib record (the audit trail, the service's warnings, uvicorn, SQLAlchemy)
with the same leading ``time``, ``level`` and ``logger`` as the structlog request log (``request_log.py``),
so a log collector reads one format whatever wrote the line.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar.logging import LoggingConfig

from app.config import Settings

__all__ = ("JSONFormatter", "stdlib_logging_config")

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


def stdlib_logging_config(settings: Settings) -> LoggingConfig:
    """Every other log line (the service's warnings, uvicorn, SQLAlchemy) in the same JSON shape, or as text."""
    json_lines = settings.log_format == "json"
    return LoggingConfig(
        formatters={
            "json": {"()": JSONFormatter},
            "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        },
        handlers={"stderr": {"class": "logging.StreamHandler", "formatter": "json" if json_lines else "text"}},
        root={"level": settings.log_level, "handlers": ["stderr"]},
        log_exceptions="never",
    )
