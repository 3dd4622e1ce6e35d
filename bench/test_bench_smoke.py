"""The benchmark's own smoke test: a tiny run through the real tooling, checking the result file it writes.

It measures nothing worth reading (a second per cell) and asserts no speed: it proves `just bench` works.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.report import load_json, targets_table
from tests.support.prerequisites import require

ROOT = Path(__file__).resolve().parent.parent
RESULT_FIELDS = {"target", "scenario", "connections", "requests", "rps", "p50_ms", "p90_ms", "p99_ms", "errors"}
#: Writes, the 401 path, the 10 000-task list's first page and its last page by cursor, the change feed's largest
#: page, and both bulk actions.
SCENARIOS = (
    "get",
    "create",
    "unauthorized",
    "list-page-10k-start",
    "list-page-10k-end",
    "changes-1000",
    "bulk-complete",
    "bulk-delete-completed",
)


def test_a_tiny_benchmark_run_writes_a_well_formed_result_file(tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk is not installed (Debian package 'wrk')")
    output = tmp_path / "smoke.json"

    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "smoke", "--duration", "1", "--connections", "2",
         "--scenarios", ",".join(SCENARIOS), "--workers", "1", "--no-docs", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    document = json.loads(output.read_text())
    assert {"started", "profile", "workers", "server", "duration_s", "connections"} <= set(document["run"])
    results = document["results"]
    assert {(r["target"], r["scenario"]) for r in results} == {
        (target, scenario) for target in ("service", "ceiling") for scenario in SCENARIOS
    }
    # The last page's cursor was walked to through the service, and both targets answered it with the last page
    # (the run fails otherwise); a cursor refused by either target would count as errors below.
    assert "walked 200 pages through the service; its last page by cursor checked on service, ceiling" in (
        completed.stdout
    )
    # Likewise the feed accounts: a full sync's revision, and exactly 1 000 changes behind it, on both targets.
    assert "since=revision-n brings n changes, [1000]: service, ceiling" in completed.stdout
    for result in results:
        assert set(result) >= RESULT_FIELDS
        assert result["requests"] > 0
        assert result["errors"] == 0, result
        assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
        assert result["connections_per_worker"] == [2], result  # wrk's 2 connections, on the one worker
    assert "| get | 2 |" in completed.stdout  # the ratio table was printed
    run, loaded = load_json(output)
    verdicts = targets_table(run, loaded)
    assert "| every scenario ≥ 60% of the ceiling" not in verdicts  # 2 connections: no cell at 16 or 64
    assert "| 0 errors | 0 errors | yes |" in verdicts


def test_a_tiny_soak_writes_its_figures_and_a_verdict_on_each_criterion(tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk is not installed (Debian package 'wrk')")
    output = tmp_path / "soak.json"

    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "soak", "--profile", "smoke", "--minutes", "2", "--minute-seconds", "3",
         "--calibrate-seconds", "2", "--streams", "5", "--no-docs", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    document = json.loads(output.read_text())
    assert {"calibration", "target_rps", "interval_ms", "minutes", "rss", "streams", "connections_after_load"} <= set(
        document
    )
    assert [m["minute"] for m in document["minutes"]] == [1, 2]
    for minute in document["minutes"]:
        assert set(minute) >= RESULT_FIELDS | {"rss_mb", "ended_s"}
        assert minute["requests"] > 0
    assert document["rss"], "memory was never sampled"
    assert document["streams"]["opened"] == 5
    assert set(document["connections_after_load"]) == {"streams_open", "streams_closed"}
    # Whether the criteria hold in three seconds on a shared machine is not the point: that each was judged is.
    criteria = document["criteria"]
    assert len(criteria) == 7
    for criterion in criteria:
        assert isinstance(criterion["passed"], bool)
        assert f"{'PASS' if criterion['passed'] else 'FAIL'}  {criterion['criterion']}" in completed.stdout
    assert document["passed"] == all(c["passed"] for c in criteria)
