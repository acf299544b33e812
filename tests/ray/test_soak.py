"""The chaos soak's short mode (issue 13): a few job hours on a two-node cluster under faults.

``benchmarks/soak.py --short`` runs as a child process: it starts its own two-node
cluster (``ray.cluster_utils.Cluster``) and stops it by its handles, and the job's
driver is a process of its own. Backend errors and hangs, bad readings, arm-worker
kills and a central-actor kill are injected; nothing published may be lost or
counted twice, every arm launched on the platform must be stopped, and the job
must finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ray
def test_short_soak_loses_nothing_and_leaves_no_orphans(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--short", "--seeds", "1",
         "--root", str(tmp_path / "runs"), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.exists(), (proc.stdout[-2000:], proc.stderr[-3000:])
    (run,) = json.loads(out.read_text())
    detail = {k: v for k, v in run.items() if k != "per_day"}

    assert run["completed"] and run["exit_codes"] == [0], detail
    # readings: every key the platform published was accepted once or quarantined
    assert run["published"] > 0 and run["accepted"] > 0, detail
    assert run["published"] == run["accepted"] + run["quarantined"], detail
    assert run["lost"] == 0 and run["phantom"] == 0, detail
    assert run["accepted_twice"] == 0 and run["ingested"] == 0, detail
    # arms: every launch that reached the platform was stopped; never more live than slots
    assert run["launched"] >= run["slots"] and run["stopped"] == run["launched"], detail
    assert run["orphans"] == 0 and run["platform_live_at_end"] == 0, detail
    assert 0 < run["max_live_platform"] <= run["slots"], detail
    assert run["calls_after_stop"] == 0, detail
    # faults: a handful of each cheap kind injected, every one survived
    kinds = run["faults"]
    assert any(k.endswith(" error") for k in kinds) and any(k.endswith(" hang") for k in kinds)
    assert sum(1 for k in kinds if k.startswith("bad reading: ")) >= 5, kinds
    assert kinds["arm-worker kill"][0] >= 1 and kinds["central-actor kill"][0] == 1, kinds
    assert all(survived == injected for injected, survived in kinds.values()), kinds
    assert run["faults_survived"] == run["faults_injected"] > 0
    assert run["ok"], detail
    # the figures the benchmark reports were measured
    assert run["samples"] > 0 and run["sample_p99_ms"] >= run["sample_p50_ms"] > 0
    assert run["rss_mb_last"]["central"] and run["rss_mb_last"]["worker"]
    assert "| day | published | accepted | quarantined |" in proc.stdout
