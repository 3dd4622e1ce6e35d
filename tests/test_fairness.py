"""One user cannot slow down another: a bounded share of the pool per user, a quota, and indexed search.

The database pool is shared by every user of a process. A user's requests beyond
``MAX_CONCURRENT_REQUESTS_PER_USER`` wait in a short line (then 429), so however many slow requests one user
sends, the rest of the pool stays free for everyone else. Latency figures live in the benchmark
(``python -m bench.fairness``), not here: these tests assert who gets served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.concurrency import UserConcurrencyLimiter
from tests.support.databases import row_locked
from tests.support.factories import Account, create_task
from tests.support.issuer import JWKSServer
from tests.support.servers import app_of, until

#: A test-side bound so a regression fails instead of hanging the suite.
GUARD_SECONDS = 20


def limiter_of(client: httpx.AsyncClient) -> UserConcurrencyLimiter:
    limiter: UserConcurrencyLimiter = app_of(client).state.concurrency
    return limiter


async def test_one_users_stuck_requests_leave_the_pool_to_others(
    app_client: Callable[..., Any], jwks_server: JWKSServer, db: AsyncEngine, backend: str, alice: Account, bob: Account
) -> None:
    settings = {"database_pool_size": 4, "database_pool_timeout": 1, "max_concurrent_requests_per_user": 2}
    async with app_client(jwks_server, **settings) as client:
        task = await create_task(client, alice, title="contested")
        await client.get(bob.tasks_url(), headers=bob.headers)  # provision bob before the lock
        limiter = limiter_of(client)
        async with row_locked(db, backend, task["id"]):
            # 20 writes that cannot finish while the lock is held: without a per-user bound they would hold
            # all four connections, and bob would wait out the pool timeout and get 503.
            stuck = [
                asyncio.create_task(
                    client.put(alice.tasks_url(task["id"]), json={"title": f"w{n}"}, headers=alice.headers)
                )
                for n in range(20)
            ]
            await until(
                lambda: limiter.in_flight(alice.id) == 2 and limiter.waiting(alice.id) == 18,
                "alice's writes did not take her two slots and line up behind them",
            )
            reads = [await client.get(bob.tasks_url(), headers=bob.headers) for _ in range(5)]
        finished = await asyncio.wait_for(asyncio.gather(*stuck), GUARD_SECONDS)

    assert [r.status_code for r in reads] == [200] * 5
    assert {r.status_code for r in finished} <= {200, 429, 503}


async def test_requests_over_the_bound_are_served_in_turn_when_they_fit_in_the_wait(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, max_concurrent_requests_per_user=1) as client:
        await create_task(client, alice)
        responses = await asyncio.gather(*(client.get(alice.tasks_url(), headers=alice.headers) for _ in range(10)))

    assert [r.status_code for r in responses] == [200] * 10


async def test_searches_of_a_full_account_never_cost_another_user_a_503(
    app_client: Callable[..., Any],
    jwks_server: JWKSServer,
    db_insert_tasks: Callable[..., Awaitable[None]],
    alice: Account,
    bob: Account,
) -> None:
    quota = 10_000
    await db_insert_tasks(alice, quota)
    settings = {"database_pool_size": 4, "max_tasks_per_user": quota}
    async with app_client(jwks_server, **settings) as client:
        await create_task(client, bob)
        refused = await client.post(alice.tasks_url(), json={"title": "over"}, headers=alice.headers)

        async def bob_reads() -> list[int]:
            return [(await client.get(bob.tasks_url(), headers=bob.headers)).status_code for _ in range(20)]

        searches, reads = await asyncio.gather(
            asyncio.gather(*(client.get(f"{alice.tasks_url()}?q=task%2000", headers=alice.headers) for _ in range(20))),
            bob_reads(),
        )

    assert refused.status_code == 409
    assert reads == [200] * 20
    assert {r.status_code for r in searches} <= {200, 429}
    found = next(r for r in searches if r.status_code == 200)
    assert int(found.headers["x-total-count"]) == 1000  # "bulk task 00000" to "bulk task 00999"


async def test_a_user_waiting_in_line_holds_no_slot_after_giving_up() -> None:
    limiter = UserConcurrencyLimiter(1, wait_seconds=0)
    assert await limiter.acquire("u")

    gave_up = await limiter.acquire("u")

    assert gave_up is False
    assert (limiter.in_flight("u"), limiter.waiting("u")) == (1, 0)
    limiter.release("u")
    assert (limiter.in_flight("u"), limiter.waiting("u")) == (0, 0)


async def test_a_freed_slot_goes_to_the_first_in_line() -> None:
    limiter = UserConcurrencyLimiter(1, wait_seconds=60)
    assert await limiter.acquire("u")
    order: list[int] = []

    async def wait(n: int) -> None:
        assert await limiter.acquire("u")
        order.append(n)
        limiter.release("u")

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await until(lambda: limiter.waiting("u") == 3, "the three did not line up")
    limiter.release("u")
    await asyncio.gather(*waiters)

    assert order == [0, 1, 2]
    assert (limiter.in_flight("u"), limiter.waiting("u")) == (0, 0)


async def test_a_cancelled_waiter_passes_on_nothing_it_does_not_hold() -> None:
    limiter = UserConcurrencyLimiter(1, wait_seconds=60)
    assert await limiter.acquire("u")
    waiter = asyncio.create_task(limiter.acquire("u"))
    await until(lambda: limiter.waiting("u") == 1, "the waiter did not line up")

    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limiter.release("u")

    assert (limiter.in_flight("u"), limiter.waiting("u")) == (0, 0)
    assert await limiter.acquire("u")  # and the user is served again
