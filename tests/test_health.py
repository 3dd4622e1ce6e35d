"""Health probes: liveness needs nothing; readiness names each dependency, rides out a Redis outage, and
checks the database at most once a second however many probes arrive."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.health import READINESS_CACHE_SECONDS, ReadinessCache
from app.main import create_app
from tests.support.environment import service_settings
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.prerequisites import require
from tests.support.servers import free_port, serve, terminate, wait_until

UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:9/unreachable"


async def test_liveness_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_reports_each_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "skipped", "jwks": "ok"}}


async def test_readiness_is_503_naming_the_database_when_it_does_not_answer(app_client: Callable[..., Any]) -> None:
    async with app_client(None, database_url=UNREACHABLE_DATABASE, database_connect_timeout=1) as client:
        response = await client.get("/health/ready")

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"]
    body = response.json()
    assert body["checks"]["database"].startswith("failed")
    assert "database" in body["detail"]


async def test_readiness_names_an_unreachable_redis(app_client: Callable[..., Any]) -> None:
    async with app_client(None, redis_url="redis://127.0.0.1:9/0") as client:
        response = await client.get("/health/ready")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["database"], checks["jwks"]) == ("ok", "skipped")
    assert checks["redis"].startswith("failed")


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            terminate(self.process)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own, which it may stop."""
    require(shutil.which("redis-server") is not None, "redis-server is not installed (Debian package redis-server)")
    port = free_port()
    server = RedisServer(
        url=f"redis://127.0.0.1:{port}/0",
        process=subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        ),
    )

    def answers() -> bool:
        with redis.Redis.from_url(server.url) as client:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

    try:
        wait_until(answers, 10, "redis-server did not start")
        yield server
    finally:
        server.stop()


async def test_an_instance_rides_out_a_redis_outage_after_start_up(
    database_url: str, jwks_server: JWKSServer, alice: Account, own_redis: RedisServer
) -> None:
    app = create_app(service_settings(database_url, jwks_server, redis_url=own_redis.url, rate_limit_per_minute=100))
    app.state.readiness = ReadinessCache(ttl=0)  # every probe checks afresh (normally a verdict lasts a second)
    async with serve(app) as client:
        before = await client.get("/health/ready")
        own_redis.stop()
        during = await client.get("/health/ready")
        served = await client.get(alice.tasks_url(), headers=alice.headers)

    assert (before.status_code, before.json()["checks"]["redis"]) == (200, "ok")
    # Still ready: pulling every instance out of the load balancer over Redis would be an outage of its own.
    assert during.status_code == 200
    assert during.json()["checks"]["redis"].startswith("degraded")
    assert served.status_code == 200  # rate limiting fails open


async def test_readiness_names_a_jwks_that_never_loaded(app_client: Callable[..., Any]) -> None:
    async with app_client(None, jwt_jwks_url="http://127.0.0.1:9/jwks", jwt_jwks_timeout_seconds=0.5) as client:
        response = await client.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["checks"]["jwks"].startswith("failed")


# --- readiness probes cannot drain the pool ----------------------------------------------------------------


@dataclass
class ManualClock:
    """A monotonic clock that moves only when told to."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ProbedApp:
    client: httpx.AsyncClient
    clock: ManualClock
    statements: list[str] = field(default_factory=list)

    @property
    def database_checks(self) -> int:
        return self.statements.count("SELECT 1")


@pytest.fixture
async def probed(database_url: str) -> AsyncIterator[ProbedApp]:
    """An app whose readiness cache runs on a manual clock, recording the SQL its engine runs."""
    app = create_app(service_settings(database_url))
    clock = ManualClock()
    app.state.readiness = ReadinessCache(clock=clock)
    async with serve(app) as client:
        probed = ProbedApp(client, clock)

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            probed.statements.append(statement)

        engine = app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
        assert isinstance(engine, AsyncEngine)
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            yield probed
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_readiness_checks_the_database_at_most_once_a_second(probed: ProbedApp) -> None:
    first = [(await probed.client.get("/health/ready")).status_code for _ in range(5)]
    checks_within_a_second = probed.database_checks
    probed.clock.now += READINESS_CACHE_SECONDS
    later = await probed.client.get("/health/ready")

    assert first == [200] * 5
    assert checks_within_a_second == 1
    assert later.status_code == 200
    assert probed.database_checks == 2


async def test_concurrent_readiness_probes_share_one_check(probed: ProbedApp) -> None:
    responses = await asyncio.gather(*(probed.client.get("/health/ready") for _ in range(20)))

    assert [response.status_code for response in responses] == [200] * 20
    assert probed.database_checks == 1
