"""Fairness: what one user's burst of searches costs another user's plain reads.

    python -m bench.fairness [--duration 10] [--searchers 20] [--workers 1]

One user holds a full account (``MAX_TASKS_PER_USER`` = 10 000 tasks) and keeps ``--searchers`` concurrent
searches (``q``) running; another user, with 20 tasks, reads their list one request after another. Three
configurations of the service, each on the same PostgreSQL data:

- ``before``: no trigram indexes and no per-user bound (as the service was before issue 10);
- ``indexed``: trigram indexes, no per-user bound;
- ``bounded``: trigram indexes and the default ``MAX_CONCURRENT_REQUESTS_PER_USER`` (today's service).

It prints, per configuration, the other user's statuses and latency percentiles and the searcher's statuses,
and writes them to ``bench/results/<time>-fairness.json``. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.db import upgrade_schema
from bench.run import ISSUER, RESULTS_DIR, log, start_target
from bench.seed import connect, seed_users
from tests.support.databases import create_database, drop_database
from tests.support.issuer import JWKSServer, mint, new_key
from tests.support.servers import terminate

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
FULL_ACCOUNT = 10_000
CONFIGURATIONS: dict[str, tuple[bool, str]] = {
    "before": (False, "1000"),
    "indexed": (True, "1000"),
    "bounded": (True, str(Settings().max_concurrent_requests_per_user)),
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def _requests(
    url: str, user: str, token: str, params: dict[str, str], concurrency: int, duration: float
) -> tuple[dict[int, int], list[float]]:
    """``concurrency`` closed loops of GET /tasks for ``duration`` seconds: statuses and latencies (ms)."""
    deadline = time.monotonic() + duration
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def loop() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await client.get(
                    f"/api/{user}/tasks", params=params, headers={"Authorization": f"Bearer {token}"}
                )
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return statuses, latencies


def _searcher_process(args: tuple[str, str, str, dict[str, str], int, float], results: Any) -> None:
    results.put(asyncio.run(_requests(*args)))


def _summary(statuses: dict[int, int], latencies: list[float]) -> dict[str, Any]:
    return {
        "statuses": statuses,
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
    }


def load(
    url: str, searcher: tuple[str, str], reader: tuple[str, str], duration: float, searchers: int, query: str
) -> dict[str, Any]:
    """The searches in a process of their own, so the reader's latencies hold no client-side queueing."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(
        target=_searcher_process, args=((url, *searcher, {"q": query}, searchers, duration), results)
    )
    process.start()
    read = asyncio.run(_requests(url, *reader, {}, 1, duration))
    search = results.get(timeout=duration + 60)
    process.join(timeout=30)
    return {"reader": _summary(*read), "searcher": _summary(*search)}


async def set_indexes(database_url: str, present: bool) -> None:
    connection = await connect(database_url)
    try:
        if present:
            await connection.execute(
                "CREATE INDEX IF NOT EXISTS ix_tasks_title_trgm ON tasks USING gin (title gin_trgm_ops);"
                "CREATE INDEX IF NOT EXISTS ix_tasks_description_trgm ON tasks USING gin (description gin_trgm_ops);"
            )
        else:
            await connection.execute(
                "DROP INDEX IF EXISTS ix_tasks_title_trgm; DROP INDEX IF EXISTS ix_tasks_description_trgm;"
            )
        await connection.execute("ANALYZE tasks")
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per configuration")
    parser.add_argument("--searchers", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pool-size", type=int, default=Settings().database_pool_size)
    parser.add_argument(
        "--query",
        default="task 4242",
        help="the search: 'task 4242' finds one task (the query's cost shows), 'task 1' 1 111 (encoding shows)",
    )
    args = parser.parse_args(argv)

    admin_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"todo_bench_fairness_{os.getpid()}"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"todo-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    key = new_key("EdDSA")
    jwks = JWKSServer(keys=[key]).start()
    database_url = asyncio.run(create_database(admin_url, name))
    outcome: dict[str, Any] = {}
    try:
        upgrade_schema(Settings(database_url=database_url))
        full = asyncio.run(seed_users(database_url, 1, FULL_ACCOUNT, prefix="full"))
        light = asyncio.run(seed_users(database_url, 1, 20, prefix="light"))
        (searcher,) = full.tasks
        (reader,) = light.tasks

        def token(user: str) -> str:
            return mint(user, key, issuer=ISSUER, audience=ISSUER, expires_in=3600, email=None, name="Bench")

        for configuration, (indexed, bound) in CONFIGURATIONS.items():
            asyncio.run(set_indexes(database_url, indexed))
            process, url = start_target(
                "service",
                database_url,
                jwks.url,
                args.workers,
                "uvicorn",
                work / f"fairness-{configuration}.log",
                {"MAX_CONCURRENT_REQUESTS_PER_USER": bound, "DATABASE_POOL_SIZE": str(args.pool_size)},
            )
            try:
                log(f"{configuration}: {args.searchers} searches of a {FULL_ACCOUNT:,}-task account, one reader")
                outcome[configuration] = load(
                    url, (searcher, token(searcher)), (reader, token(reader)), args.duration, args.searchers, args.query
                )
            finally:
                terminate(process)
            print(json.dumps({configuration: outcome[configuration]}), flush=True)
    finally:
        jwks.stop()
        asyncio.run(drop_database(admin_url, name))

    started = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"{started}-fairness.json"
    output.write_text(json.dumps({"args": vars(args), "results": outcome}, indent=2) + "\n")
    print(f"{'configuration':<10} {'reader statuses':<22} {'p50':>7} {'p99':>7} {'max':>7}   searcher statuses")
    for configuration, result in outcome.items():
        reader_result = result["reader"]
        print(
            f"{configuration:<10} {json.dumps(reader_result['statuses']):<22} {reader_result['p50_ms']:>7} "
            f"{reader_result['p99_ms']:>7} {reader_result['max_ms']:>7}   {json.dumps(result['searcher']['statuses'])}"
        )
    log(f"wrote {output.relative_to(RESULTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
