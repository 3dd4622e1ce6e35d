"""Sync under load: what idle event streams cost, and how fast a change reaches a stream on another instance.

    python -m bench.sync [--streams 1000] [--rate 100] [--duration 20] [--listeners 20]

1. **Idle streams.** One service process (one worker). Opens ``--streams`` event streams (``--streams / 5``
   users, five each: the per-user cap), waits until the service reports them all open, then reads the
   process's resident memory and how many pooled database connections are checked out. Memory is compared
   with the same process just before the streams opened.
2. **Delivery.** Two instances (one worker each) on one PostgreSQL. ``--listeners`` users each hold a stream on
   instance B; writes of those users go to instance A at ``--rate`` per second (open loop: a slow write does
   not slow the schedule) for ``--duration`` seconds, alternating creates and title updates, each with a
   unique title. A write's delivery time is from sending it to its event arriving on B: an upper bound of
   commit-to-delivery. Prints p50, p99 and max, and how many events never arrived.

Writes ``bench/results/<time>-sync.json``. Loopback only; bounded in time and in the number of streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.db import upgrade_schema
from bench.fairness import percentile
from bench.run import ISSUER, RESULTS_DIR, log, memory_mb, start_target
from bench.seed import connect, seed_users
from tests.support.databases import create_database, drop_database
from tests.support.issuer import JWKSServer, SigningKey, mint, new_key
from tests.support.servers import terminate, until

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
STREAMS_PER_USER = 5


def metric(url: str, name: str) -> float:
    """One gauge's value from ``/metrics`` (summed over label sets)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


async def open_stream(url: str, user: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An event stream over a raw socket (the cheapest client): the request, then the response head."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /api/{user}/tasks/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream refused: {head.decode(errors='replace').splitlines()[0]}")
    return reader, writer


