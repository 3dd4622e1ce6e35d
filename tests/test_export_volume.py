"""The export of a 100 000-task account, from a real server process on PostgreSQL: streamed, not held in memory.

The document is far larger than the batches it is read in, so a server that built it in memory would grow by at
least its size (many times that as Python objects). The test compares the server's peak resident memory
(``VmHWM``) before and after the export with the document's size, and records the figures
(``pytest -s tests/test_export_volume.py`` prints them) for docs/benchmarks.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from sqlalchemy import text

from app.config import Settings
from app.db import create_engine, upgrade_schema
from app.models import FIRST_POSITION
from app.tasks.ordering import GAP, INTEGER_DIGITS
from tests.support.databases import scratch_postgres
from tests.support.environment import service_environment
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.servers import ApiServer

TASKS = 100_000
#: A description of realistic length, so that the document (~45 MB) dwarfs anything a batch holds.
DESCRIPTION = "Pick up the parcel at the post office before noon, and bring the receipt. " * 3


@pytest.fixture(scope="module")
def large_account_server(jwks_server: JWKSServer) -> Iterator[tuple[ApiServer, str]]:
    with scratch_postgres("todo_export") as url:
        upgrade_schema(Settings(database_url=url))
        server = ApiServer(env=service_environment(url, jwks_server)).start()
        yield server, url
        server.stop()


async def seed(database_url: str, user_id: str, count: int) -> None:
    """``count`` tasks of one user in one statement, created a millisecond apart so the export's order is known.

    The schema's row triggers stamp each insert by rewriting the owner's row, and 100 000 rewrites of one row in one
    transaction walk an ever longer chain of its versions (minutes). So this seeds as a bulk import would: triggers
    off for the transaction, and the revisions, positions and counts they would have written written directly.
    """
    engine = create_engine(Settings(database_url=database_url), pooled=False)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(
                text(
                    "INSERT INTO users (id, email, name, created_at, updated_at, revision, task_count, first_position) "
                    "VALUES (:id, 'large@example.com', 'Large Account', now(), now(), "
                    "        CAST(:count AS bigint), CAST(:count AS integer), :first - CAST(:count AS bigint) * :gap)"
                ),
                {"id": user_id, "count": count, "first": FIRST_POSITION, "gap": GAP},
            )
            await connection.execute(
                text(
                    "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at, "
                    "                   priority, revision, position) "
                    "SELECT gen_random_uuid(), :id, 'task ' || n, :description, n % 3 = 0, "
                    "       timestamptz '2026-01-01' + n * interval '1 millisecond', "
                    "       timestamptz '2026-01-01' + n * interval '1 millisecond', n % 4, n, "
                    "       lpad((CAST(:first AS bigint) - n * :gap)::text, :digits, '0') "
                    "FROM generate_series(1, :count) AS n"
                ),
                {
                    "id": user_id,
                    "description": DESCRIPTION,
                    "count": count,
                    "first": FIRST_POSITION,
                    "gap": GAP,
                    "digits": INTEGER_DIGITS,
                },
            )
    finally:
        await engine.dispose()


def peak_rss_bytes(server: ApiServer) -> int:
    """The server process's high-water mark of resident memory (``VmHWM``, Linux)."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def test_a_100_000_task_account_exports_in_a_stream_without_growing_the_server(
    large_account_server: tuple[ApiServer, str],
    make_account: Callable[..., Account],
    record_property: pytest.RecordProperty,
) -> None:
    server, database_url = large_account_server
    account = make_account()
    await seed(database_url, account.id, TASKS)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        # Warm up the export's code path on a small account first: its imports and caches are not the document.
        warm = make_account()
        assert (await client.post(warm.tasks_url(), json={"title": "warm"}, headers=warm.headers)).status_code == 201
        assert (await client.get(f"/api/{warm.id}/export", headers=warm.headers)).status_code == 200
        before = peak_rss_bytes(server)

        body = bytearray()
        chunks = 0
        async with client.stream("GET", f"/api/{account.id}/export", headers=account.headers) as response:
            assert response.status_code == 200
            assert response.headers["content-disposition"] == 'attachment; filename="todo-export.json"'
            async for chunk in response.aiter_raw():
                body += chunk
                chunks += 1
        after = peak_rss_bytes(server)

    document = msgspec.json.decode(body)
    tasks = document["tasks"]
    growth = after - before
    figures = {
        "document_mb": round(len(body) / 2**20, 1),
        "chunks": chunks,
        "server_peak_rss_before_mb": round(before / 2**20, 1),
        "server_peak_rss_after_mb": round(after / 2**20, 1),
        "server_peak_rss_growth_mb": round(growth / 2**20, 1),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\nexport of {TASKS} tasks: {figures}")

    assert document["user"]["id"] == account.id
    assert len(tasks) == TASKS
    assert [task["title"] for task in tasks[:2]] == ["task 1", "task 2"]  # oldest first
    assert tasks[-1]["title"] == f"task {TASKS}"
    assert len({task["id"] for task in tasks}) == TASKS
    assert {task["user_id"] for task in tasks} == {account.id}
    assert uuid.UUID(tasks[0]["id"])
    assert chunks > 10  # it came in pieces, as it was read
    # Held in memory, the document alone would add its own size; streamed, the server grows by a few batches.
    assert growth < len(body) / 5, figures
