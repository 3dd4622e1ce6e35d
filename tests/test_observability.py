"""Observability: /metrics counts exactly the traffic it saw, by route template; one JSON log line per request."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Request
from litestar.exceptions import (
    InternalServerException,
    NotAuthorizedException,
    NotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.middleware._internal.exceptions.middleware import get_exception_handler
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.errors import NotFoundError, ServiceUnavailableError, exception_handlers, status_for
from tests.support.environment import service_environment as service_env
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.servers import ApiServer, wait_until

LIST_ROUTE = "/api/{user_id}/tasks"
ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, pairs), v in scrape.items() if n == name and all((k, val) in pairs for k, val in labels.items())
    )


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return samples(response.text)


async def test_metrics_move_by_exactly_the_traffic_sent(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, rate_limit_per_minute=4) as client:
        before = await scrape(client)
        for _ in range(3):
            assert (await client.get(alice.tasks_url(), headers=alice.headers)).status_code == 200
        for _ in range(2):
            assert (await client.get(alice.tasks_url())).status_code == 401
        assert (await client.get(alice.tasks_url(), headers={"Authorization": "Bearer x.y.z"})).status_code == 401
        assert (await client.get(alice.tasks_url(), headers=alice.headers)).status_code == 200
        assert (await client.get(alice.tasks_url(), headers=alice.headers)).status_code == 429
        after = await scrape(client)
        text = (await client.get("/metrics")).text

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "todo_api_requests_total"
    assert delta(requests, path=LIST_ROUTE, method="GET", status_code="200") == 4
    assert delta(requests, path=LIST_ROUTE, method="GET", status_code="401") == 3
    assert delta(requests, path=LIST_ROUTE, method="GET", status_code="429") == 1
    assert delta("todo_api_request_duration_seconds_count", path=LIST_ROUTE, status_code="200") == 4
    assert delta("todo_api_auth_failures_total", reason="no bearer token") == 2
    assert delta("todo_api_auth_failures_total", reason="malformed token") == 1
    assert delta("todo_api_rate_limited_total", scope="user") == 1
    assert value(after, "todo_api_jwks_refreshes_total", outcome="loaded") >= 1
    assert value(after, "todo_api_db_pool_connections_max") >= 16
    assert value(after, "todo_api_db_pool_connections_in_use") >= 0
    assert alice.id not in text  # route templates, never raw paths: no user id in any label
    documented = set(re.findall(r"todo_api_\w+", (ROOT / "docs" / "deploy.md").read_text()))
    assert {name for name in documented if name not in text} == set()  # the guide lists real metrics


async def test_metrics_can_require_a_token(app_client: Callable[..., Any]) -> None:
    token = "metrics-token-0123456789"
    async with app_client(None, metrics_token=token) as client:
        refused = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})

    assert (refused.status_code, wrong.status_code, allowed.status_code) == (401, 401, 200)
    assert "todo_api_" in allowed.text


@pytest.mark.parametrize(
    "exc",
    [
        msgspec.ValidationError("Expected `str` - at `$.title`"),
        msgspec.DecodeError("truncated"),
        ValidationException(),
        NotAuthorizedException(),
        NotFoundException(),
        TooManyRequestsException(),
        InternalServerException(),
        NotFoundError(),
        ServiceUnavailableError(),
        PoolTimeoutError(),
        TimeoutError(),
        ConnectionRefusedError(),
        asyncpg.exceptions.TooManyConnectionsError(),
        OperationalError("SELECT 1", {}, Exception()),
        DBAPIError("SELECT 1", {}, Exception(), connection_invalidated=True),
        IntegrityError("INSERT", {}, Exception()),
        ValueError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_failures_are_recorded_under_the_status_the_client_gets(exc: Exception) -> None:
    # The audit events and failure counters key on status_for (Litestar calls its hooks before the handler);
    # the handler is looked up as Litestar does (an internal of Litestar's, the very lookup the app uses).
    handler = get_exception_handler(exception_handlers(), exc)
    assert handler is not None
    request: Request[Any, Any, Any] = Request({"type": "http", "method": "GET", "path": "/", "headers": []})

    assert status_for(exc) == handler(request, exc).status_code


async def test_metrics_are_not_in_the_api_document(client: httpx.AsyncClient) -> None:
    assert "/metrics" not in (await client.get("/schema/openapi.json")).json()["paths"]


@pytest.fixture
def start_service(database_url: str, jwks_server: JWKSServer) -> Iterator[Callable[..., ApiServer]]:
    """Start ``python -m app serve`` processes with extra settings; all are stopped after the test."""
    started: list[ApiServer] = []

    def start(**settings: str) -> ApiServer:
        started.append(ApiServer(env=service_env(database_url, jwks_server, **settings)).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_every_request_is_one_json_log_line(start_service: Callable[..., ApiServer], alice: Account) -> None:
    logging_service = start_service(LOG_LEVEL="INFO")
    with httpx.Client(base_url=logging_service.url) as client:
        created = client.post(
            alice.tasks_url(), json={"title": "logged"}, headers={**alice.headers, "X-Request-ID": "log-1"}
        )
        client.get(alice.tasks_url(created.json()["id"]), headers={**alice.headers, "X-Request-ID": "log-2"})
        client.get("/no/such/route", headers={"X-Request-ID": "log-3"})
    logging_service.stop()

    lines = [json.loads(line) for line in logging_service.log().splitlines() if line.startswith("{")]
    requests = {line["request_id"]: line for line in lines if line.get("event") == "request"}
    assert requests["log-1"]["route"] == LIST_ROUTE
    assert requests["log-1"]["status"] == 201
    assert requests["log-1"]["user_id"] == alice.id
    assert requests["log-2"]["route"] == "/api/{user_id}/tasks/{task_id}"
    assert requests["log-2"]["method"] == "GET"
    assert isinstance(requests["log-2"]["duration_ms"], float)
    assert requests["log-3"]["status"] == 404
    assert requests["log-3"]["user_id"] is None
    assert {"time", "level"} <= set(requests["log-1"])
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*", line["time"]) for line in requests.values())
    assert alice.token not in logging_service.log()


def test_metrics_add_up_the_traffic_of_every_worker(start_service: Callable[..., ApiServer], alice: Account) -> None:
    two_worker_service = start_service(WEB_CONCURRENCY="2")

    def scrape_once() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        # A new connection per scrape, so the scrapes land on either worker.
        response = httpx.get(f"{two_worker_service.url}/metrics", headers={"Connection": "close"})
        assert response.status_code == 200
        return samples(response.text)

    before = scrape_once()
    for _ in range(20):
        # one connection per request: uvicorn's workers share the socket, so the requests spread over both
        response = httpx.get(
            f"{two_worker_service.url}{alice.tasks_url()}", headers={**alice.headers, "Connection": "close"}
        )
        assert response.status_code == 200
    scrapes = [scrape_once() for _ in range(4)]

    requests = "todo_api_requests_total"
    moved = [
        value(after, requests, path=LIST_ROUTE, status_code="200")
        - value(before, requests, path=LIST_ROUTE, status_code="200")
        for after in scrapes
    ]
    assert moved == [20, 20, 20, 20]  # whichever worker answers, it reports both
    assert value(scrapes[-1], "todo_api_db_pool_connections_max") == 32  # 2 workers x 16


def test_a_client_that_hangs_up_mid_body_is_counted_as_its_failure_not_a_server_error(
    start_service: Callable[..., ApiServer], alice: Account
) -> None:
    service = start_service(LOG_LEVEL="INFO")
    body = b'{"title": "cut short'
    head = (
        f"POST {alice.tasks_url()} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\nX-Request-ID: cut-1\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(head.encode() + body)  # headers and part of the body, then the client hangs up

    def logged() -> list[dict[str, Any]]:
        return [json.loads(line) for line in service.log().splitlines() if '"cut-1"' in line]

    wait_until(lambda: any(line.get("event") == "request" for line in logged()), 30, "the request line of cut-1")
    request_line = next(line for line in logged() if line.get("event") == "request")
    assert request_line["status"] == 400
    assert not [line for line in logged() if line.get("event") == "server.error"]
    scrape = samples(httpx.get(f"{service.url}/metrics").text)
    assert value(scrape, "todo_api_requests_total", path=LIST_ROUTE, status_code="400") == 1
    assert value(scrape, "todo_api_requests_total", path=LIST_ROUTE, status_code="500") == 0
