"""A real Better Auth server (npm ``better-auth``, the fixture in tests/interop/better-auth) and its users.

Nothing here mints tokens: users sign up through Better Auth's HTTP API and get their JWTs from Better
Auth's own endpoints.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import terminate

__all__ = ("FIXTURE_DIR", "BetterAuth", "RealUser")

#: The npm project: ``server.mjs`` (Better Auth), the frontend page and the typed client.
FIXTURE_DIR = Path(__file__).resolve().parents[1] / "interop" / "better-auth"


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

    def as_sole_issuer(self) -> dict[str, str | None]:
        """Overrides of ``tests.support.environment``: the service trusts this Better Auth alone, as production
        does, finding its keys, issuer and audience from ``BETTER_AUTH_URL``."""
        return {"jwt_secret": None, "jwt_issuer": None, "jwt_audience": None, "better_auth_url": self.url}

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
