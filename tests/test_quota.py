"""The per-user task quota: a create beyond MAX_TASKS_PER_USER is 409 and writes nothing, even under races."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Task, User
from tests.support.factories import Account, create_task
from tests.support.issuer import JWKSServer

LIMIT = 5


async def stored(db: AsyncEngine, account: Account) -> tuple[int, int]:
    """The owner's task rows and the count kept on the user row."""
    async with db.connect() as connection:
        rows = await connection.scalar(select(func.count()).select_from(Task).where(Task.user_id == account.id))
        kept = await connection.scalar(select(User.task_count).where(User.id == account.id))
    return int(rows or 0), int(kept or 0)


async def test_a_create_beyond_the_quota_is_409_naming_the_limit(
    app_client: Callable[..., Any], jwks_server: JWKSServer, db: AsyncEngine, alice: Account
) -> None:
    async with app_client(jwks_server, max_tasks_per_user=LIMIT) as client:
        for n in range(LIMIT):
            await create_task(client, alice, title=f"t{n}")

        refused = await client.post(alice.tasks_url(), json={"title": "one too many"}, headers=alice.headers)

    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert f"limit of {LIMIT} tasks" in refused.json()["detail"]
    assert await stored(db, alice) == (LIMIT, LIMIT)


async def test_deleting_a_task_makes_room_for_another(
    app_client: Callable[..., Any], jwks_server: JWKSServer, db: AsyncEngine, alice: Account
) -> None:
    async with app_client(jwks_server, max_tasks_per_user=LIMIT) as client:
        tasks = [await create_task(client, alice) for _ in range(LIMIT)]
        await client.delete(alice.tasks_url(tasks[0]["id"]), headers=alice.headers)

        again = await client.post(alice.tasks_url(), json={"title": "room again"}, headers=alice.headers)

    assert again.status_code == 201
    assert await stored(db, alice) == (LIMIT, LIMIT)


async def test_concurrent_creates_never_overshoot_the_quota(
    app_client: Callable[..., Any], jwks_server: JWKSServer, db: AsyncEngine, alice: Account
) -> None:
    async with app_client(jwks_server, max_tasks_per_user=LIMIT, max_concurrent_requests_per_user=20) as client:
        responses = await asyncio.gather(
            *(client.post(alice.tasks_url(), json={"title": f"race {n}"}, headers=alice.headers) for n in range(20))
        )

    assert sorted(r.status_code for r in responses) == [201] * LIMIT + [409] * (20 - LIMIT)
    assert await stored(db, alice) == (LIMIT, LIMIT)


async def test_the_quota_is_per_user(
    app_client: Callable[..., Any], jwks_server: JWKSServer, alice: Account, bob: Account
) -> None:
    async with app_client(jwks_server, max_tasks_per_user=1) as client:
        await create_task(client, alice)
        full = await client.post(alice.tasks_url(), json={"title": "no"}, headers=alice.headers)
        other = await client.post(bob.tasks_url(), json={"title": "yes"}, headers=bob.headers)

    assert full.status_code == 409
    assert other.status_code == 201


async def test_the_kept_count_follows_deletes_made_behind_the_service(
    client: Any, db: AsyncEngine, alice: Account
) -> None:
    for _ in range(3):
        await create_task(client, alice)
    async with db.begin() as connection:  # an operator's DELETE, bypassing the API
        await connection.execute(Task.__table__.delete().where(Task.user_id == alice.id))

    assert await stored(db, alice) == (0, 0)
