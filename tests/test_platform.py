"""Health probes, the OpenAPI document, the Scalar page and CORS for the browser frontend."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.health import ReadinessCache
from app.main import create_app
from tests.conftest import build_settings, serve
from tests.factories import Account
from tests.issuer import JWKSServer
from tests.prerequisites import require
from tests.servers import free_port, terminate, wait_until

TASK_OPERATIONS = {
    ("/api/{user_id}/tasks", "get"): ("ListTasks", {"200", "401", "403", "422", "429", "503"}),
    ("/api/{user_id}/tasks", "post"): ("CreateTask", {"201", "401", "403", "409", "413", "415", "422", "429", "503"}),
    ("/api/{user_id}/tasks/{task_id}", "get"): ("GetTask", {"200", "304", "401", "403", "404", "422", "429", "503"}),
    ("/api/{user_id}/tasks/{task_id}", "put"): (
        "UpdateTask",
        {"200", "401", "403", "404", "412", "413", "415", "422", "429", "503"},
    ),
    ("/api/{user_id}/tasks/{task_id}", "delete"): (
        "DeleteTask",
        {"204", "401", "403", "404", "412", "422", "429", "503"},
    ),
    ("/api/{user_id}/tasks/{task_id}/complete", "patch"): (
        "ToggleTaskCompletion",
        {"200", "401", "403", "404", "412", "422", "429", "503"},
    ),
}
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
    app = create_app(build_settings(database_url, jwks_server, redis_url=own_redis.url, rate_limit_per_minute=100))
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


async def test_requests_while_the_database_is_down_get_503_not_500(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, database_url=UNREACHABLE_DATABASE, database_connect_timeout=1) as client:
        responses = [
            await client.get(alice.tasks_url(), headers=alice.headers),
            await client.post(alice.tasks_url(), json={"title": "lost?"}, headers=alice.headers),
        ]

    for response in responses:
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["status"] == 503


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


async def test_openapi_declares_the_bearer_scheme(openapi: dict[str, Any]) -> None:
    scheme = openapi["components"]["securitySchemes"]["BearerToken"]

    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")


@pytest.mark.parametrize(("path", "method"), list(TASK_OPERATIONS))
async def test_every_task_operation_is_named_secured_and_lists_its_real_statuses(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    operation = openapi["paths"][path][method]
    operation_id, statuses = TASK_OPERATIONS[(path, method)]

    assert operation["operationId"] == operation_id
    assert operation["security"] == [{"BearerToken": []}]
    assert set(operation["responses"]) == statuses
    for status in statuses - {"200", "201", "204", "304"}:
        content = operation["responses"][status]["content"]
        assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}


async def test_no_operation_documents_a_400(openapi: dict[str, Any]) -> None:
    documented = {status for item in openapi["paths"].values() for op in item.values() for status in op["responses"]}

    assert "400" not in documented


async def test_health_operations_need_no_token(openapi: dict[str, Any]) -> None:
    assert "security" not in openapi["paths"]["/health"]["get"]
    assert "security" not in openapi["paths"]["/health/ready"]["get"]


async def test_request_bodies_document_their_constraints(openapi: dict[str, Any]) -> None:
    create = openapi["components"]["schemas"]["TaskCreate"]

    assert create["required"] == ["title"]
    assert create["properties"]["title"]["maxLength"] == 200
    assert create["properties"]["title"]["minLength"] == 1


async def test_openapi_and_docs_need_no_token(client: httpx.AsyncClient) -> None:
    scalar = await client.get("/schema/scalar")

    assert scalar.status_code == 200
    assert scalar.headers["content-type"].startswith("text/html")
    assert "/schema/openapi.json" in scalar.text or "spec" in scalar.text


async def test_cors_preflight_from_an_allowed_origin_is_granted(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.options(
        alice.tasks_url(),
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    assert response.status_code in {200, 204}
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed


async def test_cors_exposes_the_headers_the_frontend_reads(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(alice.tasks_url(), headers={**alice.headers, "Origin": "http://localhost:3000"})

    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-total-count", "location", "etag"} <= exposed


async def test_cors_does_not_grant_other_origins(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(alice.tasks_url(), headers={**alice.headers, "Origin": "https://evil.example"})

    assert "access-control-allow-origin" not in response.headers


async def test_docs_assets_are_served_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/schema/assets/scalar.css")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
