"""Benchmark the Todo API the way production runs it, with wrk on loopback.

    python -m bench.run [--profile small|smoke] [--connections 1,16,64] [--duration 5] [--scenarios ...]

What it does, in order (progress is printed as it goes):

1. creates a scratch PostgreSQL database (``BENCH_DATABASE_URL`` or ``TEST_DATABASE_URL``'s server) and applies
   the real migrations;
2. seeds users and tasks with ``COPY`` (not row by row);
3. serves a JWKS on loopback and signs one EdDSA token per user, as Better Auth would;
4. starts the service with uvicorn (no reload, no debug, access log off) against that database and JWKS;
5. runs every scenario at every connection count with wrk for a bounded duration, recording throughput,
   p50/p90/p99 latency, errors and the server's peak RSS;
6. writes ``bench/results/<timestamp>.json`` and rewrites the results table in ``docs/benchmarks.md``.

Figures from this machine are shared-core and noisy: compare runs made in one sitting, never assert on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db import upgrade_schema
from tests.databases import create_database, drop_database
from tests.issuer import JWKSServer, mint, new_key

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
LUA = ROOT / "bench" / "wrk" / "scenario.lua"
ISSUER = "http://127.0.0.1:3000"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

SCENARIOS = ("list", "get", "create", "update", "toggle", "delete", "unauthorized", "mixed")


@dataclass(frozen=True)
class Profile:
    users: int
    tasks_per_user: int


PROFILES = {
    "smoke": Profile(users=20, tasks_per_user=5),
    "small": Profile(users=1000, tasks_per_user=20),
}


@dataclass
class Result:
    scenario: str
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_detail: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- database ---------------------------------------------------------------------------------------------


async def seed(database_url: str, profile: Profile, *, id_prefix: str) -> dict[str, list[uuid.UUID]]:
    """Insert ``profile.users`` users with ``profile.tasks_per_user`` tasks each, by COPY; returns task ids per user."""
    url = make_url(database_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )
    now = datetime.now(UTC)
    users = [f"{id_prefix}{n:08d}".ljust(32, "x") for n in range(profile.users)]
    tasks: dict[str, list[uuid.UUID]] = {user: [] for user in users}
    task_rows = []
    for user in users:
        for n in range(profile.tasks_per_user):
            task_id = uuid.uuid4()
            tasks[user].append(task_id)
            stamp = now - timedelta(seconds=profile.tasks_per_user - n)
            task_rows.append((task_id, user, f"task {n} of {user[:12]}", None, n % 3 == 0, stamp, stamp))
    try:
        await connection.copy_records_to_table(
            "users",
            records=[(user, f"{user}@bench.example", "Bench User", now, now) for user in users],
            columns=["id", "email", "name", "created_at", "updated_at"],
        )
        await connection.copy_records_to_table(
            "tasks",
            records=task_rows,
            columns=["id", "user_id", "title", "description", "completed", "created_at", "updated_at"],
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return tasks


# --- the service ------------------------------------------------------------------------------------------


def start_service(database_url: str, jwks_url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_JWKS_URL": jwks_url,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": ISSUER,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("JWT_SECRET", None)
    env.pop("BETTER_AUTH_URL", None)
    command = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("the service exited during start-up")
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the service did not become ready within 30 s")


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def peak_rss_mb(pid: int) -> float:
    """Sum of the peak resident set (VmHWM) of the server and its workers."""
    total_kb = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"VmHWM:\s+(\d+) kB", status):
            total_kb += int(match.group(1))
    return round(total_kb / 1024, 1)


# --- load ---------------------------------------------------------------------------------------------


def write_accounts(path: Path, tokens: dict[str, str], tasks: dict[str, list[uuid.UUID]]) -> None:
    lines = [" ".join([user, tokens[user], *(str(t) for t in tasks[user])]) for user in tasks]
    path.write_text("\n".join(lines) + "\n")


def run_wrk(base_url: str, scenario: str, accounts: Path, connections: int, duration: int) -> dict[str, Any]:
    threads = max(1, min(connections, 2))
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(LUA), base_url, "--", scenario, str(accounts), str(threads),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    line = next((line for line in output.splitlines() if line.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    return dict(json.loads(line.removeprefix("WRK_JSON ")))


def to_result(scenario: str, connections: int, raw: dict[str, Any], rss: float) -> Result:
    duration = raw["duration_us"] / 1e6
    errors = raw["errors"]
    # A 401 is the expected answer of the unauthorized scenario, so its status "errors" are not errors.
    counted = {k: v for k, v in errors.items() if not (scenario == "unauthorized" and k == "status")}
    latency = raw["latency_us"]
    return Result(
        scenario=scenario,
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


# --- reporting ----------------------------------------------------------------------------------------


def markdown_table(results: list[Result]) -> str:
    header = (
        "| scenario | conns | req/s | p50 ms | p90 ms | p99 ms | errors | peak RSS MB |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r.scenario} | {r.connections} | {r.rps:,.0f} | {r.p50_ms} | {r.p90_ms} | {r.p99_ms} "
        f"| {r.errors} | {r.peak_rss_mb} |"
        for r in results
    ]
    return header + "\n".join(rows) + "\n"


def update_docs(run: dict[str, Any], results: list[Result]) -> None:
    begin, end = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
    block = (
        f"{begin}\nLatest `just bench` run: {run['started']} — profile `{run['profile']}` "
        f"({run['users']} users × {run['tasks_per_user']} tasks), {run['workers']} uvicorn worker(s), "
        f"{run['duration_s']} s per cell, {run['cpus']} CPUs shared by server, PostgreSQL and wrk. "
        f"Raw figures: `{run['results_file']}`.\n\n{markdown_table(results)}{end}"
    )
    text = DOCS.read_text() if DOCS.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
    else:
        text += f"\n{block}\n"
    DOCS.write_text(text)


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="small")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario and connection count")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/results/<time>.json)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        log("wrk is not installed (Debian package 'wrk'): apt-get install -y wrk")
        return 2
    profile = PROFILES[args.profile]
    connections = [int(c) for c in args.connections.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")

    admin_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"todo_bench_{os.getpid()}"
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    output = args.output or RESULTS_DIR / f"{started}.json"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"todo-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)

    key = new_key("EdDSA")
    jwks = JWKSServer(keys=[key]).start()
    database_url = asyncio.run(create_database(admin_url, name))
    service: subprocess.Popen[bytes] | None = None
    results: list[Result] = []
    try:
        log(f"database {name}: applying migrations")
        upgrade_schema(Settings(database_url=database_url))
        log(f"seeding {profile.users} users × {profile.tasks_per_user} tasks with COPY")
        tasks = asyncio.run(seed(database_url, profile, id_prefix="u"))
        tokens = {user: mint(user, key, issuer=ISSUER, audience=ISSUER, expires_in=86_400) for user in tasks}
        accounts = work / "accounts.txt"
        write_accounts(accounts, tokens, tasks)

        port = free_port()
        log(f"starting the service on 127.0.0.1:{port} with {args.workers} worker(s)")
        service = start_service(database_url, jwks.url, port, args.workers)
        base_url = f"http://127.0.0.1:{port}"

        for scenario in scenarios:
            for count in connections:
                scenario_accounts = accounts
                if scenario == "delete":
                    # Deletes consume tasks: give every run a fresh supply it cannot exhaust.
                    spare = Profile(users=profile.users, tasks_per_user=max(5, 3000 * args.duration // profile.users))
                    fresh = asyncio.run(
                        seed(database_url, spare, id_prefix=f"d{count:03d}{random.randrange(10**4):04d}")
                    )
                    scenario_accounts = work / f"delete-{count}.txt"
                    fresh_tokens = {u: mint(u, key, issuer=ISSUER, audience=ISSUER, expires_in=86_400) for u in fresh}
                    write_accounts(scenario_accounts, fresh_tokens, fresh)
                log(f"{scenario:>12} × {count:>3} connections for {args.duration} s")
                raw = run_wrk(base_url, scenario, scenario_accounts, count, args.duration)
                result = to_result(scenario, count, raw, peak_rss_mb(service.pid))
                results.append(result)
                log(
                    f"{'':>12}   {result.rps:>8,.0f} req/s  p50 {result.p50_ms} ms  p99 {result.p99_ms} ms  "
                    f"errors {result.errors}"
                )
    finally:
        if service is not None:
            service.terminate()
            service.wait(timeout=30)
        jwks.stop()
        asyncio.run(drop_database(admin_url, name))
        shutil.rmtree(work, ignore_errors=True)

    run = {
        "started": started,
        "profile": args.profile,
        "users": profile.users,
        "tasks_per_user": profile.tasks_per_user,
        "workers": args.workers,
        "duration_s": args.duration,
        "connections": connections,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results_file": str(output.relative_to(ROOT)) if output.is_relative_to(ROOT) else str(output),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"run": run, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    log(f"wrote {output}")
    if not args.no_docs:
        update_docs(run, results)
        log(f"updated {DOCS.relative_to(ROOT)}")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
