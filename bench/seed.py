"""Seeding benchmark data through the real schema: COPY for thousands of rows, generate_series for millions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.engine import make_url

__all__ = (
    "DELETION_EVERY",
    "Population",
    "connect",
    "owners_with_completed_tasks",
    "seed_bulk",
    "seed_feed",
    "seed_users",
)

#: In a feed account's history, one change in this many is a deletion (a tombstone); the others are updates.
DELETION_EVERY = 10


@dataclass
class Population:
    """Users (by id) and their task ids, as the load generator needs them."""

    tasks: dict[str, list[uuid.UUID]]
    #: Each user's revision, as a full sync of the change feed reports it (feed accounts only).
    revisions: dict[str, int] = field(default_factory=dict)


async def connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )


async def seed_users(
    database_url: str, users: int, tasks_per_user: int, *, prefix: str, completed_every: int = 3
) -> Population:
    """``users`` users with ``tasks_per_user`` tasks each, every ``completed_every``-th of them completed (0: none),
    with COPY; ids are returned for the load generator."""
    now = datetime.now(UTC)
    user_ids = [f"{prefix}{n:08d}".ljust(32, "x") for n in range(users)]
    tasks: dict[str, list[uuid.UUID]] = {user: [] for user in user_ids}
    rows = []
    for user in user_ids:
        for n in range(tasks_per_user):
            task_id = uuid.uuid4()
            tasks[user].append(task_id)
            stamp = now - timedelta(seconds=tasks_per_user - n)
            completed = completed_every > 0 and n % completed_every == 0
            rows.append((task_id, user, f"task {n} of {user[:12]}", None, completed, stamp, stamp, 1))
    connection = await connect(database_url)
    try:
        await connection.copy_records_to_table(
            "users",
            records=[(user, f"{user}@bench.example", "Bench User", now, now) for user in user_ids],
            columns=["id", "email", "name", "created_at", "updated_at"],
        )
        await connection.copy_records_to_table(
            "tasks",
            records=rows,
            columns=["id", "user_id", "title", "description", "completed", "created_at", "updated_at", "version"],
        )
        # Tables in steady state, as autovacuum would leave them: the visibility map that index-only scans use set,
        # and the dead versions gone of the owner rows that the task triggers rewrote once per task (left there,
        # every look-up of the 10 000-task user's row reads ~200 pages of them).
        await connection.execute("VACUUM ANALYZE users, tasks")
    finally:
        await connection.close()
    return Population(tasks=tasks)


async def seed_feed(database_url: str, users: int, changes: int, *, prefix: str) -> Population:
    """``users`` users whose last ``changes`` changes each concern a task of their own, so that the change feed
    from ``since = revision - n`` holds exactly ``n`` changes, for any ``n`` up to ``changes``.

    Each user gets ``changes`` tasks, then every one of them changes once more, in the order they were created:
    one in :data:`DELETION_EVERY` deleted (a tombstone), the others updated as a toggle does (completion flipped,
    new version). The triggers stamp the revisions, as for any write; a task's latest change is the only one the
    feed shows, so its first revision (the insert) lies before every mark. The deletion comes first in each
    group of ten: the newest change of all is an update. ``revisions`` holds each user's revision afterwards.
    """
    population = await seed_users(database_url, users, changes, prefix=prefix)
    connection = await connect(database_url)
    try:
        # One group of ten at a time for every user at once: 2 statements per group, whatever the user count.
        for first in range(0, changes, DELETION_EVERY):
            group = [task_ids[first : first + DELETION_EVERY] for task_ids in population.tasks.values()]
            await connection.execute("DELETE FROM tasks WHERE id = ANY($1::uuid[])", [ids[0] for ids in group])
            await connection.execute(
                "UPDATE tasks SET completed = NOT completed, updated_at = clock_timestamp(), version = version + 1 "
                "WHERE id = ANY($1::uuid[])",
                [task_id for ids in group for task_id in ids[1:]],
            )
        await connection.execute("VACUUM ANALYZE users, tasks, task_tombstones")
        rows = await connection.fetch(
            "SELECT id, revision FROM users WHERE id = ANY($1::text[])", list(population.tasks)
        )
    finally:
        await connection.close()
    live = {
        user: [t for n, t in enumerate(task_ids) if n % DELETION_EVERY] for user, task_ids in population.tasks.items()
    }
    return Population(tasks=live, revisions={row["id"]: row["revision"] for row in rows})


async def owners_with_completed_tasks(database_url: str, users: list[str]) -> int:
    """How many of ``users`` still hold a completed task."""
    connection = await connect(database_url)
    try:
        count = await connection.fetchval(
            "SELECT count(DISTINCT user_id) FROM tasks WHERE user_id = ANY($1::text[]) AND completed", users
        )
    finally:
        await connection.close()
    return int(count)


async def seed_bulk(database_url: str, users: int, tasks_per_user: int, *, prefix: str) -> list[str]:
    """Millions of rows inside PostgreSQL (generate_series), no row crossing the wire; returns a sample of users."""
    connection = await connect(database_url)
    try:
        await connection.execute(
            """
            INSERT INTO users (id, email, name, created_at, updated_at)
            SELECT rpad($1 || lpad(n::text, 8, '0'), 32, 'x'), NULL, 'Bulk User', now(), now()
            FROM generate_series(0, $2 - 1) AS n
            """,
            prefix,
            users,
        )
        await connection.execute(
            """
            INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at, version)
            SELECT gen_random_uuid(), rpad($1 || lpad(u::text, 8, '0'), 32, 'x'), 'bulk task ' || t, NULL,
                   t % 3 = 0, now() - t * interval '1 second', now() - t * interval '1 second', 1
            FROM generate_series(0, $2 - 1) AS u, generate_series(1, $3) AS t
            """,
            prefix,
            users,
            tasks_per_user,
        )
        await connection.execute("VACUUM ANALYZE users, tasks")
        rows = await connection.fetch(
            "SELECT rpad($1 || lpad(n::text, 8, '0'), 32, 'x') AS id FROM generate_series(0, $2 - 1, $3) AS n",
            prefix,
            users,
            max(1, users // 1000),
        )
    finally:
        await connection.close()
    return [row["id"] for row in rows]
