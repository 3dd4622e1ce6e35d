"""Benchmark results: the JSON record, the table in docs/benchmarks.md and the plots beside it."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ("Result", "load_json", "plot", "ratio_table", "targets_table", "update_docs", "write_json")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "benchmarks"


@dataclass
class Result:
    target: str  # "service" or "ceiling"
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
    # wrk's connections held by each worker process mid-run, busiest first: the kernel gives a new connection to
    # whichever worker accepts first, and wrk keeps its connections for the whole cell.
    connections_per_worker: list[int] = field(default_factory=list)


def write_json(path: Path, run: dict[str, Any], results: list[Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": run, "results": [asdict(r) for r in results]}, indent=2) + "\n")


def load_json(path: Path) -> tuple[dict[str, Any], list[Result]]:
    document = json.loads(path.read_text())
    return document["run"], [Result(**r) for r in document["results"]]


def _pairs(results: list[Result]) -> list[tuple[Result, Result | None]]:
    ceiling = {(r.scenario, r.connections): r for r in results if r.target == "ceiling"}
    return [(r, ceiling.get((r.scenario, r.connections))) for r in results if r.target == "service"]


def ratio_table(results: list[Result]) -> str:
    """Service against ceiling, scenario by scenario: the headline is the ratio, not the absolute figure."""
    lines = [
        "| scenario | conns | service req/s | ceiling req/s | ratio | service p50 / p99 ms | ceiling p50 / p99 ms "
        "| errors (service/ceiling) | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for service, ceiling in _pairs(results):
        ratio = f"{service.rps / ceiling.rps:.0%}" if ceiling and ceiling.rps else "–"
        lines.append(
            f"| {service.scenario} | {service.connections} | {service.rps:,.0f} | "
            f"{f'{ceiling.rps:,.0f}' if ceiling else '–'} | **{ratio}** | {service.p50_ms} / {service.p99_ms} | "
            f"{f'{ceiling.p50_ms} / {ceiling.p99_ms}' if ceiling else '–'} | "
            f"{service.errors}/{ceiling.errors if ceiling else '–'} | {service.peak_rss_mb} |"
        )
    return "\n".join(lines) + "\n"


#: Issue 5's targets, checked against every run.
RATIO_TARGET = 0.60
P99_TARGET_MS = 50.0
P99_SCENARIOS = ("get", "create", "update", "toggle", "list-page-20", "list-page-10k-start", "list-page-10k-end")


def targets_table(run: dict[str, Any], results: list[Result]) -> str:
    """Each target of issue 5 against this run's figures: what was asked, what was measured, whether it holds."""
    service = {(r.scenario, r.connections): r for r in results if r.target == "service"}
    ceiling = {(r.scenario, r.connections): r for r in results if r.target == "ceiling"}
    pairs = [(s, c) for s, c in _pairs(results) if c is not None and s.connections >= 16 and c.rps]
    rows: list[tuple[str, str, bool]] = []
    if pairs:
        held = [s for s, c in pairs if s.rps / c.rps >= RATIO_TARGET]
        worst = min(pairs, key=lambda pair: pair[0].rps / pair[1].rps)
        rows.append(
            (
                f"every scenario ≥ {RATIO_TARGET:.0%} of the ceiling at 16 and 64 connections",
                f"{len(held)} of {len(pairs)} cells; lowest {worst[0].rps / worst[1].rps:.0%} "
                f"({worst[0].scenario} × {worst[0].connections})",
                len(held) == len(pairs),
            )
        )
    errors = sum(r.errors for r in results if r.target == "service")
    rows.append(("0 errors", f"{errors} errors", errors == 0))
    top = max((r.connections for r in results), default=0)
    tails = [service[(name, top)] for name in P99_SCENARIOS if (name, top) in service]
    if tails:
        rows.append(
            (
                f"p99 at {top} connections ≤ {P99_TARGET_MS:.0f} ms (get, create, update, toggle, list pages)",
                ", ".join(f"{r.scenario} {r.p99_ms:g}" for r in tails),
                all(r.p99_ms <= P99_TARGET_MS for r in tails),
            )
        )
    pages: dict[str, list[Any]] = run.get("list_pages", {})
    bound = 2.0 if run.get("profile") == "large" else 1.5
    shallow = "list-page-20"
    for scenario, (tasks, where) in pages.items():
        if scenario == shallow or tasks < 1000:
            continue
        factors = [
            (count, _depth(service, scenario, shallow, count), _depth(ceiling, scenario, shallow, count))
            for count in sorted({r.connections for r in results})
        ]
        measured = [(count, own, theirs) for count, own, theirs in factors if own is not None]
        if measured:
            rows.append(
                (
                    f"p50 of a page at the {where} of {tasks:,} tasks ≤ {bound:g}× a 20-task user's",
                    ", ".join(
                        f"{own:.2f}× at {count}" + (f" (ceiling {theirs:.2f}×)" if theirs else "")
                        for count, own, theirs in measured
                    ),
                    all(own <= bound for _, own, _ in measured),
                )
            )
    return _verdicts(rows)


