"""Faults a cloud database really has: PostgreSQL restarting under traffic, and the service being stopped."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Task
from tests.support.databases import row_locked
from tests.support.environment import service_environment
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.postgres_cluster import ThrowawayCluster
from tests.support.servers import ApiServer, until, wait_until

WRITERS = 4


def count_tasks(url: str, user_id: str, ids: list[str]) -> int:
    async def query() -> int:
        parsed = make_url(url)
        connection = await asyncpg.connect(host=parsed.host, port=parsed.port, user="postgres", database="postgres")
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM tasks WHERE user_id = $1 AND id = ANY($2::uuid[])", user_id, ids
                )
            )
        finally:
            await connection.close()

    return asyncio.run(query())


async def connections_in_use(client: httpx.AsyncClient) -> float:
    """Connections checked out of the service's pool, by its own /metrics."""
    scrape = (await client.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "todo_api_db_pool_connections_in_use"
    )


def refuses_connections(server: ApiServer) -> bool:
    """Whether the service has closed its listening socket: the first thing a SIGTERM makes it do."""
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except OSError:
        return True
    return False


def test_writes_survive_a_postgresql_restart_and_the_service_recovers_by_itself(
    cluster: ThrowawayCluster, jwks_server: JWKSServer, make_account: Callable[..., Account]
) -> None:
    server = ApiServer(
        env=service_environment(cluster.url, jwks_server, DATABASE_CONNECT_TIMEOUT="2", DATABASE_POOL_TIMEOUT="2")
    ).start()
    account = make_account()
    results: list[tuple[float, int, str | None]] = []
    latencies_503: list[float] = []
    stop = threading.Event()

    def write(writer: int) -> None:
        with httpx.Client(base_url=server.url, headers=account.headers, timeout=30) as client:
            n = 0
            while not stop.is_set():
                n += 1
                started = time.monotonic()
                response = client.post(account.tasks_url(), json={"title": f"writer {writer} #{n}"})
                task_id = response.json().get("id") if response.status_code == 201 else None
                results.append((time.monotonic(), response.status_code, task_id))
                if response.status_code == 503:
                    latencies_503.append(time.monotonic() - started)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(1 for _, s, _ in results if s == 201) >= 50, 30, "writes did not flow")
        down_at = time.monotonic()
        cluster.stop("fast")  # terminates every connection of the service's pool
        wait_until(lambda: sum(1 for t, s, _ in results if t > down_at and s == 503) >= 40, 30, "no 503s in the outage")
        cluster.start()
        up_at = time.monotonic()
        wait_until(lambda: any(t > up_at and s == 201 for t, s, _ in results), 60, "the service did not recover")
        recovered_at = min(t for t, s, _ in results if t > up_at and s == 201)
        wait_until(lambda: sum(1 for t, s, _ in results if t > recovered_at and s == 201) >= 50, 30, "writes resumed")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.stop()

    statuses = {status for _, status, _ in results}
    acknowledged = [task_id for _, status, task_id in results if status == 201 and task_id]
    during_outage = [status for t, status, _ in results if down_at < t < up_at]
    print(
        f"\n{len(results)} writes: {len(acknowledged)} acknowledged, "
        f"{sum(1 for _, s, _ in results if s == 503)} answered 503; "
        f"outage {up_at - down_at:.2f} s, 503s answered in at most {max(latencies_503):.3f} s; "
        f"first acknowledged write {recovered_at - up_at:.3f} s after PostgreSQL accepted connections again"
    )
    assert statuses <= {201, 503}, statuses
    assert set(during_outage) <= {201, 503}
    assert count_tasks(cluster.url, account.id, acknowledged) == len(acknowledged)  # 0 lost writes


async def test_sigterm_lets_in_flight_requests_finish_and_closes_the_pool(
    database_url: str, backend: str, db: AsyncEngine, jwks_server: JWKSServer, make_account: Callable[..., Account]
) -> None:
    url = database_url
    if backend == "postgresql":
        url = f"{database_url}?application_name=todo-shutdown-test"
    server = ApiServer(env=service_environment(url, jwks_server)).start()
    account = make_account()
    async with httpx.AsyncClient(base_url=server.url, headers=account.headers, timeout=30) as client:
        task = (await client.post(account.tasks_url(), json={"title": "before shutdown"})).json()
        async with row_locked(db, backend, task["id"]):
            in_flight = asyncio.create_task(client.put(account.tasks_url(task["id"]), json={"title": "finished"}))

            async def the_put_holds_a_connection() -> bool:
                return await connections_in_use(client) == 1

            await until(the_put_holds_a_connection, "the PUT did not reach the database")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            await until(lambda: refuses_connections(server), "the service did not begin shutting down")
            assert not in_flight.done()  # shutting down, and the PUT still waits for the lock
        response = await in_flight
    status = await asyncio.to_thread(server.process.wait, 30)
    server_log = server.log()

    assert response.status_code == 200
    assert response.json()["title"] == "finished"
    # uvicorn finishes in-flight requests and the lifespan shutdown, then re-raises SIGTERM as conventions ask.
    assert status in {0, -signal.SIGTERM}
    assert "Traceback" not in server_log
    async with db.connect() as connection:
        stored = await connection.scalar(select(Task.title).where(Task.id == uuid.UUID(task["id"])))
        assert stored == "finished"
        if backend == "postgresql":
            left_open = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'todo-shutdown-test'")
            )
            assert left_open == 0


def test_the_service_refuses_to_start_on_invalid_configuration(tmp_path: Any) -> None:
    server = ApiServer(env={"DATABASE_POOL_SIZE": "lots"})
    with pytest.raises(RuntimeError, match="DATABASE_POOL_SIZE"):
        server.start(timeout=20)
