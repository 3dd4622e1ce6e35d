"""Fixtures of the interop tests: a real Better Auth server (npm ``better-auth``, see
tests/support/better_auth.py) and the service as a real process that trusts it.

Nothing here mints tokens: users sign up through Better Auth's HTTP API and get their JWTs from Better
Auth's own endpoints. Missing Node.js, npm or Chromium fails the run under ``CI=true`` and skips (saying
why) elsewhere.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.db import upgrade_schema
from tests.support.better_auth import FIXTURE_DIR, BetterAuth
from tests.support.databases import scratch_postgres
from tests.support.environment import service_environment
from tests.support.prerequisites import require
from tests.support.servers import ApiServer, free_port

# --- Better Auth ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def better_auth_installed() -> Path:
    """``npm ci`` the fixture when its lock changed, and bundle the frontend page."""
    require(shutil.which("node") is not None and shutil.which("npm") is not None, "Node.js and npm are not installed")
    lock_hash = hashlib.sha256((FIXTURE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = FIXTURE_DIR / "node_modules" / ".installed-lock"
    if not stamp.is_file() or stamp.read_text() != lock_hash:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=FIXTURE_DIR, check=True, capture_output=True)
        stamp.write_text(lock_hash)
    sources = [*FIXTURE_DIR.joinpath("frontend").glob("*.js"), stamp]
    bundle = FIXTURE_DIR / "dist" / "main.js"
    if not bundle.is_file() or bundle.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        subprocess.run(["npm", "run", "--silent", "build"], cwd=FIXTURE_DIR, check=True)
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def start_better_auth(better_auth_installed: Path) -> Iterator[Callable[..., BetterAuth]]:
    """Start Better Auth servers with extra settings (JWT_ALG, JWT_EXPIRATION, …); all stop at the end."""
    started: list[BetterAuth] = []

    def start(**env: str) -> BetterAuth:
        server = BetterAuth(port=free_port(), env=env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def api_port() -> int:
    """The service's port, chosen before either server starts: each is configured with the other's URL."""
    return free_port()


@pytest.fixture(scope="session")
def better_auth(start_better_auth: Callable[..., BetterAuth], api_port: int) -> BetterAuth:
    """The default Better Auth: EdDSA keys, ``jwt()`` with no options — what docs/frontend.md configures —
    and account deletion erasing the user's data in the service (``user.deleteUser.beforeDelete``)."""
    return start_better_auth(TODO_API_URL=f"http://127.0.0.1:{api_port}")


# --- the service -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def interop_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database of its own for the interop tests."""
    with scratch_postgres("todo_interop") as url:
        upgrade_schema(Settings(database_url=url))
        yield url


@pytest.fixture(scope="session")
def api_server(better_auth: BetterAuth, interop_database_url: str, api_port: int) -> Iterator[ApiServer]:
    """The service with only BETTER_AUTH_URL for authentication, and the frontend's origin allowed by CORS."""
    environment = service_environment(
        interop_database_url, **better_auth.as_sole_issuer(), cors_origins=better_auth.origin
    )
    server = ApiServer(env=environment, port=api_port).start()
    yield server
    server.stop()


@pytest.fixture
def api(api_server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, timeout=10) as client:
        yield client