async def idle_streams(url: str, pid: int, tokens: dict[str, str], streams: int, database_url: str) -> dict[str, Any]:
    users = list(tokens)[: streams // STREAMS_PER_USER]
    async with httpx.AsyncClient(base_url=url) as client:  # warm the process up as traffic would
        for user in users[:20]:
            await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {tokens[user]}"})
    before = memory_mb(pid)
    opened = []
    for user in users:
        opened += await asyncio.gather(*(open_stream(url, user, tokens[user]) for _ in range(STREAMS_PER_USER)))
    await until(lambda: metric(url, "todo_api_event_streams_open") >= len(opened), "the streams did not all open")
    after = memory_mb(pid)
    in_use = metric(url, "todo_api_db_pool_connections_in_use")
    connection = await connect(database_url)
    try:
        backends = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    for _, writer in opened:
        writer.close()
    return {
        "streams": len(opened),
        "reported_open": metric(url, "todo_api_event_streams_open"),
        "rss_before_mb": before,
        "rss_with_streams_mb": after,
        "rss_per_1000_streams_mb": round((after - before) * 1000 / max(1, len(opened)), 1),
        "pool_connections_in_use": in_use,
        "database_backends": int(backends),
    }


async def delivery(
    writer_url: str, reader_url: str, tokens: dict[str, str], listeners: int, rate: float, duration: float
) -> dict[str, Any]:
    users = list(tokens)[:listeners]
    writes_done = False
    sent: dict[str, float] = {}
    delivered: dict[str, float] = {}
    listening_count = 0
    all_listening, all_delivered = asyncio.Event(), asyncio.Event()

    async def listen(user: str, client: httpx.AsyncClient) -> None:
        nonlocal listening_count
        headers = {"Authorization": f"Bearer {tokens[user]}", "Accept": "text/event-stream"}
        async with client.stream("GET", f"/api/{user}/tasks/events", headers=headers) as response:
            response.raise_for_status()
            listening_count += 1
            if listening_count == len(users):
                all_listening.set()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    change = json.loads(line[5:])
                    title = change.get("task", {}).get("title", "")
                    if title in sent and title not in delivered:
                        delivered[title] = time.perf_counter()
                        if writes_done and len(delivered) == len(sent):
                            all_delivered.set()

    async with (
        httpx.AsyncClient(
            base_url=reader_url, timeout=httpx.Timeout(10, read=None), limits=httpx.Limits(max_connections=listeners)
        ) as reading,
        httpx.AsyncClient(base_url=writer_url, timeout=30, limits=httpx.Limits(max_connections=64)) as writing,
    ):
        listening = [asyncio.create_task(listen(user, reading)) for user in users]
        await asyncio.wait_for(all_listening.wait(), timeout=30)
        created: dict[str, str] = {}

        async def write(n: int) -> None:
            user = users[n % len(users)]
            title = f"write {n}"
            headers = {"Authorization": f"Bearer {tokens[user]}"}
            sent[title] = time.perf_counter()
            if user in created and n % 2:
                response = await writing.put(
                    f"/api/{user}/tasks/{created[user]}", json={"title": title}, headers=headers
                )
            else:
                response = await writing.post(f"/api/{user}/tasks", json={"title": title}, headers=headers)
                created.setdefault(user, response.json()["id"])
            response.raise_for_status()

        start = time.perf_counter()
        writes = []
        for n in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            writes.append(asyncio.create_task(write(n)))
        await asyncio.gather(*writes)
        writes_done = True
        if len(delivered) < len(sent):
            # What has not arrived within 5 s after the last write is counted as missing.
            await asyncio.wait([asyncio.create_task(all_delivered.wait())], timeout=5)
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)

    latencies = [(delivered[title] - sent[title]) * 1000 for title in delivered]
    return {
        "writes": len(sent),
        "writes_per_second": rate,
        "listeners": len(users),
        "delivered": len(delivered),
        "missing": len(sent) - len(delivered),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000, help="idle streams to hold open on one process")
    parser.add_argument("--rate", type=float, default=100.0, help="writes per second in the delivery run")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of writes in the delivery run")
    parser.add_argument("--listeners", type=int, default=20, help="users with a stream in the delivery run")
    args = parser.parse_args(argv)

    admin_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"todo_bench_sync_{os.getpid()}"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"todo-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    key: SigningKey = new_key("EdDSA")
    jwks = JWKSServer(keys=[key]).start()
    database_url = asyncio.run(create_database(admin_url, name))
    outcome: dict[str, Any] = {"args": vars(args)}
    try:
        upgrade_schema(Settings(database_url=database_url))
        population = asyncio.run(
            seed_users(database_url, max(args.streams // STREAMS_PER_USER, args.listeners), 5, prefix="sync")
        )
        tokens = {
            user: mint(user, key, issuer=ISSUER, audience=ISSUER, expires_in=3600, email=None, name="Bench")
            for user in population.tasks
        }
        limits = {"SSE_MAX_STREAMS_PER_PROCESS": str(max(2000, args.streams + 100))}

        process, url = start_target("service", database_url, jwks.url, 1, "uvicorn", work / "sync-idle.log", limits)
        try:
            log(f"idle: {args.streams} streams on one process")
            outcome["idle_streams"] = asyncio.run(idle_streams(url, process.pid, tokens, args.streams, database_url))
        finally:
            terminate(process)
        print(json.dumps({"idle_streams": outcome["idle_streams"]}), flush=True)

        first, url_a = start_target("service", database_url, jwks.url, 1, "uvicorn", work / "sync-a.log", limits)
        second, url_b = start_target("service", database_url, jwks.url, 1, "uvicorn", work / "sync-b.log", limits)
        try:
            log(f"delivery: {args.rate:g} writes/s on A for {args.duration:g} s, {args.listeners} streams on B")
            outcome["delivery"] = asyncio.run(delivery(url_a, url_b, tokens, args.listeners, args.rate, args.duration))
        finally:
            terminate(first)
            terminate(second)
        print(json.dumps({"delivery": outcome["delivery"]}), flush=True)
    finally:
        jwks.stop()
        asyncio.run(drop_database(admin_url, name))

    started = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"{started}-sync.json"
    output.write_text(json.dumps(outcome, indent=2) + "\n")
    log(f"wrote {output.relative_to(RESULTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
