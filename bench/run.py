"""Benchmark the Todo API the way production runs it, against a framework-free ceiling, with wrk on loopback.

    python -m bench.run [small|large|smoke] [--connections 1,16,64] [--duration 5] [--workers 2] [--scenarios ...]
    python -m bench.run soak [...]     the soak test instead (bench/soak.py)

In order, printing progress as it goes:

1. creates a scratch PostgreSQL database (on the server of ``BENCH_DATABASE_URL`` or ``TEST_DATABASE_URL``)
   and applies the real migrations;
2. seeds it: ``small`` is 1 000 users × 20 tasks plus one user with 10 000 tasks (COPY); ``large`` adds
   100 000 users × 100 tasks (10 M rows, generated inside PostgreSQL); ``smoke`` is tiny, to check the tooling;
3. serves a JWKS on loopback and signs one EdDSA token per user, as Better Auth would;
4. for each target — the service (``app.main:create_app``) and the ceiling (``bench/ceiling.py``: same SQL on a
   raw asyncpg pool, same token verification, no framework, no ORM) — starts uvicorn the production way (no
   reload, no debug, access log off), walks each deep account's listing once through the service to the cursor
   of its last page, and runs every scenario at every connection count for a bounded time;
5. writes ``bench/results/<time>-<profile>.json``, plots into ``docs/benchmarks/`` and the ratio table into
   ``docs/benchmarks.md``.

Figures on this shared 2-core machine are noisy: read the ratios, compare runs from one sitting, never assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from app.config import Settings
from app.db import upgrade_schema
from bench.report import Result, plot, ratio_table, update_docs, write_json
from bench.seed import Population, owners_with_completed_tasks, seed_bulk, seed_feed, seed_users
from tests.support.databases import create_database, drop_database
from tests.support.issuer import JWKSServer, SigningKey, mint, new_key
from tests.support.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "wrk" / "scenario.lua"
ISSUER = "http://127.0.0.1:3000"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS = {"service": ("app.main:create_app", True), "ceiling": ("bench.ceiling:app", False)}
#: "uvicorn" as ``python -m app serve`` runs it (app/workers.py: a listening socket per worker), "uvicorn-shared"
#: as uvicorn's own ``--workers`` (one socket shared by the workers), and granian.
SERVERS = ("uvicorn", "uvicorn-shared", "granian")
DEEP_TASKS = 10_000
PAGE = 50
#: The changes behind each feed account's revision, each to a task of its own (bench/seed.py, seed_feed): the
#: most a feed scenario reads, and the feed's largest page (ListTaskChanges takes limit ≤ 1000, its default).
FEED_CHANGES = 1000
#: Bulk deletes per second of a cell the harness seeds fresh users for (a user per request, see fresh_size): above
#: what either target serves on this machine (the ceiling's single-task delete peaks under 5 000/s; a bulk delete
#: takes a transaction and deletes 7 rows), so that every request deletes something. The run logs any that did not.
BULK_DELETES_PER_SECOND = 3000


@dataclass(frozen=True)
class Scenario:
    name: str
    lua: str
    accounts: str  # which population: "small", "deep", "feed", "bulk" or "fresh" (seeded anew for each run)
    offset: int = 0  # list-page: the page's offset; changes: how many changes back from the revision it reads


SCENARIOS = [
    Scenario("list", "list", "small"),  # a 20-task user's default page
    Scenario("list-page-20", "list-page", "small"),  # limit=50: the whole list of a 20-task user
    Scenario("list-page-10k-start", "list-page", "deep"),
    # The last page as a client reaches it: by the cursor of the page before (walked once, see last_page_cursor).
    Scenario("list-page-10k-end", "list-cursor", "deep"),
    Scenario("list-page-10k-end-offset", "list-page", "deep", offset=DEEP_TASKS - PAGE),  # the same page by OFFSET
    Scenario("get", "get", "small"),
    Scenario("create", "create", "fresh"),
    Scenario("update", "update", "small"),
    Scenario("toggle", "toggle", "small"),
    Scenario("delete", "delete", "fresh"),
    # The change feed of an account that synced 1, 100 or 1 000 changes ago (nine in ten updates, one in ten
    # tombstones); 1 000 is the feed's largest page (limit's maximum and default), read whole with has_more false.
    Scenario("changes-1", "changes", "feed", offset=1),
    Scenario("changes-100", "changes", "feed", offset=100),
    Scenario("changes-1000", "changes", "feed", offset=FEED_CHANGES),
    # "Toggle all" on 20-task users whose tasks all start open, alternating true and false: 20 rows each time.
    Scenario("bulk-complete", "bulk-complete", "fresh"),
    # "Clear completed": each request a fresh 20-task user's first, deleting its 7 completed tasks.
    Scenario("bulk-delete-completed", "bulk-delete-completed", "fresh"),
    Scenario("unauthorized", "unauthorized", "small"),
    Scenario("mixed", "mixed", "fresh"),
]
LARGE_SCENARIOS = [
    Scenario("list-page-100-in-10M", "list-page", "bulk"),
    Scenario("list-page-100-in-10M-end", "list-page", "bulk", offset=50),
]
LIST_PAGES = {
    "list-page-20": [20, "start"],
    "list-page-10k-start": [DEEP_TASKS, "start"],
    "list-page-10k-end": [DEEP_TASKS, "end"],
    "list-page-100-in-10M": [100, "start"],
    "list-page-100-in-10M-end": [100, "end"],
}


@dataclass(frozen=True)
class Profile:
    users: int
    tasks_per_user: int
    deep_users: int
    #: Users with FEED_CHANGES changes behind their revision, for the change feed scenarios.
    feed_users: int
    bulk_users: int = 0
    bulk_tasks_per_user: int = 0

    def describe(self) -> str:
        text = f"{self.users:,} users × {self.tasks_per_user} tasks, {self.deep_users} user × {DEEP_TASKS:,} tasks"
        text += f", {self.feed_users} users × {FEED_CHANGES:,} changes"
        if self.bulk_users:
            text += f", {self.bulk_users:,} users × {self.bulk_tasks_per_user} tasks"
        return text


PROFILES = {
    "smoke": Profile(users=20, tasks_per_user=5, deep_users=1, feed_users=2),
    "small": Profile(users=1000, tasks_per_user=20, deep_users=1, feed_users=100),
    "large": Profile(
        users=1000, tasks_per_user=20, deep_users=1, feed_users=100, bulk_users=100_000, bulk_tasks_per_user=100
    ),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- processes ----------------------------------------------------------------------------------------


def server_command(server: str, target: str, port: int, workers: int) -> list[str]:
    """Production-style command lines: no reload, no debug, access log off."""
    app, factory = TARGETS[target]
    if server == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", *(["--factory"] if factory else []),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
            "--no-ws", "--log-level", "warning", "--no-access-log", app,
        ]  # fmt: skip
    if server == "uvicorn":
        return [
            sys.executable, "-m", "app.workers", app, *(["--factory"] if factory else []),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", app, *(["--factory"] if factory else []),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools",
    ]  # fmt: skip


def start_target(
    target: str,
    database_url: str,
    jwks_url: str,
    workers: int,
    server: str,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "JWT_JWKS_URL": jwks_url,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": ISSUER,
        # Production's default: the service writes its line per request (to stdout, discarded here; a
        # container runtime's pipe costs the same write).
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        # Production limits, raised past what one benchmark user sends: the limiter still runs on every
        # request (so its cost is measured) but never answers 429, which would be measured as errors.
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "RATE_LIMIT_ANONYMOUS_PER_MINUTE": "100000000",
        # Likewise the per-user bound on requests in flight: the deep-list cells drive one user over all 64
        # connections, which production bounds on purpose (one user may not take the pool) but the ceiling
        # does not; both targets serve that user's 64 connections at once here. It still runs per request.
        "MAX_CONCURRENT_REQUESTS_PER_USER": "1000",
        **(extra_env or {}),
    }
    if workers > 1:
        # As `python -m app serve` does: workers keep their metrics in shared files (what /metrics reads).
        metrics_dir = log.parent / f"{target}-metrics"
        metrics_dir.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    with log.open("ab") as out:
        process = subprocess.Popen(
            server_command(server, target, port, workers),
            cwd=Path(os.environ.get("TMPDIR", "/tmp")),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{target} exited during start-up")
        try:
            return httpx.get(f"{url}/api/x/tasks", timeout=1).status_code == 401
        except httpx.HTTPError:
            return False

    wait_until(ready, 60, f"{target} did not start")
    return process, url


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def peak_rss_mb(pid: int) -> float:
    """Sum of the peak resident set (VmHWM) of a server and its workers."""
    return memory_mb(pid, "VmHWM")


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """Sum of one memory figure of ``/proc/<pid>/status`` (the current resident set by default) over a server
    and its workers."""
    total_kb = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        if match := re.search(rf"{field}:\s+(\d+) kB", status):
            total_kb += int(match.group(1))
    return round(total_kb / 1024, 1)


# --- load ---------------------------------------------------------------------------------------------


def bench_token(user: str, key: SigningKey) -> str:
    return mint(user, key, issuer=ISSUER, audience=ISSUER, expires_in=86_400, email=None, name="Bench")


def write_accounts(
    path: Path,
    key: SigningKey,
    population: Population | dict[str, list[Any]],
    cursors: dict[str, str] | None = None,
) -> Path:
    """The accounts file scenario.lua reads: ``<user> <token> [cursor=<cursor>] [revision=<revision>] <task id> …``
    per line."""
    tasks = population.tasks if isinstance(population, Population) else population
    revisions = population.revisions if isinstance(population, Population) else {}
    with path.open("w") as out:
        for user, task_ids in tasks.items():
            cursor = [f"cursor={cursors[user]}"] if cursors and user in cursors else []
            revision = [f"revision={revisions[user]}"] if user in revisions else []
            words = [user, bench_token(user, key), *cursor, *revision, *(str(t) for t in task_ids)]
            out.write(" ".join(words) + "\n")
    return path


def last_page_cursor(url: str, user: str, token: str) -> tuple[str, int]:
    """Walk ``user``'s listing through the API as a client does (``limit=50``, following ``Link: rel="next"``
    until it is absent); the cursor of the last page and how many pages there were."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        response = client.get(f"/api/{user}/tasks", params={"limit": PAGE}).raise_for_status()
        cursor, pages = None, 1
        while "next" in response.links:
            link = response.links["next"]["url"]
            cursor = parse_qs(urlsplit(link).query)["cursor"][0]
            response = client.get(link).raise_for_status()
            pages += 1
    if cursor is None:
        raise RuntimeError(f"{user}'s listing has a single page: no cursor to measure")
    return cursor, pages


