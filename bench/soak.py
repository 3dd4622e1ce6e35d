"""Soak: the mixed scenario for ten minutes at half the service's maximum throughput, event streams open throughout.

    python -m bench.run soak [--minutes 10] [--minute-seconds 60] [--streams 100] [--workers 2] [--no-docs]

(``just bench soak``.) In order, printing progress as it goes:

1. a scratch database with the real migrations, the small profile's users and as many writers (the users the
   mixed scenario runs on), a JWKS and a token per user, and the service started as ``bench.run`` starts it
   (``app.main:create_app``, 2 uvicorn workers, the default pool set explicitly so it can be checked);
2. the mixed scenario's maximum throughput at ``--connections`` for ``--calibrate-seconds``;
3. ``--streams`` event streams (``GET /api/{user_id}/tasks/events``), one for each of the writers that run wrote
   to, read in the background until the end, counting the events that arrive; then the mixed scenario at half the
   maximum (scenario.lua paces each connection with wrk's ``delay()`` hook) as ``--minutes`` consecutive wrk runs
   of ``--minute-seconds`` each, so each minute has its own exact p99; the service's resident memory (the uvicorn
   parent and its workers) every second;
4. once the load has stopped, with the streams still open and again after closing them: the service's database
   connections in ``pg_stat_activity`` and the pool gauge of ``/metrics``;
5. the criteria, printed as PASS/FAIL lines: 0 errors; RSS growth after the first minute < 10 %; p99 of the last
   minute ≤ 1.2 × the second minute's; no leaked pool connection; every stream open and delivering; each minute
   at the paced rate;
6. ``bench/results/<time>-soak.json``, ``docs/benchmarks/soak-rss.png`` and ``soak-p99.png``, and the "Soak"
   section of ``docs/benchmarks.md``.

The verdict is in the output and the JSON (``passed``); the exit status is 0 either way, as ``bench.run``'s.
A short trial: ``--minutes 3 --minute-seconds 15 --calibrate-seconds 5 --no-docs``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.config import Settings
from app.db import upgrade_schema
from app.sync.listener import LISTENER_APPLICATION_NAME
from bench.report import PLOTS, write_block
from bench.run import (
    DEFAULT_ADMIN_URL,
    LUA,
    PROFILES,
    RESULTS_DIR,
    ROOT,
    SCENARIOS,
    bench_token,
    log,
    memory_mb,
    peak_rss_mb,
    start_target,
    to_result,
    write_accounts,
)
from bench.seed import connect, seed_users
from bench.sync import metric, open_stream
from tests.support.databases import create_database, drop_database
from tests.support.issuer import JWKSServer, new_key
from tests.support.servers import terminate, until

__all__ = ("criteria", "main", "plot", "update_docs")

MIXED = next(scenario for scenario in SCENARIOS if scenario.name == "mixed")
STREAMS_OPEN = "todo_api_event_streams_open"
POOL_IN_USE = "todo_api_db_pool_connections_in_use"
POOL_MAX = "todo_api_db_pool_connections_max"
#: The issue's bounds.
RSS_GROWTH_BOUND = 0.10
P99_GROWTH_BOUND = 1.2
#: How far a paced minute's rate may stray from the target before the run is not the load it claims to be.
RATE_TOLERANCE = 0.10
#: Once wrk stops, the requests it abandoned may still be finishing; a leak is what remains after this.
SETTLE_SECONDS = 10.0


# --- load ---------------------------------------------------------------------------------------------


async def wrk_summary(
    url: str, accounts: Path, connections: int, seconds: int, interval_ms: float | None = None
) -> dict[str, Any]:
    """One wrk run of the mixed scenario, its ``done()`` summary; with ``interval_ms``, each connection sends one
    request per interval (scenario.lua's opt-in pacing), else as fast as it is answered."""
    threads = max(1, min(connections, 2))
    pacing = [f"{interval_ms:.3f}", str(connections)] if interval_ms else []
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url,
        "--", MIXED.lua, str(accounts), str(threads), str(MIXED.offset), *pacing,
    ]  # fmt: skip
    wrk = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    output, errors = await asyncio.wait_for(wrk.communicate(), timeout=seconds + 120)
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}):\n{errors.decode(errors='replace')}")
    line = next((line for line in output.decode().splitlines() if line.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output.decode(errors='replace')}")
    return dict(json.loads(line.removeprefix("WRK_JSON ")))


@dataclass
class Streams:
    """Event streams held open and read in the background: the events that arrived, and why any stream ended."""

    events: int = 0
    ended: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(self, url: str, tokens: dict[str, str]) -> None:
        opened = await asyncio.gather(*(open_stream(url, user, token) for user, token in tokens.items()))
        self.readers = [asyncio.create_task(self._read(reader, writer)) for reader, writer in opened]

    @property
    def still_open(self) -> int:
        return sum(not reader.done() for reader in self.readers)

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The body is chunked, one chunk per write of the service (whole events), so reading by lines sees the
        # chunk sizes between them; "0" is the last chunk: the service ended the stream.
        try:
            while True:
                line = await reader.readline()
                if not line or line == b"0\r\n":
                    self.ended.append("ended by the service")
                    return
                if line.startswith(b"data:"):
                    self.events += 1
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            self.ended.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()


async def sample_rss(pid: int, began: float, samples: list[tuple[float, float]]) -> None:
    """The service's resident memory (parent and workers) once a second from ``began``, until cancelled."""
    tick = 0
    while True:
        samples.append((round(time.monotonic() - began, 1), await asyncio.to_thread(memory_mb, pid)))
        tick += 1
        await asyncio.sleep(max(0.0, began + tick - time.monotonic()))


async def connection_state(url: str, database_url: str) -> dict[str, Any]:
    """The service's database connections once nothing should hold one: ``pg_stat_activity`` on the scratch
    database (the LISTEN connections, outside the pool, apart) and the pool gauge, polled until the pool is idle or
    :data:`SETTLE_SECONDS` have passed."""
    deadline = time.monotonic() + SETTLE_SECONDS
    connection = await connect(database_url)
    try:
        while True:
            rows = await connection.fetch(
                "SELECT state, application_name LIKE $1 AS listener FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                f"{LISTENER_APPLICATION_NAME}%",
            )
            states = Counter(str(row["state"]) for row in rows if not row["listener"])
            in_use = await asyncio.to_thread(metric, url, POOL_IN_USE)
            if (set(states) <= {"idle"} and in_use == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
    return {
        "pooled_connections": sum(states.values()),
        "states": dict(states),
        "listen_connections": sum(1 for row in rows if row["listener"]),
        "pool_in_use_metric": in_use,
        "pool_max_metric": await asyncio.to_thread(metric, url, POOL_MAX),
    }


async def written_users(database_url: str, users: list[str], count: int) -> tuple[list[str], int]:
    """The ``count`` users of ``users`` written to most (by their revision), and how many were written to at all.

    Streams go to users the mixed scenario writes to (one request in five is a write, spread over its users a
    round at a time), so that each receives events; ``count`` is at most the writers."""
    connection = await connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT id, revision > min(revision) OVER () AS written FROM users WHERE id = ANY($1::text[]) "
            "ORDER BY revision DESC, id",
            users,
        )
    finally:
        await connection.close()
    return [row["id"] for row in rows[:count]], sum(1 for row in rows if row["written"])


async def soak(
    url: str, pid: int, accounts: Path, tokens: dict[str, str], database_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Calibration, streams, the paced minutes and the connection checks; the figures, before the verdict."""
    raw = await wrk_summary(url, accounts, args.connections, args.calibrate_seconds)
    calibration = to_result("service", MIXED, args.connections, raw, await asyncio.to_thread(peak_rss_mb, pid))
    target = calibration.rps / 2
    interval_ms = args.connections * 1000 / target
    log(
        f"maximum of mixed × {args.connections}: {calibration.rps:,.0f} req/s (p99 {calibration.p99_ms} ms, "
        f"errors {calibration.errors}); pacing to {target:,.0f} req/s, one request per {interval_ms:.1f} ms "
        "per connection"
    )

    # The paced runs write to the users the calibration wrote to (the same accounts, split and walked alike).
    listeners, written = await written_users(database_url, list(tokens), args.streams)
    streams = Streams()
    await streams.open(url, {user: tokens[user] for user in listeners})
    await until(lambda: metric(url, STREAMS_OPEN) >= len(listeners), "the service did not report every stream open")
    log(f"{len(listeners)} event streams open, of the {written} users the mixed scenario writes to")

    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    sampler = asyncio.create_task(sample_rss(pid, began, samples))
    minutes: list[dict[str, Any]] = []
    try:
        for minute in range(1, args.minutes + 1):
            raw = await wrk_summary(url, accounts, args.connections, args.minute_seconds, interval_ms)
            rss = await asyncio.to_thread(memory_mb, pid)
            result = to_result("service", MIXED, args.connections, raw, await asyncio.to_thread(peak_rss_mb, pid))
            minutes.append({"minute": minute, "ended_s": round(time.monotonic() - began, 1), "rss_mb": rss})
            minutes[-1].update(asdict(result))
            log(
                f"minute {minute}/{args.minutes}: {result.rps:>7,.0f} req/s  p50 {result.p50_ms:>6} ms  "
                f"p99 {result.p99_ms:>7} ms  errors {result.errors}  RSS {rss} MB  "
                f"streams open {streams.still_open}/{len(listeners)}, {streams.events} events so far"
            )
    finally:
        sampler.cancel()

    log("load stopped: the service's database connections, streams still open")
    stream_figures = {
        "opened": len(listeners),
        "users_written_to": written,
        "still_open": streams.still_open,
        "reported_open": await asyncio.to_thread(metric, url, STREAMS_OPEN),
        "events": streams.events,
        "ended": dict(Counter(streams.ended)),
    }
    with_streams = await connection_state(url, database_url)
    await streams.close()
    await until(lambda: metric(url, STREAMS_OPEN) == 0, "the service did not see the streams close")
    log("streams closed: the service's database connections again")
    without_streams = await connection_state(url, database_url)
    return {
        "calibration": asdict(calibration),
        "target_rps": round(target, 1),
        "interval_ms": round(interval_ms, 3),
        "minutes": minutes,
        "rss": samples,
        "streams": stream_figures,
        "connections_after_load": {"streams_open": with_streams, "streams_closed": without_streams},
    }


# --- verdict ------------------------------------------------------------------------------------------


def criteria(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """Each criterion of the soak against the run's figures: what was asked, what was measured, whether it holds."""
    minutes = outcome["minutes"]
    rows: list[tuple[str, str, bool]] = []

    errors = sum(m["errors"] for m in minutes)
    detail: Counter[str] = Counter()
    for m in minutes:
        detail.update(m["error_detail"])
    rows.append(
        (
            "0 errors (non-2xx/3xx responses and socket errors, every minute)",
            f"{errors} errors" + (f" ({', '.join(f'{k} {v}' for k, v in detail.items())})" if detail else ""),
            errors == 0,
        )
    )

    first, last = minutes[0]["rss_mb"], minutes[-1]["rss_mb"]
    growth = (last - first) / first if first else 0.0
    rows.append(
        (
            f"RSS growth after warm-up < {RSS_GROWTH_BOUND:.0%} (end of minute 1 → end of the run)",
            f"{first} → {last} MB ({growth:+.1%})",
            growth < RSS_GROWTH_BOUND,
        )
    )

    second, final = minutes[1]["p99_ms"], minutes[-1]["p99_ms"]
    rows.append(
        (
            f"p99 of the last minute ≤ {P99_GROWTH_BOUND:g} × the second minute's",
            f"{final} ms against {second} ms ({final / second:.2f}×)" if second else f"{final} ms against 0 ms",
            final <= P99_GROWTH_BOUND * second,
        )
    )

    pool = outcome["run"]["pool"]
    phases = outcome["connections_after_load"]
    busy = {
        phase: {state: n for state, n in figures["states"].items() if state != "idle"}
        for phase, figures in phases.items()
    }
    in_use = {phase: figures["pool_in_use_metric"] for phase, figures in phases.items()}
    rows.append(
        (
            "no leaked pool connection once the load stops: none active or idle in transaction, 0 checked out "
            "(streams open, then closed)",
            "; ".join(
                f"{phase.replace('_', ' ')}: {', '.join(f'{n} {s}' for s, n in busy[phase].items()) or 'all idle'}, "
                f"gauge {in_use[phase]:g} checked out"
                for phase in phases
            ),
            not any(busy.values()) and not any(in_use.values()),
        )
    )
    counts = {phase: figures["pooled_connections"] for phase, figures in phases.items()}
    rows.append(
        (
            f"the service's pooled connections ≤ its pool ({pool['bound']} = {pool['workers']} workers × "
            f"({pool['size']} + {pool['max_overflow']} overflow))",
            ", ".join(f"{n} with {phase.replace('_', ' ')}" for phase, n in counts.items())
            + f" (+ {phases['streams_open']['listen_connections']} LISTEN)",
            all(n <= pool["bound"] for n in counts.values()),
        )
    )

    streams = outcome["streams"]
    rows.append(
        (
            "every event stream open to the end, none ended by an error, events received",
            f"{streams['still_open']} of {streams['opened']} open, {streams['events']:,} events"
            + (f", ended: {streams['ended']}" if streams["ended"] else ""),
            streams["still_open"] == streams["opened"] and not streams["ended"] and streams["events"] > 0,
        )
    )

    target = outcome["target_rps"]
    rates = [m["rps"] for m in minutes]
    rows.append(
        (
            f"each minute within {RATE_TOLERANCE:.0%} of the paced target ({target:,.0f} req/s, half the maximum)",
            f"{min(rates):,.0f} to {max(rates):,.0f} req/s",
            all(abs(rate - target) <= RATE_TOLERANCE * target for rate in rates),
        )
    )
    return [{"criterion": c, "measured": m, "passed": ok} for c, m, ok in rows]


def criteria_table(outcome: dict[str, Any]) -> str:
    lines = ["| criterion | this run | holds |", "|---|---|---|"]
    lines += [
        f"| {c['criterion']} | {c['measured']} | {'yes' if c['passed'] else '**no**'} |" for c in outcome["criteria"]
    ]
    return "\n".join(lines) + "\n"


def minutes_table(outcome: dict[str, Any]) -> str:
    lines = [
        "| minute | req/s | p50 ms | p99 ms | max ms | errors | RSS MB at its end |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {m['minute']} | {m['rps']:,.0f} | {m['p50_ms']} | {m['p99_ms']} | {m['max_ms']} | {m['errors']} | "
        f"{m['rss_mb']} |"
        for m in outcome["minutes"]
    ]
    return "\n".join(lines) + "\n"


# --- report -------------------------------------------------------------------------------------------


def plot(outcome: dict[str, Any]) -> list[Path]:
    """Resident memory over the run, and p99 and throughput minute by minute."""
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    PLOTS.mkdir(parents=True, exist_ok=True)
    run, minutes = outcome["run"], outcome["minutes"]
    load = f"{run['minutes']} × {run['minute_seconds']} s of mixed at {outcome['target_rps']:,.0f} req/s"

    figure, axis = plt.subplots(figsize=(9, 4.5))
    axis.plot([s for s, _ in outcome["rss"]], [mb for _, mb in outcome["rss"]], label="uvicorn parent + workers")
    for m in minutes:
        axis.axvline(m["ended_s"], color="grey", linewidth=0.5)
    bound = minutes[0]["rss_mb"] * (1 + RSS_GROWTH_BOUND)
    axis.axhline(bound, color="black", linestyle="--", linewidth=1, label=f"+{RSS_GROWTH_BOUND:.0%} over minute 1")
    axis.set_xlabel("seconds (grey lines: the end of each minute)")
    axis.set_ylabel("resident memory (MB)")
    axis.set_ylim(bottom=0)
    axis.set_title(f"Service memory during the soak ({load})")
    axis.legend(loc="lower right")
    figure.tight_layout()
    rss_path = PLOTS / "soak-rss.png"
    figure.savefig(rss_path, dpi=80)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(9, 4.5))
    numbers = [m["minute"] for m in minutes]
    rates = axis.twinx()
    rates.bar(numbers, [m["rps"] for m in minutes], color="tab:grey", alpha=0.3, label="req/s")
    rates.axhline(outcome["target_rps"], color="tab:grey", linestyle=":", linewidth=1, label="paced target")
    rates.set_ylabel("requests/s")
    rates.set_ylim(0, 1.5 * max(outcome["target_rps"], *(m["rps"] for m in minutes)))  # room for the legend
    axis.plot(numbers, [m["p99_ms"] for m in minutes], marker="o", color="tab:red", label="p99")
    axis.plot(numbers, [m["p50_ms"] for m in minutes], marker=".", color="tab:blue", label="p50")
    axis.axhline(P99_GROWTH_BOUND * minutes[1]["p99_ms"], color="black", linestyle="--", linewidth=1,
                 label=f"{P99_GROWTH_BOUND:g} × minute 2's p99")  # fmt: skip
    axis.set_zorder(rates.get_zorder() + 1)  # the lines over the bars
    axis.patch.set_visible(False)
    axis.set_xticks(numbers)
    axis.set_xlabel("minute")
    axis.set_ylabel("latency (ms)")
    axis.set_ylim(0, 1.5 * max(P99_GROWTH_BOUND * minutes[1]["p99_ms"], *(m["p99_ms"] for m in minutes)))
    axis.set_title(f"Latency and throughput per minute ({load})")
    handles = [*axis.get_legend_handles_labels()[0], *rates.get_legend_handles_labels()[0]]
    axis.legend(handles=handles, loc="upper left", ncol=3)
    figure.tight_layout()
    p99_path = PLOTS / "soak-p99.png"
    figure.savefig(p99_path, dpi=80)
    plt.close(figure)
    return [rss_path, p99_path]


def update_docs(outcome: dict[str, Any], plots: list[Path]) -> None:
    """Replace the soak block of docs/benchmarks.md (under "## Soak", added at the end the first time) with this run."""
    run = outcome["run"]
    calibration = outcome["calibration"]
    body = (
        f"Run {run['started']}: `just bench soak` — {run['minutes']} consecutive wrk runs of "
        f"{run['minute_seconds']} s of the `mixed` scenario at {outcome['target_rps']:,.0f} req/s (half the "
        f"{calibration['rps']:,.0f} req/s measured at {run['connections']} connections over "
        f"{run['calibrate_seconds']} s), {run['connections']} connections each paced to one request per "
        f"{outcome['interval_ms']:g} ms, with {run['streams']} event streams open; profile `{run['profile']}`, "
        f"{run['workers']} uvicorn workers, {run['cpus']} CPUs shared by the service, PostgreSQL and wrk. Raw "
        f"figures: `{run['results_file']}`.\n\n{minutes_table(outcome)}\n{criteria_table(outcome)}"
    )
    write_block("soak", body, plots, heading="## Soak")


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10, help="consecutive wrk runs (at least 2)")
    parser.add_argument("--minute-seconds", type=int, default=60, help="seconds of each run: a minute, unless trying")
    parser.add_argument("--calibrate-seconds", type=int, default=10, help="seconds of the unpaced maximum")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--streams", type=int, default=100, help="event streams, one per writer (at most its users)")
    parser.add_argument("--profile", choices=("smoke", "small"), default="small", help="population, as bench.run's")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/results/…)")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md and the plots alone")
    args = parser.parse_args(argv)
    if args.minutes < 2:
        parser.error("--minutes must be at least 2: the last minute is compared with the second")

    if shutil.which("wrk") is None:
        log("wrk is not installed (Debian package 'wrk'): apt-get install -y wrk")
        return 2
    profile = PROFILES[args.profile]
    if args.streams > profile.users:
        parser.error(f"--streams: the {args.profile} profile has {profile.users} writers, one stream each")
    admin_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"todo_bench_soak_{os.getpid()}"
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    output = args.output or RESULTS_DIR / f"{started}-soak.json"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"todo-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    # The service's pool, as production's defaults, set explicitly so the check below knows its bound.
    defaults = Settings()
    pool = {
        "workers": args.workers,
        "size": defaults.database_pool_size,
        "max_overflow": defaults.database_max_overflow,
        "bound": args.workers * (defaults.database_pool_size + defaults.database_max_overflow),
    }
    pool_env = {"DATABASE_POOL_SIZE": str(pool["size"]), "DATABASE_MAX_OVERFLOW": str(pool["max_overflow"])}

    key = new_key("EdDSA")
    jwks = JWKSServer(keys=[key]).start()
    database_url = asyncio.run(create_database(admin_url, name))
    try:
        log(f"database {name}: applying migrations")
        upgrade_schema(Settings(database_url=database_url))
        log(f"seeding {profile.users:,} users × {profile.tasks_per_user} tasks, and as many writers")
        asyncio.run(seed_users(database_url, profile.users, profile.tasks_per_user, prefix="s"))
        writers = asyncio.run(seed_users(database_url, profile.users, profile.tasks_per_user, prefix="w"))
        accounts = write_accounts(work / "writers.txt", key, writers)
        tokens = {user: bench_token(user, key) for user in writers.tasks}
        log(f"starting the service ({args.workers} uvicorn worker(s))")
        process, url = start_target("service", database_url, jwks.url, args.workers, "uvicorn", work / "service.log",
                                    pool_env)  # fmt: skip
        try:
            outcome = asyncio.run(soak(url, process.pid, accounts, tokens, database_url, args))
        finally:
            terminate(process, timeout=30)
    finally:
        jwks.stop()
        asyncio.run(drop_database(admin_url, name))
        shutil.rmtree(work, ignore_errors=True)

    outcome = {
        "run": {
            "started": started,
            "profile": args.profile,
            "description": f"{profile.users:,} users × {profile.tasks_per_user} tasks, and as many writers",
            "workers": args.workers,
            "server": "uvicorn (uvloop, httptools)",
            "connections": args.connections,
            "minutes": args.minutes,
            "minute_seconds": args.minute_seconds,
            "calibrate_seconds": args.calibrate_seconds,
            "streams": args.streams,
            "pool": pool,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "results_file": str(output.relative_to(ROOT)) if output.is_relative_to(ROOT) else str(output),
        },
        **outcome,
    }
    outcome["criteria"] = criteria(outcome)
    outcome["passed"] = all(c["passed"] for c in outcome["criteria"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(outcome, indent=2) + "\n")
    log(f"wrote {output}")
    if not args.no_docs:
        plots = plot(outcome)
        update_docs(outcome, plots)
        log(f"updated docs/benchmarks.md and {len(plots)} plots")
    for c in outcome["criteria"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['criterion']}: {c['measured']}")
    print("soak: PASS" if outcome["passed"] else "soak: FAIL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
