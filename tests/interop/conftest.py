"""Real clients for the interop tests: a real Better Auth server (npm ``better-auth``), the service as a real
process, and Debian's Chromium.

Nothing here mints tokens: users sign up through Better Auth's HTTP API and get their JWTs from Better
Auth's own endpoints. Missing Node.js, npm or Chromium fails the run under ``CI=true`` and skips (saying
why) elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db import upgrade_schema
from tests.databases import scratch_postgres
from tests.prerequisites import require
from tests.servers import ApiServer, free_port, terminate

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = Path(__file__).resolve().parent / "better-auth"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


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


@dataclass
class RealUser:
    """A user signed up through Better Auth, with the session cookie Better Auth set."""

    id: str
    email: str
    name: str
    cookie: str
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def tasks_url(self, *parts: object) -> str:
        return "/".join([f"/api/{self.id}/tasks", *(str(p) for p in parts)])


@dataclass
class BetterAuth:
    """One Better Auth server process: ``node server.mjs`` on a loopback port."""

    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        """The base URL Better Auth was configured with: what BETTER_AUTH_URL must be set to."""
        return self.env.get("BETTER_AUTH_URL", self.origin)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BetterAuth:
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PORT": str(self.port), **self.env}
        self.process = subprocess.Popen(
            ["node", "server.mjs"], cwd=FIXTURE_DIR, env=env, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"Better Auth did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def restart(self) -> None:
        """Stop and start again: the in-memory database, and so the signing key, is new."""
        self.stop()
        self.start()

    def jwks_fetches(self) -> int:
        return int(httpx.get(f"{self.origin}/__stats").json()["jwks_fetches"])

    def jwks(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.origin}/api/auth/jwks").json())

    def sign_up(self, email: str | None = None, name: str = "Interop User") -> RealUser:
        """Sign up with email and password (Better Auth's own endpoint), then fetch a JWT for the session."""
        email = email or f"user-{secrets.token_hex(6)}@interop.example"
        response = httpx.post(
            f"{self.origin}/api/auth/sign-up/email",
            json={"email": email, "password": "interop-password-1", "name": name},
            headers={"Origin": self.url},  # Better Auth checks the origin against its own base URL
        )
        response.raise_for_status()
        cookie = "; ".join(f"{k}={v}" for k, v in response.cookies.items())
        user = RealUser(id=response.json()["user"]["id"], email=email, name=name, cookie=cookie)
        user.token = self.token(user)
        return user

    def token(self, user: RealUser) -> str:
        """``GET /api/auth/token``: what ``authClient.token()`` calls."""
        response = httpx.get(f"{self.origin}/api/auth/token", headers={"Cookie": user.cookie})
        response.raise_for_status()
        return str(response.json()["token"])

    def session_jwt(self, user: RealUser) -> str:
        """The ``set-auth-jwt`` header Better Auth adds to ``GET /api/auth/get-session``."""
        response = httpx.get(f"{self.origin}/api/auth/get-session", headers={"Cookie": user.cookie})
        response.raise_for_status()
        return response.headers["set-auth-jwt"]


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
def better_auth(start_better_auth: Callable[..., BetterAuth]) -> BetterAuth:
    """The default Better Auth: EdDSA keys, ``jwt()`` with no options — what docs/frontend.md configures."""
    return start_better_auth()


# --- the service -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def interop_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database of its own for the interop tests."""
    with scratch_postgres("todo_interop") as url:
        upgrade_schema(Settings(database_url=url))
        yield url


@pytest.fixture(scope="session")
def api_server(better_auth: BetterAuth, interop_database_url: str) -> Iterator[ApiServer]:
    """The service with only BETTER_AUTH_URL for authentication, and the frontend's origin allowed by CORS."""
    server = ApiServer(
        env={
            "DATABASE_URL": interop_database_url,
            "BETTER_AUTH_URL": better_auth.url,
            "CORS_ORIGINS": better_auth.origin,
            # Every test here comes from 127.0.0.1, and several send refused tokens by the thousand.
            "RATE_LIMIT_ANONYMOUS_PER_MINUTE": "100000",
        }
    ).start()
    yield server
    server.stop()


@pytest.fixture
def api(api_server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, timeout=10) as client:
        yield client