#: Issue 14's targets: the tail within twice the ceiling's and under a second, half the ceiling's throughput.
TAIL_FACTOR = 2.0
TAIL_LIMIT_MS = 1000.0
TAIL_SCENARIOS = (
    "get", "list", "list-page-20", "list-page-10k-start", "list-page-10k-end", "create", "update", "toggle", "delete",
    "mixed",
)  # fmt: skip
HALF_TARGET = 0.50


def tail_targets_table(results: list[Result]) -> str:
    """Each target of issue 14 against this run: the tail at the most connections, throughput at 16 and more."""
    top = max((r.connections for r in results), default=0)
    pairs = [(s, c) for s, c in _pairs(results) if c is not None and c.rps]
    rows: list[tuple[str, str, bool]] = []
    tails = [(s, c) for s, c in pairs if s.connections == top and s.scenario in TAIL_SCENARIOS and c.p99_ms]
    if tails:
        rows.append(
            (
                f"p99 at {top} connections ≤ {TAIL_FACTOR:g}× the ceiling's (get, list, pages, create, update, "
                "toggle, delete, mixed)",
                ", ".join(f"{s.scenario} {s.p99_ms / c.p99_ms:.1f}×" for s, c in tails),
                all(s.p99_ms <= TAIL_FACTOR * c.p99_ms for s, c in tails),
            )
        )
    slowest = [s for s, _ in pairs if s.connections == top and s.p99_ms > TAIL_LIMIT_MS]
    rows.append(
        (
            f"no scenario's p99 above {TAIL_LIMIT_MS / 1000:g} s at {top} connections",
            ", ".join(f"{s.scenario} {s.p99_ms:,.0f} ms" for s in slowest) or "none",
            not slowest,
        )
    )
    loaded = [
        (s, c)
        for s, c in pairs
        if s.connections >= 16 and s.scenario != "unauthorized"  # the 401 path: no database
    ]
    if loaded:
        held = [s for s, c in loaded if s.rps / c.rps >= HALF_TARGET]
        below = sorted(loaded, key=lambda pair: pair[0].rps / pair[1].rps)
        rows.append(
            (
                f"≥ {HALF_TARGET:.0%} of the ceiling at 16 and more connections, every scenario touching the database",
                f"{len(held)} of {len(loaded)} cells; lowest "
                + ", ".join(f"{s.scenario} × {s.connections} {s.rps / c.rps:.0%}" for s, c in below[:3]),
                len(held) == len(loaded),
            )
        )
    return _verdicts(rows)


def _verdicts(rows: list[tuple[str, str, bool]]) -> str:
    """Targets as a table: what was asked, what was measured, whether it holds."""
    lines = ["| target | this run | holds |", "|---|---|---|"]
    lines += [f"| {target} | {measured} | {'yes' if ok else '**no**'} |" for target, measured, ok in rows]
    return "\n".join(lines) + "\n"


def _depth(figures: dict[tuple[str, int], Result], deep: str, shallow: str, count: int) -> float | None:
    """How many times slower (p50) a deep page is than the shallow one, at ``count`` connections."""
    if (deep, count) not in figures or (shallow, count) not in figures or not figures[(shallow, count)].p50_ms:
        return None
    return figures[(deep, count)].p50_ms / figures[(shallow, count)].p50_ms


