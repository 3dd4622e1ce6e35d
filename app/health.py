"""Liveness and readiness probes for load balancers; no authentication."""

from __future__ import annotations

import asyncio
import logging

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ServiceUnavailableError
from app.openapi import problem_responses

__all__ = ("HealthController", "HealthStatus")

logger = logging.getLogger(__name__)

READINESS_TIMEOUT_SECONDS = 2.0


class HealthStatus(msgspec.Struct, frozen=True):
    """The probe's verdict."""

    status: str


class HealthController(Controller):
    """``/health`` says the process serves; ``/health/ready`` that its database answers too."""

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
        responses=problem_responses(503),
        cache=False,
    )
    async def ready(self, db_engine: NamedDependency[AsyncEngine]) -> HealthStatus:
        """200 when the database answers a trivial query within two seconds, else 503."""
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), db_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            logger.warning("Readiness check failed: %s: %s", type(exc).__name__, exc)
            raise ServiceUnavailableError("The database is not answering.") from None
        return HealthStatus(status="ready")
