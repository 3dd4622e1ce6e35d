"""Retention: tombstones older than SYNC_TOMBSTONE_RETENTION_DAYS are purged, and the change feed then answers
410 to a revision that could have missed one of them (never a feed silently short of a deletion)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, upgrade_schema
from app.models import TaskTombstone, User, utcnow
from app.retention import PURGE_LOCK_KEY, RetentionJob, purge_tombstones
from tests.support.factories import Account, create_task

RETENTION = timedelta(days=30)


async def age_tombstones(db: AsyncEngine, account: Account, days: int) -> None:
    """Move the account's tombstones ``days`` into the past, as if the deletions were that old."""
    async with db.begin() as connection:
        await connection.execute(
            update(TaskTombstone)
            .where(TaskTombstone.user_id == account.id)
            .values(deleted_at=utcnow() - timedelta(days=days))
        )


async def state(db: AsyncEngine, account: Account) -> tuple[list[int], int]:
    async with db.connect() as connection:
        kept = await connection.scalars(
            select(TaskTombstone.revision).where(TaskTombstone.user_id == account.id).order_by(TaskTombstone.revision)
        )
        through = await connection.scalar(select(User.purged_through).where(User.id == account.id))
    return list(kept), int(through or 0)


async def delete_tasks(client: httpx.AsyncClient, account: Account, count: int) -> list[dict[str, object]]:
    tasks = [await create_task(client, account) for _ in range(count)]
    for task in tasks:
        await client.delete(account.tasks_url(task["id"]), headers=account.headers)
    return tasks


def job(db: AsyncEngine, days_later: int = 0) -> RetentionJob:
    sessions = async_sessionmaker(db, expire_on_commit=False)
    return RetentionJob(
        sessions, [(purge_tombstones, RETENTION)], interval=3600, clock=lambda: utcnow() + timedelta(days=days_later)
    )


async def test_old_tombstones_go_and_purged_through_rises(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    await delete_tasks(client, alice, 2)  # revisions 1-4: tombstones at 3 and 4
    await age_tombstones(db, alice, days=31)
    await delete_tasks(client, alice, 1)  # a fresh tombstone at 6

    removed = await job(db).run_once()

    assert removed is not None
    assert removed["purge_tombstones"] >= 2
    assert await state(db, alice) == ([6], 4)


async def test_tombstones_within_the_retention_stay(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    await delete_tasks(client, alice, 2)
    await age_tombstones(db, alice, days=29)

    await job(db).run_once()

    assert await state(db, alice) == ([3, 4], 0)


async def test_the_clock_decides_what_is_old(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    await delete_tasks(client, alice, 1)

    await job(db, days_later=31).run_once()

    assert await state(db, alice) == ([], 2)


async def test_after_a_purge_a_stale_revision_is_410_and_a_current_one_is_not(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    await delete_tasks(client, alice, 2)
    await age_tombstones(db, alice, days=31)
    await job(db).run_once()

    stale = await client.get(alice.tasks_url("changes"), params={"since": 2}, headers=alice.headers)
    current = await client.get(alice.tasks_url("changes"), params={"since": 4}, headers=alice.headers)
    full = await client.get(alice.tasks_url("changes"), params={"since": 0}, headers=alice.headers)

    assert stale.status_code == 410
    assert current.status_code == 200
    assert full.json() == {"changes": [], "revision": 4, "has_more": False}


async def test_purged_through_never_moves_back(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    await delete_tasks(client, alice, 1)
    async with db.begin() as connection:
        await connection.execute(update(User).where(User.id == alice.id).values(purged_through=10))
    await age_tombstones(db, alice, days=31)

    async with AsyncSession(db) as session:
        await purge_tombstones(session, utcnow() - RETENTION)

    assert await state(db, alice) == ([], 10)


async def test_a_round_is_skipped_while_another_process_holds_it(postgres_database_url: str) -> None:
    engine = create_engine(Settings(database_url=postgres_database_url), pooled=False)
    await asyncio.to_thread(upgrade_schema, Settings(database_url=postgres_database_url))
    try:
        async with engine.connect() as holder:
            # Hold the round's lock as another process in the middle of a round would.
            await holder.begin()
            await holder.execute(select(func.pg_advisory_xact_lock(PURGE_LOCK_KEY)))
            assert await job(engine).run_once() is None
            await holder.rollback()
        assert await job(engine).run_once() == {"purge_tombstones": 0}
    finally:
        await engine.dispose()
