"""Alembic environment: runs migrations on the engine that app.db built from DATABASE_URL."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from advanced_alchemy.base import metadata_registry
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import app.models  # noqa: F401  - registers the tables on the metadata
from app.db import MIGRATION_LOCK_KEY, MIGRATION_LOCK_TIMEOUT

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)


def _compare_type(
    _context: object, _inspected: object, _metadata: object, _inspected_type: object, metadata_type: object
) -> bool | None:
    # Advanced Alchemy's portable types reflect as their per-dialect implementation (uuid, timestamptz);
    # comparing those would report a change on every run.
    if isinstance(metadata_type, (GUID, DateTimeUTC)):
        return False
    return None


def _include_object(obj: object, _name: str | None, type_: str, _reflected: bool, _compare_to: object) -> bool:
    # An index declared for one dialect only (``Index(...).ddl_if(dialect="postgresql")``: the trigram indexes)
    # does not exist elsewhere, and is not drift there. Alembic's comparison does not read ``ddl_if`` itself.
    if type_ == "index":
        ddl_if = getattr(obj, "_ddl_if", None)
        dialect = getattr(ddl_if, "dialect", None)
        if dialect is not None and dialect != context.get_context().dialect.name:
            return False
    return True


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata_registry.get(config.bind_key),
        version_table=config.version_table_name,
        compare_type=_compare_type,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=True,
        user_module_prefix="sa.",
        include_object=_include_object,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    _configure(url=config.db_url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Instances starting together must not apply the same migration twice: the first takes this lock,
            # the others wait, then read the version it committed and find nothing to do. A transaction-level
            # lock, so it also holds through a transaction-mode pooler.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            # A DDL statement queued behind a long transaction holds up every request queued behind *it*; give
            # up after a few seconds instead (the migration rolls back whole and the next start retries it).
            connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"))
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = cast("AsyncEngine", config.engine)
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
