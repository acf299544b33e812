"""A driver killed by SIGKILL on a cluster: the job's detached supervisor stops its arms.

The cluster is this test session's Ray; the driver is a child process
(`hz-ray run --ray --address ...`) on a JournalBackend, so the platform's view
of every launch and stop is audited across processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from hz_ray.backends.journal import audit_journal
from hz_ray.storage import EventLog
from hz_ray.testing import wait_for


def job_config(tmp_path):
    journal = tmp_path / "calls.jsonl"
    raw = {
        "name": "supervised",
        "parameters": [{"name": f"w_{n}", "low": 0.3333, "high": 3.0, "scale": "log",
                        "base": 1.0} for n in ("click", "like", "share", "watch")],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": -0.005}],
        "arms": {"slots": 3, "min_hours": 2, "max_hours": 20},
        "optimizer": {"seed": 0, "bucket_size": 16, "thompson_draws": 64, "proposals": 64,
                      "hold_fixed": "w_click"},
        "clock": "simulated",  # on Ray: 0.5 s per job hour
        "backend": {"target": "hz_ray.backends.journal:JournalBackend",
                    "kwargs": {"journal": str(journal), "inner_target": "simulated:smooth",
                               "inner_kwargs": {"traffic_per_arm": 20000}}},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, journal


@pytest.mark.ray
def test_the_supervisor_stops_the_arms_of_a_killed_driver(ray_session, tmp_path):
    config, journal = job_config(tmp_path)
    run_dir = tmp_path / "run"
    address = ray_session.get_runtime_context().gcs_address
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    child = subprocess.Popen(
        [sys.executable, "-m", "hz_ray.cli", "run", str(config), "--ray", "--address", address,
         "--hours", "200", "--run-dir", str(run_dir)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        launched = wait_for(lambda: journal.exists() and len(audit_journal(journal).launched)
                            >= 3, timeout_s=120)
        assert launched, child.stderr.read().decode()[-2000:] if child.poll() is not None \
            else "no launch within 120 s"
        # while it runs, `hz-ray status JOB` finds it on the cluster by its id
        from hz_ray.run_folder import RunFolder

        job_id = RunFolder.read(run_dir).job_id
        shown = subprocess.run([sys.executable, "-m", "hz_ray.cli", "status", job_id,
                                "--address", address], env=env, capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert f"job {job_id} in {run_dir}: running" in shown.stdout, shown.stdout
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        killed_at = time.monotonic()
        assert audit_journal(journal).orphans, "the kill left arms live (nothing to test)"
        assert wait_for(lambda: audit_journal(journal).orphans == (), timeout_s=60), \
            audit_journal(journal).orphans
        took = time.monotonic() - killed_at
    finally:
        if child.poll() is None:
            child.kill()

    def last_states():
        last = {}
        for e in EventLog(run_dir / "log").read().to_pylist():
            if e["kind"] == "arm_state":
                last[e["arm_id"]] = e["state"]
        return last

    assert wait_for(lambda: set(last_states().values()) == {"stopped"}, timeout_s=30), \
        last_states()
    assert took < 60
    # the supervisor is gone once done (detached actors would otherwise live forever)
    from actors.options import job_namespace
    from hz_ray.run_folder import RunFolder

    namespace = job_namespace(RunFolder.read(run_dir).job_id)

    def supervisor_alive():
        try:
            ray_session.get_actor("supervisor", namespace=namespace)
        except ValueError:
            return False
        return True

    assert wait_for(lambda: not supervisor_alive(), timeout_s=30)
