"""Scratch PostgreSQL databases for the test session and the benchmark, and what a database holds for a user."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_engine
from app.models import IdempotencyKey, Task, TaskTombstone, User

#: The PostgreSQL server tests make their databases on (any existing database to connect to as admin).
TEST_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def _admin(admin_url: str) -> AsyncIterator[asyncpg.Connection]:
    url = make_url(admin_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database,
        timeout=5,
    )  # fmt: skip
    try:
        yield connection
    finally:
        await connection.close()


async def create_database(admin_url: str, name: str) -> str:
    """(Re)create database ``name`` on the server of ``admin_url``; return its asyncpg URL."""
    async with _admin(admin_url) as connection:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name``, disconnecting whoever is still in it."""
    async with _admin(admin_url) as connection:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def row_locked(db: AsyncEngine, backend: str, task_id: str) -> AsyncIterator[None]:
    """Hold a write lock on the task (PostgreSQL) or on the whole database (SQLite) from outside the service."""
    async with db.connect() as connection:
        if backend == "postgresql":
            await connection.execute(text("BEGIN"))
            await connection.execute(text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": task_id})
        else:
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            await connection.rollback()


@contextmanager
def scratch_postgres(prefix: str = "todo_test") -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server, dropped afterwards.

    An unreachable server skips locally and fails under ``CI=true`` (CI never passes by skipping).
    """
    from tests.support.prerequisites import require  # noqa: PLC0415 - the benchmark uses this module without pytest

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        url = asyncio.run(create_database(TEST_ADMIN_URL, name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        require(False, f"PostgreSQL at {make_url(TEST_ADMIN_URL).render_as_string()} is not reachable: {exc!r}")
        raise
    try:
        yield url
    finally:
        asyncio.run(drop_database(TEST_ADMIN_URL, name))


async def rows_held_for(db: AsyncEngine, user_id: str) -> dict[str, int]:
    """How many rows of each table hold something of ``user_id`` (every table the service keeps per user)."""
    async with db.connect() as connection:
        return {
            table.__tablename__: int(
                await connection.scalar(
                    select(func.count())
                    .select_from(table)
                    .where(
                        (table.id if table is User else table.user_id) == user_id  # type: ignore[attr-defined]
                    )
                )
                or 0
            )
            for table in (User, Task, TaskTombstone, IdempotencyKey)
        }


def stored_for(database_url: str, user_id: str) -> dict[str, int]:
    """:func:`rows_held_for`, from synchronous code, given the database's URL."""

    async def count() -> dict[str, int]:
        engine = create_engine(Settings(database_url=database_url), pooled=False)
        try:
            return await rows_held_for(engine, user_id)
        finally:
            await engine.dispose()

    # A thread of its own: a caller may already run an event loop (Playwright's sync API does).
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, count()).result()