def update_docs(run: dict[str, Any], results: list[Result], plots: list[Path]) -> None:
    """Replace the results block of docs/benchmarks.md for this profile with this run."""
    profile = run["profile"]
    body = (
        f"Run {run['started']}: profile `{profile}` ({run['description']}), {run['workers']} worker(s) "
        f"of {run['server']} for each target, {run['duration_s']} s per cell, {run['cpus']} CPUs shared by the "
        f"servers, PostgreSQL and wrk. Raw figures: `{run['results_file']}`.\n\n{ratio_table(results)}\n"
        f"Issue 5's targets against this run:\n\n{targets_table(run, results)}\n"
        f"Issue 14's targets against this run:\n\n{tail_targets_table(results)}"
    )
    write_block(profile, body, plots, heading=f"### Profile `{profile}`")


def write_block(name: str, body: str, plots: list[Path], heading: str) -> None:
    """Put ``body`` and the plots between docs/benchmarks.md's ``bench:<name>`` markers, replacing what was there;
    the first time, append them at the end under ``heading``."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    images = "".join(f"\n![{p.stem}](benchmarks/{p.name})\n" for p in plots)
    block = f"{begin}\n{body}{images}{end}"
    text = DOCS.read_text()
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n{block}\n"
    DOCS.write_text(text)


def plot(run: dict[str, Any], results: list[Result]) -> list[Path]:
    """Throughput and p99 per scenario and connection count, and list latency against tasks per user."""
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    PLOTS.mkdir(parents=True, exist_ok=True)
    profile = run["profile"]
    written: list[Path] = []
    connections = sorted({r.connections for r in results})
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    by_key = {(r.target, r.scenario, r.connections): r for r in results}

    for metric, label in (("rps", "requests/s"), ("p99_ms", "p99 latency (ms)")):
        figure, axes = plt.subplots(1, len(connections), figsize=(6 * len(connections), 5), squeeze=False)
        for axis, count in zip(axes[0], connections, strict=True):
            positions = range(len(scenarios))
            for offset, target in ((-0.2, "service"), (0.2, "ceiling")):
                values = [getattr(by_key.get((target, s, count)), metric, 0) or 0 for s in scenarios]
                axis.bar([p + offset for p in positions], values, width=0.4, label=target)
            axis.set_xticks(list(positions), scenarios, rotation=60, ha="right")
            axis.set_title(f"{count} connection(s)")
            # The 401 path and the deep pages are two orders of magnitude apart: on a linear axis most bars
            # would be slivers.
            axis.set_yscale("log")
            axis.set_ylabel(f"{label}, log scale")
            if metric == "p99_ms" and count == connections[-1]:
                axis.axhline(P99_TARGET_MS, color="black", linestyle="--", linewidth=1, label="target")
            axis.legend()
        figure.suptitle(f"{label}, service vs ceiling ({profile})")
        figure.tight_layout()
        path = PLOTS / f"{profile}-{metric.replace('_ms', '')}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written.append(path)

    pages: dict[str, list[Any]] = run.get("list_pages", {})  # scenario -> [tasks per user, "start" | "end"]
    if pages:
        figure, axis = plt.subplots(figsize=(7, 5))
        count = connections[-1]
        for target in ("service", "ceiling"):
            for where in ("start", "end"):
                points = sorted(
                    (tasks, by_key[(target, scenario, count)].p50_ms)
                    for scenario, (tasks, position) in pages.items()
                    if (position == where or tasks <= 50) and (target, scenario, count) in by_key
                )
                if points:
                    axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{target}, {where}")
        axis.set_xscale("log")
        axis.set_xlabel("tasks of the user (log scale)")
        axis.set_ylabel(f"p50 latency of a 50-task page (ms), {count} connections")
        axis.set_title(f"List pages against list length ({profile})")
        axis.legend()
        figure.tight_layout()
        path = PLOTS / f"{profile}-list-depth.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report bench/results/<run>.json``: redraw a saved run's table and plots in the docs."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    run, results = load_json(args.results)
    update_docs(run, results, plot(run, results))
    print(targets_table(run, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
