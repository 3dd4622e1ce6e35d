"""Prometheus metrics at ``/metrics``, through Litestar's Prometheus integration.

Requests are counted and timed by route *template* (``/api/{user_id}/tasks``), never by raw path, so no
user id becomes a label. Alongside: authentication failures by reason, rate-limit rejections, the database
pool in use and available, and JWKS refreshes by outcome. With several workers (``WEB_CONCURRENCY``),
``python -m app serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a shared directory so that any worker's
``/metrics`` reports all of them.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController, PrometheusMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings

__all__ = (
    "AUTH_FAILURES",
    "CHANGE_FEED_REQUESTS",
    "EVENTS_SENT",
    "EVENT_STREAMS_OPEN",
    "IDEMPOTENT_REPLAYS",
    "JWKS_REFRESHES",
    "METRICS_PATH",
    "RATE_LIMITED",
    "instrument_pool",
    "metrics_controller",
    "prometheus_config",
    "release_pool",
)

METRICS_PATH = "/metrics"
PREFIX = "todo_api"

AUTH_FAILURES = Counter(f"{PREFIX}_auth_failures_total", "Requests refused 401, by reason", ["reason"])
RATE_LIMITED = Counter(f"{PREFIX}_rate_limited_total", "Requests refused 429, by who was limited", ["scope"])
JWKS_REFRESHES = Counter(f"{PREFIX}_jwks_refreshes_total", "JWKS downloads, by outcome", ["outcome"])
POOL_IN_USE = Gauge(
    f"{PREFIX}_db_pool_connections_in_use", "Database connections checked out", multiprocess_mode="livesum"
)
POOL_SIZE = Gauge(
    f"{PREFIX}_db_pool_connections_max", "Database connections the pool may hold", multiprocess_mode="livesum"
)

# Sync (issue 12): the change feed, the live event streams and idempotent retries.
CHANGE_FEED_REQUESTS = Counter(
    f"{PREFIX}_change_feed_requests_total",
    "Change feed requests: full (since=0), incremental, or expired (410)",
    ["outcome"],
)
EVENT_STREAMS_OPEN = Gauge(
    f"{PREFIX}_event_streams_open", "Server-sent event streams open now", multiprocess_mode="livesum"
)
EVENTS_SENT = Counter(f"{PREFIX}_events_sent_total", "Server-sent events written to streams, by event type", ["event"])
IDEMPOTENT_REPLAYS = Counter(
    f"{PREFIX}_idempotent_replays_total", "Requests answered from a stored Idempotency-Key response"
)


class ResponseStatusPrometheusMiddleware(PrometheusMiddleware):
    """Litestar's middleware with the same metrics and labels, made cheaper and more exact.

    - A request refused by a middleware inside it (429 from the rate limiter) is counted with its real
      status: Litestar's records the default 200, since no response passes through it.
    - Each label combination's metric children are looked up once and kept: ``labels()`` validates and
      locks on every call, and Litestar makes five such calls per request.
    """

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        self._in_progress: dict[tuple[str, str], Any] = {}
        self._finished: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def _labels(self, method: str, path: str, status: int) -> dict[str, str | int | float]:
        # Litestar's label names, in its order (they name the metric's label columns).
        return {"method": method, "path": path, "status_code": status, "app_name": self._config.app_name}

    def _children(self, method: str, path: str, status: int) -> tuple[Any, Any, Any]:
        key = (method, path, status)
        children = self._finished.get(key)
        if children is None:
            labels = self._labels(method, path, status)
            values = [*labels.values()]
            errors = self.requests_error_count(labels).labels(*values) if status >= 500 else None
            children = (self.request_count(labels).labels(*values), self.request_time(labels).labels(*values), errors)
            self._finished[key] = children
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]  # type: ignore[typeddict-item]  # HTTP scopes only (see ``scopes``)
        path = scope["path_template"] if self._config.group_path else scope["path"]
        in_progress = self._in_progress.get((method, path))
        if in_progress is None:
            labels = self._labels(method, path, 200)
            in_progress = self.requests_in_progress(labels).labels(*labels.values())
            self._in_progress[(method, path)] = in_progress
        started = time.perf_counter()
        status = 0
        duration = 0.0

        async def measured_send(message: Message) -> None:
            nonlocal status, duration
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                duration = time.perf_counter() - started
            await send(message)

        in_progress.inc()
        try:
            await self.app(scope, receive, measured_send)
        except HTTPException as exc:
            status = status or exc.status_code
            raise
        except Exception:
            status = status or 500
            raise
        finally:
            in_progress.dec()
            count, latency, errors = self._children(method, path, status or 500)
            if errors is not None:
                errors.inc()
            count.inc()
            latency.observe(duration or time.perf_counter() - started)


def prometheus_config() -> PrometheusConfig:
    """Request count and latency by method, route template and status; health, docs and metrics excluded."""
    return PrometheusConfig(
        app_name="todo-api",
        prefix=PREFIX,
        group_path=True,
        exclude=["^/health", "^/schema", f"^{METRICS_PATH}"],
        buckets=[0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        middleware_class=ResponseStatusPrometheusMiddleware,
    )


def metrics_controller(settings: Settings) -> type[PrometheusController]:
    """``/metrics``, open, or behind ``Authorization: Bearer <METRICS_TOKEN>`` when that is set."""
    token = settings.metrics_token

    async def requires_metrics_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if token is None:
            return
        presented = connection.headers.get("authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            raise NotAuthorizedException("/metrics needs the metrics token.", headers={"WWW-Authenticate": "Bearer"})

    class MetricsController(PrometheusController):
        path = METRICS_PATH
        include_in_schema = False
        opt = {"exclude_from_auth": True}
        guards = [requires_metrics_token]

    return MetricsController


def release_pool(size: int) -> None:
    """The app's pool is gone (shutdown): take its connections out of the gauge."""
    POOL_SIZE.dec(size)


def instrument_pool(engine: AsyncEngine, size: int) -> None:
    """Keep the pool gauges current from the pool's own checkout and checkin events."""
    POOL_SIZE.inc(size)
    pool = engine.sync_engine.pool
    event.listen(pool, "checkout", lambda *_: POOL_IN_USE.inc())
    event.listen(pool, "checkin", lambda *_: POOL_IN_USE.dec())
