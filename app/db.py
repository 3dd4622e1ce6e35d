"""Database wiring: engine, sessions and migrations for PostgreSQL (asyncpg) and the embedded SQLite default."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AlembicCommands,
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.config import ConfigError, Settings

__all__ = ("DatabaseTarget", "alchemy_config", "create_engine", "parse_database_url", "upgrade_schema")

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "db" / "migrations"
ALEMBIC_INI = PROJECT_ROOT / "db" / "alembic.ini"

# libpq's sslmode values map one to one onto asyncpg's ``ssl`` argument.
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class DatabaseTarget:
    """A ``DATABASE_URL`` translated into what SQLAlchemy and the driver accept."""

    url: str
    dialect: str
    connect_args: dict[str, Any] = field(default_factory=dict)
    pooler: bool = False


def parse_database_url(raw: str, pooler: bool | None = None) -> DatabaseTarget:
    """Normalise a PostgreSQL or SQLite URL, translating libpq-only query keywords for asyncpg.

    Neon hands out URLs like ``postgresql://u:p@ep-x-pooler.region.aws.neon.tech/db?sslmode=require&channel_binding=require``;
    asyncpg rejects both keywords, so ``sslmode`` becomes asyncpg's ``ssl`` and ``channel_binding`` is dropped.
    """
    url = make_url(raw)
    if url.drivername.startswith("sqlite"):
        return DatabaseTarget(url=url.set(drivername="sqlite+aiosqlite").render_as_string(False), dialect="sqlite")

    kept: dict[str, str | tuple[str, ...]] = {}
    connect_args: dict[str, Any] = {}
    for key, value in url.query.items():
        last = value[-1] if isinstance(value, tuple) else value
        if key == "sslmode":
            if last not in _SSLMODES:
                raise ConfigError(f"DATABASE_URL: unknown sslmode {last!r}")
            connect_args["ssl"] = last
        elif key in {"ssl", "prepared_statement_cache_size"}:
            kept[key] = value
        elif key in {"application_name", "options"}:
            # Startup parameters, sent as libpq does (``options`` carries Neon's endpoint id for clients without SNI).
            connect_args.setdefault("server_settings", {})[key] = last
        else:
            logger.warning("DATABASE_URL: dropping query parameter %r, which asyncpg does not support", key)
    is_pooler = ("-pooler" in (url.host or "")) if pooler is None else pooler
    if is_pooler:
        # PgBouncer in transaction mode hands each transaction a different server connection, so
        # prepared statements must not be cached or reused by name across transactions.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    url = url.set(drivername="postgresql+asyncpg", query=kept)
    return DatabaseTarget(
        url=url.render_as_string(hide_password=False),
        dialect="postgresql",
        connect_args=connect_args,
        pooler=is_pooler,
    )


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid4().hex}__"


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """Build the engine for ``settings``; ``pooled=False`` gives a one-shot engine for migrations."""
    target = parse_database_url(settings.database_url, settings.database_pooler)
    kwargs: dict[str, Any] = {"echo": settings.database_echo}
    connect_args = dict(target.connect_args)
    if target.dialect == "postgresql":
        connect_args.setdefault("timeout", settings.database_connect_timeout)
        # Client-side limit on every statement; unlike ``SET statement_timeout`` it also works
        # through PgBouncer, which rejects unknown startup parameters.
        connect_args.setdefault("command_timeout", settings.database_statement_timeout)
    else:
        _ensure_sqlite_directory(target.url)
        connect_args.setdefault("timeout", settings.database_statement_timeout)
    kwargs["connect_args"] = connect_args

    if not pooled:
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(
            # Every request's write is a single statement, atomic on its own (see app/tasks/repository.py):
            # autocommit spares each request the BEGIN and COMMIT/ROLLBACK round trips.
            isolation_level="AUTOCOMMIT",
            # With no transaction ever open there is nothing to roll back on check-in.
            pool_reset_on_return=None,
            skip_autocommit_rollback=True,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            pool_recycle=1800,
        )
    engine = create_async_engine(target.url, **kwargs)
    if target.dialect == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked per connection;
    # WAL lets readers proceed while one writer commits.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def alchemy_config(settings: Settings, engine: AsyncEngine | None = None) -> SQLAlchemyAsyncConfig:
    """The Advanced Alchemy configuration shared by the app plugin and the migration commands."""
    return SQLAlchemyAsyncConfig(
        engine_instance=engine or create_engine(settings),
        # No autocommit handler: services commit explicitly before answering, so a failed commit becomes an
        # error response instead of a success already on the wire. The default handler only closes the
        # session, which rolls back whatever a failed request left open.
        session_config=AsyncSessionConfig(expire_on_commit=False, autoflush=False),
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            script_config=str(ALEMBIC_INI),
            version_table_name="alembic_version",
        ),
        set_default_exception_handler=False,
    )


def upgrade_schema(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; the only way the schema is ever created."""
    config = alchemy_config(settings, engine=create_engine(settings, pooled=False))
    AlembicCommands(sqlalchemy_config=config).upgrade(revision=revision)
