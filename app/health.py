"""Liveness and readiness probes for load balancers and orchestrators; no authentication.

``/health`` says the process serves. ``/health/ready`` says whether it can do its work: the database answers,
and Redis and the JWKS (when configured) have answered since start-up. Each dependency is reported by name,
so an operator reading a 503 knows which one to look at.

The database is checked live: without it nothing can be served. Redis and the JWKS gate readiness only until
they first answer; afterwards the service rides out their outages (rate limits fail open, cached keys keep
verifying tokens), and pulling every instance from the load balancer over one would be an outage of its own.

Anyone can call ``/health/ready``, so a verdict is reused for a second and probes arriving while a check runs
wait for that check: a flood of probes costs one database round trip a second, not a pooled connection each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from litestar import Controller, Litestar, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.stores.redis import RedisStore
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import TokenVerifier
from app.errors import PROBLEM_JSON, RETRY_AFTER_SECONDS, ProblemDetails
from app.ratelimit import RATE_LIMIT_STORE

__all__ = ("HealthController", "HealthStatus", "Readiness", "ReadinessCache", "ReadinessProblem")

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
#: How long a readiness verdict is reused.
READINESS_CACHE_SECONDS = 1.0
_REDIS_ANSWERED = "readiness_redis_answered"


class HealthStatus(msgspec.Struct, frozen=True):
    """The liveness verdict."""

    status: str


class Readiness(msgspec.Struct, frozen=True):
    """Ready, and the state of each dependency: ``ok``; ``skipped`` when it is not configured; ``degraded: …``
    when Redis stopped answering after start-up (the instance serves on, without rate limits)."""

    status: str
    checks: dict[str, str]


class ReadinessProblem(ProblemDetails, frozen=True):
    """Not ready: a problem document whose ``checks`` say which dependency failed, and how."""

    checks: dict[str, str] = msgspec.field(default_factory=dict)


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            outcome = await probe()
    except Exception as exc:  # any failure of a dependency means "not ready", with its reason
        logger.warning("Readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        return name, f"failed: {type(exc).__name__}"
    return name, outcome


Checks = dict[str, str]


class ReadinessCache:
    """The last readiness verdict, reused for ``ttl`` seconds; concurrent probes share one check (single flight).

    The verdict is kept whatever it says: a 503 is as cheap to repeat as a 200. ``clock`` is injectable, so
    tests move time on instead of sleeping.
    """

    def __init__(self, ttl: float = READINESS_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._checks: Checks | None = None
        self._expires = 0.0
        self._running: asyncio.Task[Checks] | None = None

    async def get(self, check: Callable[[], Awaitable[Checks]]) -> Checks:
        """The cached verdict while it is fresh, else the one ``check`` (already running, or started now) returns."""
        if self._checks is not None and self._clock() < self._expires:
            return self._checks
        if self._running is None:
            self._running = asyncio.create_task(self._refresh(check))
        # Shielded: a probe that gives up (its client went away) must not cancel the check others wait for.
        return await asyncio.shield(self._running)

    async def _refresh(self, check: Callable[[], Awaitable[Checks]]) -> Checks:
        try:
            checks = await check()
        finally:
            self._running = None
        self._checks, self._expires = checks, self._clock() + self._ttl
        return checks


async def _readiness_checks(app: Litestar, db_engine: AsyncEngine) -> Checks:
    """Each dependency by name: ``ok``, ``skipped``, ``degraded: …`` or ``failed: …``."""

    async def database() -> str:
        async with db_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return "ok"

    async def redis() -> str:
        store = app.stores.get(RATE_LIMIT_STORE)
        if not isinstance(store, RedisStore):
            return "skipped"
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS / 2):
                await store.exists("readiness-probe")
        except Exception as exc:
            if not app.state.get(_REDIS_ANSWERED):
                raise
            # Once up, an instance keeps serving through a Redis outage (rate limits fail open): taking
            # every instance out of the load balancer over it would turn a degraded service into none.
            logger.warning("Readiness: Redis does not answer (%s); serving without rate limits", exc)
            return f"degraded: {type(exc).__name__}"
        app.state[_REDIS_ANSWERED] = True
        return "ok"

    async def jwks() -> str:
        verifier: TokenVerifier = app.state.verifier
        if verifier.jwks is None:
            return "skipped"
        if not verifier.jwks.loaded:
            await verifier.jwks.refresh()
        return "ok" if verifier.jwks.loaded else "failed: never loaded"

    return dict(await asyncio.gather(_check("database", database), _check("redis", redis), _check("jwks", jwks)))


class HealthController(Controller):
    """Probes: cheap, unauthenticated, never rate limited."""

    path = "/health"
    tags = ["Health"]
    opt = {"exclude_from_auth": True}

    @get("/", operation_id="GetLiveness", summary="Liveness", cache=False)
    async def live(self) -> HealthStatus:
        """200 whenever the process can answer at all."""
        return HealthStatus(status="ok")

    @get(
        "/ready",
        operation_id="GetReadiness",
        summary="Readiness",
        responses={
            503: ResponseSpec(
                ReadinessProblem,
                description="A dependency does not answer; `checks` names it.",
                media_type=PROBLEM_JSON,
                generate_examples=False,
            )
        },
        cache=False,
    )
    async def ready(
        self, request: Request[Any, Any, Any], db_engine: NamedDependency[AsyncEngine]
    ) -> Response[Readiness]:
        """200 when the database (and Redis and the JWKS, where configured) answer within two seconds."""
        cache: ReadinessCache = request.app.state.readiness
        checks = await cache.get(lambda: _readiness_checks(request.app, db_engine))
        if not any(state.startswith("failed") for state in checks.values()):
            return Response(Readiness(status="ready", checks=checks))
        failed = ", ".join(name for name, state in checks.items() if state not in {"ok", "skipped"})
        problem = ReadinessProblem(
            type="about:blank",
            title="Service Unavailable",
            status=503,
            detail=f"Not ready: {failed}.",
            checks=checks,
        )
        # The annotation documents the 200; the 503's problem document is declared in ``responses``.
        return cast(
            "Response[Readiness]",
            Response(
                problem, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ),
        )
