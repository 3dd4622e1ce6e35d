"""The audit trail: one JSON line per security event, carrying the request id, never a token or a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.concurrency import UserConcurrencyLimiter
from app.observability.audit import AUDIT_LOGGER
from app.observability.logging import JSONFormatter
from tests.support.factories import Account, create_task
from tests.support.issuer import HS_SECRET, JWKSServer, SigningKey, mint


class Collector(logging.Handler):
    """Keeps every formatted line, as the production handler would write it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JSONFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in map(json.loads, self.lines) if entry.get("event") == name]


@pytest.fixture
def audit_log() -> Iterator[Collector]:
    collector = Collector()
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.addHandler(collector)
    yield collector
    logger.removeHandler(collector)


@pytest.fixture
def every_log_line(audit_log: Collector) -> Iterator[Collector]:
    """Audit lines and every other logger's lines, to search them all for secrets."""
    root = logging.getLogger()
    previous = root.level
    root.addHandler(audit_log)
    root.setLevel(logging.DEBUG)
    yield audit_log
    root.removeHandler(audit_log)
    root.setLevel(previous)


async def test_authentication_failures_are_logged_with_their_reason(
    client: httpx.AsyncClient, audit_log: Collector, signing_keys: dict[str, SigningKey], alice: Account
) -> None:
    expired = mint(alice.id, signing_keys["EdDSA"], expires_in=-600)
    response = await client.get(
        alice.tasks_url(), headers={"Authorization": f"Bearer {expired}", "X-Request-ID": "audit-401"}
    )
    await client.get(alice.tasks_url())

    events = audit_log.events("auth.failed")
    assert [e["reason"] for e in events[-2:]] == ["token expired", "no bearer token"]
    entry = events[-2]
    assert entry["request_id"] == "audit-401" == response.headers["x-request-id"]
    assert entry["status"] == 401
    assert entry["client"]
    assert entry["path"] == alice.tasks_url()
    assert expired not in "\n".join(audit_log.lines)


async def test_cross_user_attempts_name_the_subject_and_the_path_user(
    client: httpx.AsyncClient, audit_log: Collector, alice: Account, bob: Account
) -> None:
    await client.delete(alice.tasks_url("0b0e6b1c-2f0a-4b7e-8d8e-3a7c2c9a1f00"), headers=bob.headers)

    entry = audit_log.events("auth.forbidden")[-1]
    assert (entry["subject"], entry["path_user"], entry["method"]) == (bob.id, alice.id, "DELETE")


async def test_edit_conflicts_are_logged(client: httpx.AsyncClient, audit_log: Collector, alice: Account) -> None:
    task = await create_task(client, alice)

    await client.put(alice.tasks_url(task["id"]), json={"title": "x"}, headers={**alice.headers, "If-Match": '"0"'})

    entry = audit_log.events("task.conflict")[-1]
    assert (entry["subject"], entry["task_id"], entry["status"]) == (alice.id, task["id"], 412)


async def test_rate_limit_rejections_are_logged(
    app_client: Callable[..., Any], jwks_server: JWKSServer, audit_log: Collector, alice: Account
) -> None:
    async with app_client(jwks_server, rate_limit_per_minute=1) as client:
        await client.get(alice.tasks_url(), headers=alice.headers)
        await client.get(alice.tasks_url(), headers=alice.headers)

    entry = audit_log.events("rate.limited")[-1]
    assert (entry["subject"], entry["status"]) == (alice.id, 429)


async def test_too_many_requests_at_once_are_logged_once_as_rate_limited(
    app_client: Callable[..., Any], jwks_server: JWKSServer, audit_log: Collector, alice: Account
) -> None:
    async with app_client(jwks_server, max_concurrent_requests_per_user=1) as client:
        limiter: UserConcurrencyLimiter = client._transport.app.state.concurrency  # type: ignore[attr-defined]
        limiter.wait_seconds = 0
        assert await limiter.acquire(alice.id)  # alice's one slot, held while her next request arrives
        try:
            refused = await client.get(alice.tasks_url(), headers={**alice.headers, "X-Request-ID": "at-once"})
        finally:
            limiter.release(alice.id)

    assert refused.status_code == 429
    events = [e for e in map(json.loads, audit_log.lines) if e.get("request_id") == "at-once"]
    assert [(e["event"], e["subject"], e["status"]) for e in events] == [("rate.limited", alice.id, 429)]


async def test_server_errors_are_logged(
    app_client: Callable[..., Any], jwks_server: JWKSServer, audit_log: Collector, alice: Account
) -> None:
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:9/unreachable"
    async with app_client(jwks_server, database_url=unreachable, database_connect_timeout=1) as client:
        await client.get(alice.tasks_url(), headers=alice.headers)

    entry = audit_log.events("server.error")[-1]
    assert entry["status"] == 503
    assert entry["subject"] == alice.id


async def test_no_log_line_ever_contains_a_token_or_a_secret(
    client: httpx.AsyncClient, every_log_line: Collector, signing_keys: dict[str, SigningKey], alice: Account
) -> None:
    tokens = [
        alice.token,
        mint(alice.id, signing_keys["EdDSA"], expires_in=-600),
        mint(alice.id, secret="w" * 40),
        mint(alice.id, secret=HS_SECRET, audience="elsewhere"),
        "not.a.token",
    ]
    for token in tokens:
        await client.get(alice.tasks_url(), headers={"Authorization": f"Bearer {token}"})
        await client.get(alice.tasks_url("x"), headers={"Authorization": f"Bearer {token}"})

    text = "\n".join(every_log_line.lines)
    assert every_log_line.lines, "nothing was logged at all"
    signatures = [t.split(".")[-1] for t in tokens if len(t) > 40]
    for secret in [*tokens, HS_SECRET, *signatures]:
        assert secret not in text


async def test_audit_lines_are_single_json_objects(
    client: httpx.AsyncClient, audit_log: Collector, alice: Account
) -> None:
    # A newline in a field that is logged (the path) must not split the line a log collector reads.
    await client.get(f"/api/{alice.id}%0Aforged/tasks", headers={"Authorization": "Bearer x\ny"})

    assert audit_log.lines, "the refused request was not audited"
    for line in audit_log.lines:
        assert "\n" not in line
        assert isinstance(json.loads(line), dict)
    assert json.loads(audit_log.lines[-1])["path"] == f"/api/{alice.id}\nforged/tasks"
