"""Seeding benchmark data through the real schema: COPY for thousands of rows, generate_series for millions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.engine import make_url

__all__ = ("Population", "connect", "seed_bulk", "seed_users")


@dataclass
class Population:
    """Users (by id) and their task ids, as the load generator needs them."""

    tasks: dict[str, list[uuid.UUID]]


async def connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )


async def seed_users(database_url: str, users: int, tasks_per_user: int, *, prefix: str) -> Population:
    """``users`` users with ``tasks_per_user`` tasks each, with COPY; ids are returned for the load generator."""
    now = datetime.now(UTC)
    user_ids = [f"{prefix}{n:08d}".ljust(32, "x") for n in range(users)]
    tasks: dict[str, list[uuid.UUID]] = {user: [] for user in user_ids}
    rows = []
    for user in user_ids:
        for n in range(tasks_per_user):
            task_id = uuid.uuid4()
            tasks[user].append(task_id)
            stamp = now - timedelta(seconds=tasks_per_user - n)
            rows.append((task_id, user, f"task {n} of {user[:12]}", None, n % 3 == 0, stamp, stamp, 1))
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
