"""One structured log line per request (structlog, configured through Litestar's plugin).

``{"time", "level", "event": "request", "request_id", "method", "route", "status", "duration_ms", "user_id"}``:
the route is the template (``/api/{user_id}/tasks``), so lines group by endpoint and carry the user id once,
in its own field. JSON by default; ``LOG_FORMAT=console`` for people reading a terminal.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.logging.config import LoggingConfig, StructLoggingConfig
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.observability.request_id import request_id

__all__ = ("log_requests", "structlog_plugin")

_logger = structlog.get_logger("app.requests")


_encoder = msgspec.json.Encoder()


def _render_json(_logger: Any, method_name: str, event_dict: structlog.typing.EventDict) -> bytes:
    """The line as bytes, with the same ``time`` and ``level`` leading it as the stdlib records (``logging.py``)."""
    line = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": method_name,
        "logger": "app.requests",
        **event_dict,
    }
    return _encoder.encode(line)


def structlog_plugin(settings: Settings, stdlib_logging: LoggingConfig) -> StructlogPlugin:
    """structlog for the request log; the access log Litestar's plugin would add is not needed beside it."""
    if settings.log_format == "console":
        processors: list[Any] = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ]
        factory: Any = structlog.WriteLoggerFactory()
    else:
        # One line per request is the hottest logging there is: msgspec encodes it and it goes out as bytes
        # (json.dumps through a text stream cost about three times as much).
        processors = [structlog.contextvars.merge_contextvars, _render_json]
        factory = structlog.BytesLoggerFactory()
    return StructlogPlugin(
        StructlogConfig(
            structlog_logging_config=StructLoggingConfig(
                processors=processors,
                logger_factory=factory,
                wrapper_class=structlog.make_filtering_bound_logger(settings.log_level),
                cache_logger_on_first_use=True,
                log_exceptions="never",
                standard_lib_logging_config=stdlib_logging,
            ),
            enable_middleware_logging=False,
        )
    )


def log_requests(app: ASGIApp) -> ASGIApp:
    """Wrap the whole application, so the router's own 404s and 405s are logged as well."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            user = scope.get("user")
            _logger.info(
                "request",
                request_id=request_id(scope),
                method=scope.get("method"),
                route=scope.get("path_template") or "(unrouted)",
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                user_id=getattr(user, "id", None),
            )

    return logged
