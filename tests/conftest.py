"""Shared fixtures: a real database per backend (migrated), the app in this process over ASGI, real tokens.

Every API test runs twice, against PostgreSQL and against the embedded SQLite default. Tests isolate
themselves by using fresh user ids, so one migrated database per backend serves the whole session.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert as insert_
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_engine, upgrade_schema
from app.main import create_app
from app.models import Task, User, utcnow
from tests.support.databases import scratch_postgres
from tests.support.environment import service_settings
from tests.support.factories import Account, new_user_id
from tests.support.issuer import JWKSServer, SigningKey, mint, new_key
from tests.support.postgres_cluster import ThrowawayCluster, can_run_clusters
from tests.support.prerequisites import require
from tests.support.servers import serve

ALGORITHMS = ("EdDSA", "RS256", "PS256", "ES256", "ES512")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# --- tokens -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def signing_keys() -> dict[str, SigningKey]:
    """One published key per asymmetric algorithm Better Auth can be configured with."""
    return {algorithm: new_key(algorithm) for algorithm in ALGORITHMS}


@pytest.fixture(scope="session")
def jwks_server(signing_keys: dict[str, SigningKey]) -> Iterator[JWKSServer]:
    server = JWKSServer(keys=list(signing_keys.values())).start()
    yield server
    server.stop()


@pytest.fixture
def make_account(signing_keys: dict[str, SigningKey]) -> Callable[..., Account]:
    """Build an account with an EdDSA token (Better Auth's default) for a fresh or given id."""

    def make(user_id: str | None = None, *, name: str = "Test User", email: str | None = "") -> Account:
        user_id = user_id or new_user_id()
        email = f"{user_id.lower()}@example.com" if email == "" else email
        token = mint(user_id, signing_keys["EdDSA"], email=email, name=name)
        return Account(id=user_id, token=token, email=email, name=name)

    return make


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account(name="Alice")


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account(name="Bob")


# --- databases ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly created, migrated database; PostgreSQL from ``TEST_DATABASE_URL``, or an SQLite file."""
    if request.param == "sqlite":
        path = Path(tmp_path_factory.mktemp("sqlite")) / "todo.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade_schema(Settings(database_url=url))
        yield url
        return
    with scratch_postgres() as url:
        upgrade_schema(Settings(database_url=url))
        yield url


@pytest.fixture
def scratch_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the session's backend that a test may migrate up and down at will."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.sqlite3'}"
        return
    with scratch_postgres() as url:
        yield url


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """An empty PostgreSQL database, for tests about PostgreSQL only (whatever the session's backend)."""
    with scratch_postgres() as url:
        yield url


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    """A migrated PostgreSQL cluster of the test's own, which it may stop, restart or reconfigure."""
    reason = can_run_clusters()
    require(reason is None, str(reason))
    instance = ThrowawayCluster().create()
    try:
        upgrade_schema(Settings(database_url=instance.url))
        yield instance
    finally:
        instance.destroy()


@pytest.fixture(scope="session")
def backend(database_url: str) -> str:
    """``postgresql`` or ``sqlite``."""
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


@pytest.fixture(scope="session")
async def client(database_url: str, jwks_server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    """The app with both key sources, shared by the session (tests use fresh users)."""
    async with serve(create_app(service_settings(database_url, jwks_server))) as test_client:
        yield test_client


@pytest.fixture
def app_client(database_url: str) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """Start a separate app with its own settings, for tests of configuration-dependent behaviour."""

    @asynccontextmanager
    async def start(jwks_server: JWKSServer | None = None, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        # Overrides are settings by name (database_url too): see tests/support/environment.py.
        async with serve(create_app(service_settings(database_url, jwks_server, **overrides))) as test_client:
            yield test_client

    return start


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A direct connection to the test database, for asserting on rows behind the API's back."""
    engine = create_engine(Settings(database_url=database_url), pooled=False)
    yield engine
    await engine.dispose()


@pytest.fixture
def db_insert_tasks(db: AsyncEngine) -> Callable[..., Awaitable[None]]:
    """Insert ``count`` tasks for an account straight into the database (for volume, not for behaviour)."""

    async def insert(account: Account, count: int) -> None:
        start = utcnow()
        async with db.begin() as connection:
            exists = await connection.scalar(select(User.id).where(User.id == account.id))
            if exists is None:
                await connection.execute(
                    insert_(User).values(
                        id=account.id, email=None, name=account.name, created_at=start, updated_at=start
                    )
                )
            rows = [
                {
                    "id": uuid.uuid4(),
                    "user_id": account.id,
                    "title": f"bulk task {n:05d}",
                    "description": None,
                    "completed": n % 3 == 0,
                    "created_at": start + timedelta(microseconds=n),
                    "updated_at": start + timedelta(microseconds=n),
                }
                for n in range(count)
            ]
            await connection.execute(insert_(Task), rows)

    return insert