def check_last_page(target: str, url: str, user: str, token: str, cursor: str, task_ids: list[uuid.UUID]) -> None:
    """The cursor's page is the same last page on ``target``: the oldest tasks (seed_users dates task 0 oldest),
    newest first, and no next page. Keeps the measured cell honest on both targets."""
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(f"{url}/api/{user}/tasks", params={"limit": PAGE, "cursor": cursor}, headers=headers)
    response.raise_for_status()
    expected = [str(t) for t in reversed(task_ids[: len(task_ids) % PAGE or PAGE])]
    if [task["id"] for task in response.json()] != expected or "next" in response.links:
        raise RuntimeError(f"{target} does not answer {user}'s cursor with the last page of the listing")


def walk_deep_accounts(servers: dict[str, str], key: SigningKey, deep: Population) -> dict[str, str]:
    """Each deep account's cursor to its last page, walked through the service (the ceiling when it runs alone),
    then checked on every target."""
    walker = "service" if "service" in servers else next(iter(servers))
    cursors: dict[str, str] = {}
    for user, task_ids in deep.tasks.items():
        token = bench_token(user, key)
        cursors[user], pages = last_page_cursor(servers[walker], user, token)
        for target, url in servers.items():
            check_last_page(target, url, user, token, cursors[user], task_ids)
        checked = ", ".join(servers)
        log(f"{user}: walked {pages} pages through the {walker}; its last page by cursor checked on {checked}")
    return cursors


