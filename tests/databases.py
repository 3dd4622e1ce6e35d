"""Creating and dropping scratch PostgreSQL databases, for the test session and the benchmark."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url


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
