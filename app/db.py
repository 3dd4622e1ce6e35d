"""Database wiring: engine, sessions and migrations for PostgreSQL (asyncpg) and the embedded SQLite default."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AlembicCommands,
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, NullPool, PoolProxiedConnection

from app.config import Settings
from app.pool import FairAsyncAdaptedQueuePool

__all__ = (
    "MIGRATION_LOCK_KEY",
    "MIGRATION_LOCK_TIMEOUT",
    "DatabaseUnreachableError",
    "after_commit",
    "alchemy_config",
    "commit",
    "create_engine",
    "transaction",
    "upgrade_schema",
    "wait_for_database",
)

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "db" / "migrations"
ALEMBIC_INI = PROJECT_ROOT / "db" / "alembic.ini"

#: ``pg_advisory_xact_lock`` key held while migrations run (db/migrations/env.py): any fixed 64-bit number.
MIGRATION_LOCK_KEY = 0x70D0_0A91_0001
#: How long one migration statement waits for a table lock before the migration gives up (and is retried).
MIGRATION_LOCK_TIMEOUT = "5s"


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """Build the engine for ``settings``; ``pooled=False`` gives a one-shot engine for migrations."""
    target = settings.database
    kwargs: dict[str, Any] = {"echo": settings.database_echo}
    connect_args = dict(target.connect_args)
    if target.dialect == "postgresql":
        connect_args.setdefault("timeout", settings.database_connect_timeout)
        if pooled:
            # Client-side limit on every request's statement; unlike ``SET statement_timeout`` it also works
            # through PgBouncer, which rejects unknown startup parameters. Not for migrations: building an
            # index may rightly take minutes (their lock waits are bounded by MIGRATION_LOCK_TIMEOUT instead).
            connect_args.setdefault("command_timeout", settings.database_statement_timeout)
    else:
        _ensure_sqlite_directory(target.url)
        connect_args.setdefault("timeout", settings.database_statement_timeout)
    kwargs["connect_args"] = connect_args

    if not pooled:
        kwargs["poolclass"] = NullPool
    else:
        if not target.pooler:
            kwargs.update(
                # Every request's write is a single statement, atomic on its own (see app/tasks/repository.py):
                # autocommit spares each request the BEGIN and COMMIT/ROLLBACK round trips. Not behind a
                # transaction-mode pooler: there only a transaction keeps a statement's prepare and execute on
                # the same server connection.
                isolation_level="AUTOCOMMIT",
                # With no transaction ever open there is nothing to roll back on check-in.
                pool_reset_on_return=None,
                skip_autocommit_rollback=True,
            )
        url = make_url(target.url)
        dialect = cast("type[DefaultDialect]", url.get_dialect())  # both of ours are
        if issubclass(dialect.get_pool_class(url), AsyncAdaptedQueuePool):
            # Wherever SQLAlchemy would queue for connections (not an in-memory SQLite's single one): first come,
            # first served. Its own queue lets newcomers take a returned connection ahead of those already
            # waiting, which is what made the 99th percentile (app/pool.py).
            kwargs["poolclass"] = FairAsyncAdaptedQueuePool
        kwargs.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            pool_recycle=1800,
        )
    engine = create_async_engine(target.url, **kwargs)
    if target.dialect == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    elif pooled:
        _ping_idle_connections(engine, settings.database_ping_after_idle_seconds)
    return engine


#: The isolation level a :func:`transaction` takes on each backend, whose pooled engine runs in autocommit.
_TRANSACTIONAL_LEVELS = {"postgresql": "READ COMMITTED", "sqlite": "SERIALIZABLE"}
#: Set in ``session.info`` while :func:`transaction` owns the session: :func:`commit` then leaves it open.
_IN_TRANSACTION = "todo.in_transaction"
#: Callbacks in ``session.info`` waiting for the session's writes to commit (see :func:`after_commit`).
_AFTER_COMMIT = "todo.after_commit"


@asynccontextmanager
async def transaction(session: AsyncSession) -> AsyncIterator[None]:
    """Run the block in one real transaction, committed when it ends (rolled back if it raises).

    For the few writes that are more than one statement (a bulk action and the revision it reached, a write and
    its idempotency key, a write on SQLite and the revision its trigger stamped). The pooled engine runs in
    autocommit, so the session's connection is taken afresh in a transactional mode for the block (SQLAlchemy
    restores autocommit when it goes back to the pool); pooler connections are transactional already. Commits
    inside the block (:func:`commit`) wait for its end, and a block inside another joins it.
    """
    if session.info.get(_IN_TRANSACTION):
        yield
        return
    if session.in_transaction():
        await session.commit()
    bind = session.bind
    if bind is not None and bind.dialect.name in _TRANSACTIONAL_LEVELS:
        level = _TRANSACTIONAL_LEVELS[bind.dialect.name]
        await session.connection(execution_options={"isolation_level": level})
    session.info[_IN_TRANSACTION] = True
    try:
        yield
        session.info.pop(_IN_TRANSACTION, None)
        await _commit_now(session)
    except BaseException:
        session.info.pop(_AFTER_COMMIT, None)
        await session.rollback()
        raise
    finally:
        session.info.pop(_IN_TRANSACTION, None)


async def commit(session: AsyncSession) -> None:
    """Commit what the session wrote, unless a :func:`transaction` holds it (that commits at its end)."""
    if not session.info.get(_IN_TRANSACTION):
        await _commit_now(session)


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Call ``callback`` once what the session has written is committed by :func:`commit` or :func:`transaction`
    (never, if it rolls back): news of a write must not reach anyone before the write can be read."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


async def _commit_now(session: AsyncSession) -> None:
    await session.commit()
    for callback in session.info.pop(_AFTER_COMMIT, ()):
        callback()


def _ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Check a pooled connection before use only when it has sat idle for ``idle_seconds``.

    ``pool_pre_ping`` would spend a round trip on every request; a connection in steady use is known to be
    alive. One left idle may have been cut by Neon suspending its compute, a restart or a NAT timeout: a
    failed ping makes the pool discard it and hand out a fresh one, so the request never sees the dead one.
    """
    dialect = engine.sync_engine.dialect

    def checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            logger.info("Discarding a pooled connection that failed its idle check: %s", exc)
            # The pool's documented signal: invalidate this connection and check out another (up to 3 tries).
            raise DisconnectionError(str(exc)) from exc

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