def check_feed(servers: dict[str, str], key: SigningKey, feed: Population, depths: list[int]) -> None:
    """The feed accounts hold what the feed scenarios promise, on every target (one account; all are seeded
    alike): a full sync (``since=0``) reports the revision the seed read, as a client would record it, and from
    ``depth`` changes before it the feed is one page of exactly ``depth`` changes."""
    user = next(iter(feed.tasks))
    revision = feed.revisions[user]
    headers = {"Authorization": f"Bearer {bench_token(user, key)}"}
    for target, url in servers.items():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for since, count in [(0, None), *((revision - depth, depth) for depth in depths)]:
                feed_page = client.get(f"/api/{user}/tasks/changes", params={"since": since}).raise_for_status().json()
                held = len(feed_page["changes"])
                if feed_page["revision"] != revision or feed_page["has_more"] or count not in {None, held}:
                    raise RuntimeError(f"{target}: {user}'s feed since {since} is not {count} changes to {revision}")
    checked = ", ".join(servers)
    log(f"{user}: a full sync reports revision {revision}; since=revision-n brings n changes, {depths}: {checked}")


def fresh_size(scenario: Scenario, profile: Profile, duration: int) -> tuple[int, int, int]:
    """Users, tasks per user and ``completed_every`` (bench/seed.py, seed_users) of a writing scenario's fresh
    population. Deletes get a supply they cannot exhaust; a bulk delete takes a user's completed tasks at once,
    so it gets a user per request; "toggle all" gets users whose tasks are all open, so it changes every one."""
    if scenario.name == "delete":
        return profile.users, max(20, 15_000 * duration // profile.users), 3
    if scenario.name == "bulk-delete-completed":
        return max(profile.users, BULK_DELETES_PER_SECOND * duration), 20, 3
    if scenario.name == "bulk-complete":
        return profile.users, 20, 0
    return profile.users, 20, 3


def connections_per_worker(server_pid: int, port: int) -> list[int]:
    """Established connections to ``port`` held by each of the server's worker processes, busiest first."""
    workers = set(process_tree(server_pid))
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=False, timeout=10,
    ).stdout  # fmt: skip
    held: dict[int, int] = {}
    for pid in (int(match) for match in re.findall(r"pid=(\d+)", listing)):
        if pid in workers:
            held[pid] = held.get(pid, 0) + 1
    return sorted(held.values(), reverse=True)


