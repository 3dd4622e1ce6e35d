"""Bounded resources: per-user and per-address rate limits (in memory and shared through Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.factories import Account
from tests.support.issuer import HS_SECRET, JWKSServer
from tests.support.prerequisites import TEST_REDIS_URL, require_redis
from tests.support.tokens import claims, hs256_by_hand


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A Redis database for the test, emptied before and after; required under CI=true."""
    require_redis(TEST_REDIS_URL)
    client = aioredis.from_url(TEST_REDIS_URL)
    await client.flushdb()
    yield TEST_REDIS_URL
    await client.flushdb()
    await client.aclose()


async def test_a_user_over_the_limit_gets_429_with_retry_after(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account, bob: Account
) -> None:
    async with app_client(jwks_server, rate_limit_per_minute=5) as client:
        statuses = [(await client.get(alice.tasks_url(), headers=alice.headers)).status_code for _ in range(5)]
        limited = await client.get(alice.tasks_url(), headers=alice.headers)
        other_user = await client.get(bob.tasks_url(), headers=bob.headers)
        health = await client.get("/health")

    assert statuses == [200] * 5
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert 0 < int(limited.headers["retry-after"]) <= 60
    assert other_user.status_code == 200  # limits are per user
    assert health.status_code == 200


async def test_successful_responses_advertise_the_remaining_budget(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, rate_limit_per_minute=10) as client:
        first = await client.get(alice.tasks_url(), headers=alice.headers)
        second = await client.get(alice.tasks_url(), headers=alice.headers)

    assert first.headers["ratelimit-limit"] == "10"
    assert int(second.headers["ratelimit-remaining"]) == int(first.headers["ratelimit-remaining"]) - 1


async def test_requests_without_a_valid_token_are_limited_per_address(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, rate_limit_anonymous_per_minute=3, rate_limit_per_minute=100) as client:
        anonymous = [
            (await client.get(alice.tasks_url(), headers={"Authorization": "Bearer forged"})).status_code
            for _ in range(4)
        ]
        authenticated = await client.get(alice.tasks_url(), headers=alice.headers)

    assert anonymous == [401, 401, 401, 429]
    assert authenticated.status_code == 200  # a valid token is counted against its user, not the address


@pytest.mark.parametrize(
    "header",
    [{"alg": "HS256", "crit": ["exp"]}, {"alg": "HS256", "crit": []}, {"alg": "HS256", "kid": 5}],
    ids=["crit", "empty crit", "numeric kid"],
)
async def test_tokens_the_verifier_chokes_on_are_counted_like_any_other(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account, header: dict[str, Any]
) -> None:
    token = hs256_by_hand(claims(alice.id), HS_SECRET.encode(), header)
    async with app_client(jwks_server, rate_limit_anonymous_per_minute=3, rate_limit_per_minute=100) as client:
        statuses = [
            (await client.get(alice.tasks_url(), headers={"Authorization": f"Bearer {token}"})).status_code
            for _ in range(4)
        ]

    assert statuses == [401, 401, 401, 429]


async def test_health_and_docs_are_never_limited(app_client: Callable[..., Any]) -> None:
    async with app_client(None, rate_limit_anonymous_per_minute=1, rate_limit_per_minute=1) as client:
        statuses = {
            (await client.get(path)).status_code for path in ["/health", "/health/ready", "/schema/openapi.json"] * 3
        }

    assert statuses == {200}


async def test_a_limit_of_zero_turns_limiting_off(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, rate_limit_per_minute=0) as client:
        responses = [await client.get(alice.tasks_url(), headers=alice.headers) for _ in range(30)]

    assert {r.status_code for r in responses} == {200}
    assert "ratelimit-limit" not in responses[0].headers


async def test_instances_sharing_redis_share_one_limit(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account, redis_url: str
) -> None:
    settings = {"rate_limit_per_minute": 6, "redis_url": redis_url}
    async with app_client(jwks_server, **settings) as first, app_client(jwks_server, **settings) as second:
        statuses = [
            (await (first if n % 2 else second).get(alice.tasks_url(), headers=alice.headers)).status_code
            for n in range(8)
        ]

    assert statuses == [200] * 6 + [429] * 2


async def test_the_limit_lives_in_redis(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account, redis_url: str
) -> None:
    async with app_client(jwks_server, rate_limit_per_minute=50, redis_url=redis_url) as client:
        await asyncio.gather(*(client.get(alice.tasks_url(), headers=alice.headers) for _ in range(3)))

    redis = aioredis.from_url(redis_url)
    try:
        keys = [key.decode() for key in await redis.keys("todo-api:rate-limit*")]
    finally:
        await redis.aclose()
    assert any(alice.id in key for key in keys), keys


async def test_an_unreachable_redis_does_not_take_the_api_down(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    unreachable = f"redis://127.0.0.1:9/{uuid.uuid4().int % 16}"
    async with app_client(jwks_server, rate_limit_per_minute=2, redis_url=unreachable) as client:
        statuses = [(await client.get(alice.tasks_url(), headers=alice.headers)).status_code for _ in range(4)]

    assert statuses == [200] * 4  # fails open: unlimited, but served


@dataclass
class HungRedis:
    """A server on loopback that accepts connections and never answers: a frozen Redis, or a dropped route."""

    url: str
    accepted: list[socket.socket] = field(default_factory=list)


@contextmanager
def hung_redis() -> Iterator[HungRedis]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.1)
        server = HungRedis(url=f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    server.accepted.append(listener.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            stop.set()
            thread.join()
            for connection in server.accepted:
                connection.close()


async def test_a_hung_redis_is_asked_once_then_left_alone_for_a_while(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    with hung_redis() as redis_server:
        async with app_client(jwks_server, rate_limit_per_minute=2, redis_url=redis_server.url) as client:
            statuses = [(await client.get(alice.tasks_url(), headers=alice.headers)).status_code for _ in range(5)]
        connections = len(redis_server.accepted)

    assert statuses == [200] * 5  # fails open
    # The first request waited out the client's socket timeout and opened the breaker; the other four were
    # served without asking Redis (without the breaker: five connections, each waited on for 2 s).
    assert connections == 1
