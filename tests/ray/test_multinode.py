"""A real two-node cluster on this machine, with arm workers placed on both nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ray
def test_workers_run_on_both_nodes_of_a_two_node_cluster():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "tests.ray.multinode_job"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert len(out["nodes"]) == 2
    assert out["posterior_node"] == out["head"]          # pinned to the head node
    assert set(out["worker_nodes"]) == set(out["nodes"])  # workers on both nodes
    assert out["records"] > 0 and out["arms"] >= 4
    assert not any(out["torch_in_workers"])