def run_wrk(
    url: str, scenario: Scenario, accounts: Path, connections: int, duration: int, server_pid: int
) -> tuple[dict[str, Any], list[int]]:
    """One cell: wrk's summary, and how its connections were spread over the workers halfway through."""
    threads = max(1, min(connections, 2))
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(LUA), url,
        "--", scenario.lua, str(accounts), str(threads), str(scenario.offset),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        with contextlib.suppress(subprocess.TimeoutExpired):  # still running, as it should be
            wrk.wait(timeout=duration / 2)
        spread = connections_per_worker(server_pid, urlsplit(url).port or 80)
        output, errors = wrk.communicate(timeout=duration + 120)
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}):\n{errors}")
    line = next((line for line in output.splitlines() if line.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    return dict(json.loads(line.removeprefix("WRK_JSON "))), spread


def to_result(target: str, scenario: Scenario, connections: int, raw: dict[str, Any], rss: float) -> Result:
    duration = raw["duration_us"] / 1e6
    errors = raw["errors"]
    # A 401 is the expected answer of the unauthorized scenario, so its status "errors" are not errors.
    counted = {k: v for k, v in errors.items() if not (scenario.name == "unauthorized" and k == "status")}
    latency = raw["latency_us"]
    return Result(
        target=target,
        scenario=scenario.name,
        connections=connections,
        requests=raw["requests"],
        duration_s=round(duration, 2),
        rps=round(raw["requests"] / duration, 1) if duration else 0.0,
        p50_ms=round(latency["p50"] / 1000, 2),
        p90_ms=round(latency["p90"] / 1000, 2),
        p99_ms=round(latency["p99"] / 1000, 2),
        max_ms=round(latency["max"] / 1000, 2),
        errors=sum(counted.values()),
        error_detail={k: v for k, v in errors.items() if v},
        peak_rss_mb=rss,
    )


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:  # `just bench soak`: ten minutes at half the maximum, see bench/soak.py
        from bench.soak import main as soak  # noqa: PLC0415 - bench.soak imports this module

        return soak(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", nargs="?", choices=sorted(PROFILES), default="small")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario, connection count and target")
    parser.add_argument("--scenarios", default=None, help="comma-separated subset of the scenarios")
    parser.add_argument("--targets", default="service,ceiling")
    parser.add_argument("--workers", type=int, default=2, help="server workers, the same for every target")
    parser.add_argument("--server", choices=SERVERS, default="uvicorn", help="the HTTP server, the same for both")
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/results/…)")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md and the plots alone")
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        log("wrk is not installed (Debian package 'wrk'): apt-get install -y wrk")
        return 2
    profile = PROFILES[args.profile]
    connections = [int(c) for c in args.connections.split(",")]
    targets = [t for t in args.targets.split(",") if t]
    scenarios = SCENARIOS + (LARGE_SCENARIOS if profile.bulk_users else [])
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        unknown = wanted - {s.name for s in scenarios}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.name in wanted]

    admin_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"todo_bench_{args.profile}_{os.getpid()}"
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    output = args.output or RESULTS_DIR / f"{started}-{args.profile}.json"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"todo-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)

    key = new_key("EdDSA")
    jwks = JWKSServer(keys=[key]).start()
    database_url = asyncio.run(create_database(admin_url, name))
    results: list[Result] = []
    try:
        log(f"database {name}: applying migrations")
        upgrade_schema(Settings(database_url=database_url))
        log(f"seeding {profile.describe()}")
        small = asyncio.run(seed_users(database_url, profile.users, profile.tasks_per_user, prefix="s"))
        deep = asyncio.run(seed_users(database_url, profile.deep_users, DEEP_TASKS, prefix="d"))
        feed = asyncio.run(seed_feed(database_url, profile.feed_users, FEED_CHANGES, prefix="f"))
        accounts = {
            "small": write_accounts(work / "small.txt", key, small),
            "deep": write_accounts(work / "deep.txt", key, deep),
            "feed": write_accounts(work / "feed.txt", key, feed),
        }
        if profile.bulk_users:
            log(f"seeding {profile.bulk_users * profile.bulk_tasks_per_user:,} more tasks inside PostgreSQL")
            began = time.monotonic()
            sample = asyncio.run(seed_bulk(database_url, profile.bulk_users, profile.bulk_tasks_per_user, prefix="b"))
            log(f"bulk seed took {time.monotonic() - began:.0f} s")
            accounts["bulk"] = write_accounts(work / "bulk.txt", key, {user: [] for user in sample})

        # Both targets run side by side and take turns, cell by cell, so drift on this shared machine hits both
        # alike; scenarios that write get users of their own each run, so no run sees another's tasks.
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for target in targets:
                log(f"starting {target} ({args.workers} {args.server} worker(s))")
                servers[target] = start_target(
                    target, database_url, jwks.url, args.workers, args.server, work / f"{target}.log"
                )
            if any(scenario.lua == "list-cursor" for scenario in scenarios):
                cursors = walk_deep_accounts({target: url for target, (_, url) in servers.items()}, key, deep)
                accounts["deep"] = write_accounts(work / "deep.txt", key, deep, cursors)
            if depths := [scenario.offset for scenario in scenarios if scenario.lua == "changes"]:
                check_feed({target: url for target, (_, url) in servers.items()}, key, feed, depths)
            runs = 0
            for scenario in scenarios:
                for count in connections:
                    for target, (process, url) in servers.items():
                        scenario_accounts = accounts.get(scenario.accounts)
                        fresh = Population(tasks={})
                        if scenario.accounts == "fresh":
                            runs += 1
                            # Writers get users of their own each run (fresh_size: how many, and how full).
                            users, per_user, completed_every = fresh_size(scenario, profile, args.duration)
                            fresh = asyncio.run(
                                seed_users(
                                    database_url,
                                    users,
                                    per_user,
                                    prefix=f"w{runs:04d}",
                                    completed_every=completed_every,
                                )
                            )
                            scenario_accounts = write_accounts(work / "fresh.txt", key, fresh)
                        assert scenario_accounts is not None
                        raw, spread = run_wrk(url, scenario, scenario_accounts, count, args.duration, process.pid)
                        if scenario.lua == "bulk-delete-completed":
                            # Each request clears at most one user: the others found nothing left to delete.
                            left = asyncio.run(owners_with_completed_tasks(database_url, list(fresh.tasks)))
                            cleared = len(fresh.tasks) - left
                            log(
                                f"{target:>8} {scenario.name}: {raw['requests']:,} requests cleared {cleared:,} of "
                                f"{len(fresh.tasks):,} users; {max(0, raw['requests'] - cleared):,} deleted nothing"
                            )
                        result = to_result(target, scenario, count, raw, peak_rss_mb(process.pid))
                        result.connections_per_worker = spread
                        results.append(result)
                        log(
                            f"{target:>8} {scenario.name:>24} × {count:>3}: {result.rps:>8,.0f} req/s  "
                            f"p50 {result.p50_ms:>6} ms  p99 {result.p99_ms:>7} ms  errors {result.errors}  "
                            f"connections per worker {spread}"
                        )
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    finally:
        jwks.stop()
        asyncio.run(drop_database(admin_url, name))
        shutil.rmtree(work, ignore_errors=True)

    run = {
        "started": started,
        "profile": args.profile,
        "description": profile.describe(),
        "workers": args.workers,
        "server": {
            "granian": "granian (uvloop)",
            "uvicorn-shared": "uvicorn (uvloop, httptools), one socket shared by the workers",
        }.get(args.server, "uvicorn (uvloop, httptools), a socket per worker"),
        "duration_s": args.duration,
        "connections": connections,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results_file": str(output.relative_to(ROOT)) if output.is_relative_to(ROOT) else str(output),
        "list_pages": {k: v for k, v in LIST_PAGES.items() if any(r.scenario == k for r in results)},
    }
    write_json(output, run, results)
    log(f"wrote {output}")
    if not args.no_docs:
        plots = plot(run, results)
        update_docs(run, results, plots)
        log(f"updated docs/benchmarks.md and {len(plots)} plots")
    print(ratio_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
