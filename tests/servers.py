"""The service as production runs it, ``python -m app serve`` in a process of its own, for tests that need
a real socket (fuzzing, interop, browsers, faults)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.issuer import AUDIENCE, ISSUER, JWKSServer

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(process: subprocess.Popen[Any], timeout: float = 10) -> int:
    """SIGTERM, as an orchestrator would; SIGKILL if it has not exited within ``timeout``. The exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout} s")


def service_env(database_url: str, jwks_server: JWKSServer, **extra: str) -> dict[str, str]:
    """A service verifying the test issuer's tokens, on ``database_url``, with rate limits off."""
    return {
        "DATABASE_URL": database_url,
        "JWT_JWKS_URL": jwks_server.url,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "RATE_LIMIT_PER_MINUTE": "0",
        "RATE_LIMIT_ANONYMOUS_PER_MINUTE": "0",
        **extra,
    }


@dataclass
class ApiServer:
    """One service process; ``env`` is its whole configuration (nothing leaks in from a developer's .env)."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ApiServer:
        # A scratch working directory: a .env in the repository must not configure the service under test.
        workdir = Path(tempfile.mkdtemp(prefix="todo-api-"))
        self.log_path = workdir / "service.log"
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            # One worker unless a test asks for more: tests count what one process does (JWKS fetches, say).
            "WEB_CONCURRENCY": "1",
            **self.env,
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited during start-up:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "the service did not start")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, as an orchestrator would; returns the exit status."""
        if self.process is None:
            return None
        status = terminate(self.process, timeout)
        self.process = None
        return status
