"""Headers on every response: security headers, a request id, and no caching of anyone's data."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.factories import Account


def requests_to_check(alice: Account) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", alice.tasks_url(), {"headers": alice.headers}),
        ("POST", alice.tasks_url(), {"headers": alice.headers, "json": {"title": "headers"}}),
        ("GET", alice.tasks_url(), {}),  # 401
        ("GET", alice.tasks_url("not-a-uuid"), {"headers": alice.headers}),  # 422
        ("GET", "/no/such/route", {}),  # the router's own 404
        ("DELETE", "/health", {}),  # 405
        ("GET", "/health", {}),
        ("GET", "/schema/openapi.json", {}),
    ]


async def test_every_response_carries_the_security_headers(client: httpx.AsyncClient, alice: Account) -> None:
    for method, url, options in requests_to_check(alice):
        response = await client.request(method, url, **options)
        assert response.headers["x-content-type-options"] == "nosniff", (method, url)
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"].startswith("default-src 'none'"), (method, url)
        assert response.headers["x-request-id"]


async def test_api_responses_are_never_cached(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(alice.tasks_url(), headers=alice.headers)

    assert response.headers["cache-control"] == "no-store"


async def test_the_docs_page_has_its_own_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/schema/scalar")

    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


async def test_a_safe_incoming_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "frontend-1234.abc"})

    assert response.headers["x-request-id"] == "frontend-1234.abc"


@pytest.mark.parametrize("incoming", ["", "x" * 200, "bad id with spaces", "inject\r\nheader"])
async def test_an_unsafe_request_id_is_replaced(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": incoming.encode("latin-1")})

    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert len(generated) == 32


async def test_request_ids_are_unique(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(20)}

    assert len(ids) == 20
