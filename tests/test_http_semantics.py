"""HTTP as clients expect it: every error a problem document (the framework's own too), HEAD wherever GET,
bounded request headers, and CORS a browser can use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.http_layers import MAX_REQUEST_HEADER_BYTES, MAX_REQUEST_HEADERS, MAX_REQUEST_TARGET_BYTES
from tests.support.factories import Account

FRONTEND = "http://localhost:3000"
PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == ("about:blank", status)
    assert body["detail"]
    return body


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["x-request-id"]


def preflight(method: str = "GET", headers: str = "authorization", origin: str = FRONTEND) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def create_task(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    response = await client.post(account.tasks_url(), json={"title": "semantics"}, headers=account.headers)
    assert response.status_code == 201
    task: dict[str, Any] = response.json()
    return task


# --- every error is a problem document ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("refused", "headers", "field", "named"),
    [
        ("origin", preflight(origin="https://evil.example"), "Origin", "https://evil.example"),
        ("method", preflight(method="TRACE"), "Access-Control-Request-Method", "TRACE"),
        ("header", preflight(headers="authorization, x-debug"), "Access-Control-Request-Headers", "x-debug"),
    ],
)
async def test_a_refused_cors_preflight_is_a_problem_naming_what_was_refused(
    client: httpx.AsyncClient, alice: Account, refused: str, headers: dict[str, str], field: str, named: str
) -> None:
    response = await client.options(alice.tasks_url(), headers=headers)

    body = assert_problem(response, 400)
    assert body["detail"].startswith("CORS preflight refused."), refused
    assert named in body["detail"]
    assert [error["field"] for error in body["errors"]] == [field]
    assert body["errors"][0]["source"] == "header"
    assert "access-control-allow-origin" not in response.headers
    assert_security_headers(response)


@pytest.mark.parametrize(
    "path",
    [
        "/schema/unknown",
        "/schema/index.html",
        "/schema/openapi.yaml",
        "/schema/openapi.yml",
        "/schema/swagger",
        "/schema/a/b",
        "/schema/assets/",
        "/schema/assets/missing.js",
    ],
)
async def test_unknown_docs_paths_are_404_problems_like_any_other(client: httpx.AsyncClient, path: str) -> None:
    elsewhere = await client.get("/no/such/route")

    response = await client.get(path)

    body = assert_problem(response, 404)
    assert body["title"] == elsewhere.json()["title"]
    assert_security_headers(response)


@pytest.mark.parametrize(
    ("method", "path", "options", "status"),
    [
        ("GET", "/no/such/route", {}, 404),
        ("GET", "/schema/unknown", {}, 404),
        ("DELETE", "/health", {}, 405),
        ("BREW", "/health", {}, 405),
        ("OPTIONS", "/health", {"headers": preflight(origin="https://evil.example")}, 400),
        ("POST", "/health", {"content": b"x" * (128 * 1024)}, 405),
        ("GET", "/health", {"headers": {"X-Padding": "x" * (MAX_REQUEST_HEADER_BYTES + 1)}}, 431),
        ("GET", "/health?q=" + "x" * MAX_REQUEST_TARGET_BYTES, {}, 414),
    ],
)
async def test_every_error_the_framework_answers_itself_is_a_problem(
    client: httpx.AsyncClient, method: str, path: str, options: dict[str, Any], status: int
) -> None:
    response = await client.request(method, path, **options)

    assert_problem(response, status)
    assert_security_headers(response)


async def test_errors_of_the_api_routes_the_framework_answers_are_problems(
    client: httpx.AsyncClient, alice: Account
) -> None:
    too_large = b'{"title": "' + b"x" * (64 * 1024) + b'"}'
    responses = [
        (await client.put(alice.tasks_url(), headers=alice.headers), 405),
        (await client.post(alice.tasks_url(), content=too_large, headers=alice.headers), 413),
        (
            await client.post(
                alice.tasks_url(), content=b"title", headers={**alice.headers, "Content-Type": "text/plain"}
            ),
            415,
        ),
        (await client.options(alice.tasks_url(), headers=preflight(method="TRACE")), 400),
    ]

    for response, status in responses:
        assert_problem(response, status)


# --- HEAD wherever GET ----------------------------------------------------------------------------------


async def head_cases(client: httpx.AsyncClient, account: Account) -> list[tuple[str, dict[str, str]]]:
    task = await create_task(client, account)
    return [
        (account.tasks_url(), account.headers),  # X-Total-Count
        (account.tasks_url(task["id"]), account.headers),  # ETag
        (account.tasks_url(task["id"]), {**account.headers, "If-None-Match": '"never"'}),
        (account.tasks_url(), {}),  # 401 with its challenge
        (account.tasks_url("not-a-uuid"), account.headers),  # 422
        ("/health", {}),
        ("/health/ready", {}),
        ("/schema/openapi.json", {}),
        ("/schema/scalar", {}),
        ("/schema/assets/scalar.css", {}),
        ("/no/such/route", {}),
    ]


def comparable(response: httpx.Response) -> list[tuple[str, str]]:
    """The headers that must not differ between two requests (the request id and rate-limit counters do)."""
    return sorted(
        (name, value)
        for name, value in response.headers.multi_items()
        if name != "x-request-id" and not name.startswith("ratelimit-")
    )


async def test_head_answers_exactly_as_get_without_a_body(client: httpx.AsyncClient, alice: Account) -> None:
    for url, headers in await head_cases(client, alice):
        get = await client.get(url, headers=headers)
        head = await client.head(url, headers=headers)

        assert head.status_code == get.status_code, url
        assert comparable(head) == comparable(get), url
        assert head.headers["content-length"] == str(len(get.content)), url
        assert head.content == b"", url


async def test_head_of_a_task_honours_if_none_match_like_get(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice)
    etag = (await client.head(alice.tasks_url(task["id"]), headers=alice.headers)).headers["etag"]

    response = await client.head(alice.tasks_url(task["id"]), headers={**alice.headers, "If-None-Match": etag})

    assert response.status_code == 304
    assert response.headers["etag"] == etag


async def test_allow_names_head_wherever_get_is_allowed(client: httpx.AsyncClient, alice: Account) -> None:
    task_url = alice.tasks_url("e3e70682-c209-1cac-a29f-6fbed82c07cd")
    expected = [
        ("OPTIONS", "/health", "GET, HEAD, OPTIONS"),
        ("DELETE", "/health", "GET, HEAD, OPTIONS"),  # 405
        ("OPTIONS", alice.tasks_url(), "DELETE, GET, HEAD, OPTIONS, PATCH, POST"),
        ("PUT", alice.tasks_url(), "DELETE, GET, HEAD, OPTIONS, PATCH, POST"),  # 405
        ("OPTIONS", alice.tasks_url("changes"), "GET, HEAD, OPTIONS"),
        ("OPTIONS", task_url, "DELETE, GET, HEAD, OPTIONS, PUT"),
        ("OPTIONS", f"{task_url}/complete", "OPTIONS, PATCH"),
    ]

    for method, url, allow in expected:
        response = await client.request(method, url, headers=alice.headers)
        assert response.headers["allow"] == allow, (method, url)


async def test_cors_grants_head_to_the_frontend(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.options(alice.tasks_url(), headers=preflight(method="HEAD"))

    assert response.status_code == 204
    assert "HEAD" in response.headers["access-control-allow-methods"].split(", ")


# --- request size limits --------------------------------------------------------------------------------


async def test_oversized_request_headers_are_431_before_authentication(
    client: httpx.AsyncClient, alice: Account
) -> None:
    padding = "x" * (MAX_REQUEST_HEADER_BYTES + 1)

    refused = await client.get(alice.tasks_url(), headers={"X-Padding": padding})
    under_the_limit = await client.get(
        alice.tasks_url(), headers={"X-Padding": padding[: MAX_REQUEST_HEADER_BYTES // 2]}
    )

    body = assert_problem(refused, 431)
    assert str(MAX_REQUEST_HEADER_BYTES) in body["detail"]
    assert "www-authenticate" not in refused.headers
    assert under_the_limit.status_code == 401


async def test_too_many_request_headers_are_431(client: httpx.AsyncClient, alice: Account) -> None:
    headers = {**alice.headers, **{f"X-Header-{n}": "1" for n in range(MAX_REQUEST_HEADERS)}}

    response = await client.get(alice.tasks_url(), headers=headers)

    body = assert_problem(response, 431)
    assert str(MAX_REQUEST_HEADERS) in body["detail"]


async def test_an_overlong_url_is_414(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(f"{alice.tasks_url()}?q={'x' * MAX_REQUEST_TARGET_BYTES}", headers=alice.headers)

    assert_problem(response, 414)


async def test_refused_oversized_requests_do_not_count_against_the_rate_limit(
    app_client: Callable[..., Any], alice: Account
) -> None:
    oversized = {"X-Padding": "x" * (MAX_REQUEST_HEADER_BYTES + 1)}
    async with app_client(None, rate_limit_anonymous_per_minute=2) as client:
        refused = [(await client.get(alice.tasks_url(), headers=oversized)).status_code for _ in range(3)]
        counted = [(await client.get(alice.tasks_url())).status_code for _ in range(2)]

    assert refused == [431, 431, 431]
    assert counted == [401, 401]  # not 429: the refused requests never reached the limiter


# --- CORS for the browser frontend ----------------------------------------------------------------------


async def test_a_preflight_from_the_frontend_is_granted_the_headers_it_sends(
    client: httpx.AsyncClient, alice: Account
) -> None:
    sent = "authorization, content-type, x-request-id, idempotency-key, last-event-id, if-match"
    response = await client.options(alice.tasks_url(), headers=preflight(method="POST", headers=sent))

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == FRONTEND
    allowed = set(response.headers["access-control-allow-headers"].lower().split(", "))
    assert set(sent.split(", ")) <= allowed


async def test_a_browser_may_read_the_headers_the_frontend_needs(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(alice.tasks_url(), headers={**alice.headers, "Origin": FRONTEND})

    assert response.headers["access-control-allow-origin"] == FRONTEND
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "x-total-count", "link", "location", "etag", "idempotent-replayed"} <= exposed


async def test_cors_does_not_grant_other_origins(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(alice.tasks_url(), headers={**alice.headers, "Origin": "https://evil.example"})

    assert "access-control-allow-origin" not in response.headers
