"""Smoke test of the quality benchmark: structure and sanity of its output."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quality_smoke_runs_and_scores(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--smoke", "--out",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert elapsed < 120  # budget 60 s on an idle 2-core machine; generous under load

    data = json.loads((tmp_path / "quality-smoke.json").read_text())
    assert (tmp_path / "quality-smoke.png").stat().st_size > 0
    assert set(data) >= {"meta", "summary", "runs", "optima"}
    runs = data["runs"]
    assert {r["method"] for r in runs} == {"hz-ray", "random"}
    assert all("error" not in r for r in runs)
    hours = data["meta"]["hours"][0]
    for r in runs:
        assert r["world"] == "test_function:branin"
        assert math.isfinite(r["gain_pct"]) and r["violation_pp"] >= 0
        assert r["feasible"] == (r["violation_pp"] <= 1e-7)
        assert len(r["trace"]) == hours
        assert [t[0] for t in r["trace"]] == list(range(hours))
        assert r["n_arms"] >= 3 and r["online_cost_pp"] >= 0
        assert r["first_feasible_hour"] is None or 0 <= r["first_feasible_hour"] < hours
        # The true optimum bounds every feasible recommendation and every feasible arm.
        assert r["optimum_pct"] > 0
        if r["feasible"]:
            assert r["gain_pct"] <= r["optimum_pct"] + 1e-9
            assert math.isclose(r["regret_pp"], r["optimum_pct"] - r["gain_pct"])
        assert r["best_ran_pct"] <= r["optimum_pct"] + 1e-9
        # What the traffic can certify is at most the optimum (and never negative).
        assert 0 <= r["yardstick_pct"] <= r["optimum_pct"] + 1e-9
        assert r["calibration"] == []  # an 8-hour job reaches no calibration hour
    for row in data["summary"]:
        assert row["seeds"] == 1
        assert {"mean", "std", "se", "median"} <= set(row["gain_pct"])
        assert 0 <= row["feasible_frac"] <= 1
    assert "| hz-ray |" in proc.stdout and "| random |" in proc.stdout
