"""A database that is unreachable, a hung query or an exhausted pool: 503 with Retry-After after the configured
wait, never a hang or a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.databases import row_locked
from tests.support.factories import Account, create_task
from tests.support.issuer import JWKSServer
from tests.support.servers import app_of, until

# A test-side bound so a regression fails instead of hanging the suite; the service's own limits are 1 s.
GUARD_SECONDS = 20
UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:9/unreachable"


def connections_in_use(client: httpx.AsyncClient) -> int:
    """Connections checked out of the pool of the app behind ``client``."""
    engine = app_of(client).plugins.get(SQLAlchemyPlugin).config[0].get_engine()
    return int(engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]  # a QueuePool


@pytest.fixture
def slow_settings() -> dict[str, Any]:
    return {
        "database_pool_size": 1,
        "database_max_overflow": 0,
        "database_pool_timeout": 0.5,
        "database_statement_timeout": 1,
    }


async def test_a_statement_blocked_past_its_timeout_is_503(
    app_client: Callable[..., Any],
    jwks_server: JWKSServer,
    db: AsyncEngine,
    backend: str,
    alice: Account,
    slow_settings: dict[str, Any],
) -> None:
    async with app_client(jwks_server, **slow_settings) as client:
        task = await create_task(client, alice, title="locked")
        async with row_locked(db, backend, task["id"]):
            response = await asyncio.wait_for(
                client.put(alice.tasks_url(task["id"]), json={"title": "blocked"}, headers=alice.headers),
                GUARD_SECONDS,
            )
        after = await client.get(alice.tasks_url(task["id"]), headers=alice.headers)

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert after.status_code == 200  # the service recovered by itself
    assert after.json()["title"] == "locked"  # and the timed-out write left nothing behind


async def test_an_exhausted_pool_answers_503_instead_of_queueing_forever(
    app_client: Callable[..., Any],
    jwks_server: JWKSServer,
    db: AsyncEngine,
    backend: str,
    alice: Account,
    bob: Account,
    slow_settings: dict[str, Any],
) -> None:
    async with app_client(jwks_server, **slow_settings) as client:
        task = await create_task(client, alice, title="held")
        await client.get(bob.tasks_url(), headers=bob.headers)  # provision bob outside the lock
        async with row_locked(db, backend, task["id"]):
            # The first request holds the only connection while it waits on the lock; the second finds none.
            holder = asyncio.create_task(
                client.put(alice.tasks_url(task["id"]), json={"title": "x"}, headers=alice.headers)
            )
            await until(lambda: connections_in_use(client) == 1, "the first request did not take the connection")
            waiter = await asyncio.wait_for(client.get(bob.tasks_url(), headers=bob.headers), GUARD_SECONDS)
            held = await asyncio.wait_for(holder, GUARD_SECONDS)
        recovered = await client.get(bob.tasks_url(), headers=bob.headers)

    assert waiter.status_code == 503, waiter.text
    assert waiter.headers["retry-after"]
    assert held.status_code == 503
    assert recovered.status_code == 200


async def test_requests_while_the_database_is_down_get_503_not_500(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, database_url=UNREACHABLE, database_connect_timeout=1) as client:
        responses = [
            await client.get(alice.tasks_url(), headers=alice.headers),
            await client.post(alice.tasks_url(), json={"title": "lost?"}, headers=alice.headers),
        ]

    for response in responses:
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["status"] == 503