async def wait_for_database(settings: Settings) -> None:
    """Return once the database answers; retry with backoff for ``DATABASE_STARTUP_TIMEOUT`` seconds.

    A Neon compute waking from scale-to-zero, or a database container still starting, refuses or stalls
    the first connections; start-up waits for it rather than crash-looping.
    """
    deadline = time.monotonic() + settings.database_startup_timeout
    delay = 0.25
    engine = create_engine(settings, pooled=False)
    try:
        while True:
            try:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
                return
            except (DBAPIError, OSError, TimeoutError) as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not _is_transient(exc):
                    raise DatabaseUnreachableError(
                        f"the database did not answer within DATABASE_STARTUP_TIMEOUT="
                        f"{settings.database_startup_timeout:g}s: {exc}"
                    ) from exc
                logger.warning("Database not reachable yet (%s); retrying in %.2g s", _first_line(exc), delay)
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)
    finally:
        await engine.dispose()


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: refused, reset or timed-out connections and "starting up"/"too many connections";
    not a certificate that fails verification, a wrong password or a missing database."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _TRANSIENT_SQLSTATES


#: cannot_connect_now (starting up), too_many_connections, admin_shutdown, crash_shutdown.
_TRANSIENT_SQLSTATES = frozenset({"57P03", "53300", "57P01", "57P02"})


class DatabaseUnreachableError(Exception):
    """The database never answered during start-up."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
    """Apply migrations up to ``revision``; the only way the schema is ever created.

    They run on ``DATABASE_URL_UNPOOLED`` when set: a migration is one long transaction that a pooler's
    query timeouts may cut, and schema tools expect a session of their own.
    """
    settings = settings.migration_settings
    config = alchemy_config(settings, engine=create_engine(settings, pooled=False))
    AlembicCommands(sqlalchemy_config=config).upgrade(revision=revision)
