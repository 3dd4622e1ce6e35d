"""The service running: in this process over ASGI (:func:`serve`), or as production runs it, ``python -m app
serve`` in a process of its own (:class:`ApiServer`), for tests that need a real socket (fuzzing, interop,
browsers, faults). Either is configured by ``tests.support.environment``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import TestClient

from app.main import create_app
from tests.support.environment import service_settings

ROOT = Path(__file__).resolve().parents[2]
#: How long :func:`until` waits for a condition: far beyond any wait a passing run has, even on a loaded machine.
PATIENCE_SECONDS = 60


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
    """Poll ``check`` until it holds; ``TimeoutError`` saying ``what`` did not happen after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout} s")


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` (a state of the service, not an event the test owns) from the event loop until it
    holds; ``TimeoutError`` saying ``what`` did not happen if it has not within :data:`PATIENCE_SECONDS`."""
    try:
        async with asyncio.timeout(PATIENCE_SECONDS):
            while True:
                holds = condition()
                if inspect.isawaitable(holds):
                    holds = await holds
                if holds:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise TimeoutError(f"{what} within {PATIENCE_SECONDS} s") from None


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it over ASGI in this event loop.

    Not Litestar's AsyncTestClient: its transport hands each request to a blocking portal, so requests
    sent "concurrently" through it run one after another and concurrency tests would prove nothing.
    """
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as test_client:
            yield test_client


def app_of(client: httpx.AsyncClient) -> Litestar:
    """The app behind a client from :func:`serve`, for a test that watches its state (pool, limiter)."""
    app: Litestar = client._transport.app  # type: ignore[attr-defined]  # httpx.ASGITransport's
    return app


def served_openapi_document(directory: Path) -> dict[str, Any]:
    """``/schema/openapi.json`` as the app serves it; it does not depend on the database, so an SQLite file in
    ``directory`` will do."""
    settings = service_settings(f"sqlite+aiosqlite:///{directory / 'todo.sqlite3'}")
    with TestClient(app=create_app(settings)) as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    return dict(response.json())


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
        """Launch the process and return once it answers ``/health``."""
        return self.launch().wait_until_serving(timeout)

    def launch(self) -> ApiServer:
        """Start the process without waiting for it: it may wait for its database first."""
        # A scratch working directory: a .env in the repository must not configure the service under test.
        workdir = Path(tempfile.mkdtemp(prefix="todo-api-"))
        self.log_path = workdir / "service.log"
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            # One worker unless a test asks for more: tests count what one process does (JWKS fetches, say).
            "WEB_CONCURRENCY": "1",
            **self.env,
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def wait_until_serving(self, timeout: float = 30) -> ApiServer:
        def ready() -> bool:
            self._check_running()
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "the service did not start")
        return self

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        """Return once the service has written ``text`` to its log."""

        def logged() -> bool:
            self._check_running()
            return text in self.log()

        wait_until(logged, timeout, f"the service did not log {text!r}")

    def _check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the service exited during start-up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, as an orchestrator would; returns the exit status."""
        if self.process is None:
            return None
        status = terminate(self.process, timeout)
        self.process = None
        return status
