"""create_app(): wiring only — plugins, middleware, routers, OpenAPI and exception mapping."""

from __future__ import annotations

import gc
import logging
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.middleware import DefineMiddleware

from app.auth import BearerAuthMiddleware, TokenVerifier, require_token
from app.concurrency import UserConcurrencyLimiter, UserConcurrencyMiddleware
from app.config import Settings, _origin, load_settings
from app.cors import cors_config, refuse_preflights_as_problems
from app.db import alchemy_config
from app.docs import SCALAR_CDN_URL, ScalarDocs, docs_assets_router
from app.errors import exception_handlers
from app.headers import docs_csp, security_headers_hook
from app.health import HealthController, ReadinessCache
from app.http_layers import answer_head_like_get, limit_request_headers, refuse_incomplete_bodies
from app.idempotency import purge_expired_keys
from app.observability.audit import configure_audit_logging
from app.observability.failures import record_failure
from app.observability.logging import stdlib_logging_config
from app.observability.metrics import instrument_pool, metrics_controller, prometheus_config, release_pool
from app.observability.request_log import log_requests, structlog_plugin
from app.openapi import finalize_schema, openapi_config
from app.ratelimit import RATE_LIMIT_STORE, rate_limit_configs, rate_limit_store
from app.retention import RetentionJob, purge_tombstones
from app.signing import SigningKeys
from app.sync import LiveEvents
from app.tasks.controller import TaskController
from app.tasks.schemas import PATTERN_EXPLANATIONS
from app.users.controller import AccountController
from app.users.service import UserProvisioner

__all__ = ("create_app",)

logger = logging.getLogger(__name__)

#: Generation thresholds of the cyclic garbage collector while serving (Python's default: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)
#: Task bodies are a few KiB at most; anything far larger is refused before it is read whole.
MAX_REQUEST_BODY_BYTES = 64 * 1024


def _app_version() -> str:
    try:
        return version("todo-api")
    except PackageNotFoundError:
        return "0.1.0"


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application for ``settings`` (default: read from the environment and ``.env``)."""
    settings = settings or load_settings()
    configure_audit_logging()
    verifier = TokenVerifier.from_settings(settings)
    docs = ScalarDocs()
    provisioner = UserProvisioner()
    concurrency = UserConcurrencyLimiter(settings.max_concurrent_requests_per_user)
    database = alchemy_config(settings)
    cors = cors_config(settings.cors_origins)
    instrument_pool(database.get_engine(), settings.database_pool_size + settings.database_max_overflow)
    live_events = LiveEvents(settings, database)
    retention = RetentionJob(
        database.create_session_maker(),
        [
            (purge_tombstones, timedelta(days=settings.sync_tombstone_retention_days)),
            # Each key carries its own expiry (IDEMPOTENCY_KEY_RETENTION_HOURS from its write): no further wait.
            (purge_expired_keys, timedelta(0)),
        ],
        interval=settings.sync_purge_interval_seconds,
    )

    async def tune_garbage_collection() -> None:
        # Everything built so far (routes, schemas, SQLAlchemy metadata) lives as long as the process: out of
        # the collector's reach. A request allocates hundreds of containers, so the default thresholds ran a
        # collection every few requests (6 % of CPU under load, in bench/); these run one every few thousand.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], GC_THRESHOLDS[2])

    async def warm_up_keys() -> None:
        if not verifier.configured:
            logger.warning(
                "No token key source configured (BETTER_AUTH_URL, JWT_JWKS_URL or JWT_SECRET): "
                "every /api request will be answered 401."
            )
        if verifier.jwks is not None:
            # Loading the JWKS now keeps the fetch off the first request; failure here is not fatal,
            # the cache retries on the first token it cannot verify.
            await verifier.jwks.refresh()

    async def close_resources() -> None:
        if verifier.jwks is not None:
            await verifier.jwks.aclose()
        # Advanced Alchemy only disposes the engine of the first config in a process (its state keys get
        # numbered after that); close the pool here so no connection outlives the app.
        await database.get_engine().dispose()
        release_pool(settings.database_pool_size + settings.database_max_overflow)

    app = Litestar(
        route_handlers=[
            HealthController,
            TaskController,
            AccountController,
            docs_assets_router(),
            metrics_controller(settings),
        ],
        # Live events after the database: their streams end before its pool closes.
        plugins=[
            SQLAlchemyPlugin(config=database),
            structlog_plugin(settings, stdlib_logging_config(settings)),
            live_events,
        ],
        # Order matters: the metrics see every routed request; authentication identifies the caller, then the
        # limiter counts the request against that identity (or the client address), then the user's requests
        # in flight are bounded, then the guard answers 401 or 403 before any handler runs.
        middleware=[
            prometheus_config().middleware,
            DefineMiddleware(
                BearerAuthMiddleware,
                verifier=verifier,
                exclude=["^/schema", "^/metrics"],
                exclude_from_auth_key="exclude_from_auth",
            ),
            *(config.middleware for config in rate_limit_configs(settings)),
            UserConcurrencyMiddleware(concurrency),
        ],
        guards=[require_token],
        stores={RATE_LIMIT_STORE: rate_limit_store(settings)},
        before_send=[
            security_headers_hook("/schema/scalar", docs_csp(None if docs.local else _origin(SCALAR_CDN_URL)))
        ],
        # The mapping answers; the observer audits, counts and logs (app/observability/failures.py).
        exception_handlers=exception_handlers(PATTERN_EXPLANATIONS),
        after_exception=[record_failure],
        cors_config=cors,
        openapi_config=openapi_config(_app_version(), docs),
        request_max_body_size=MAX_REQUEST_BODY_BYTES,
        on_startup=[warm_up_keys, tune_garbage_collection, retention.start],
        on_shutdown=[retention.stop, close_resources],
        debug=False,
    )
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.provisioner = provisioner
    app.state.readiness = ReadinessCache()
    app.state.concurrency = concurrency
    # Told of each committed change of a user's tasks (see TaskService): it reaches the user's event streams in
    # every process (app/sync/plugin.py).
    app.state.announce_change = live_events.announce_change
    app.state.signing_keys = SigningKeys()
    # Sessions for work that outlives its request's own session (an export, streamed after the handler returns).
    app.state.sessions = database.create_session_maker()
    finalize_schema(app)
    # Layers around the app's own ASGI handler (outside routing and every route middleware), outermost first:
    # the log sees every request, the router's 404s and 405s too; HEAD is routed as GET; oversized headers are
    # refused before authentication or rate limits spend anything on them; a refused CORS preflight is answered
    # before Litestar's CORS middleware would answer it in text/plain. A body cut short by the client is the
    # client's failure (400), not the server's.
    app.asgi_handler = log_requests(
        refuse_incomplete_bodies(
            answer_head_like_get(limit_request_headers(refuse_preflights_as_problems(app.asgi_handler, cors)))
        )
    )
    return app
