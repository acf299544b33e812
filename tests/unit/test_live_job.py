"""A live job from the command line alone: run, watch, scrape, stop, report.

``hz-ray run`` drives a file-drop platform played by a separate process
(``examples/play_file_drop_platform.py``) on an accelerated wall clock; a real
Prometheus scrapes the job's metrics address (from the config's ``telemetry``
section); ``hz-ray status`` shows it while it runs; ``hz-ray stop`` ends it
with every arm stopped on the platform; ``hz-ray report`` rebuilds the
readout and the HTML page from the run folder alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.unit.test_telemetry_prometheus import (
    free_port,
    needs_prometheus,
    prom_api,
    start_prometheus,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[2]
SECONDS_PER_HOUR = 2.0


def job_config(drop: Path, metrics_port: int) -> dict:
    return {
        "name": "live-rehearsal",
        "parameters": [{"name": "w_click", "low": 0.5, "high": 2.0, "scale": "log", "base": 1.0},
                       {"name": "w_like", "low": 1.0, "high": 8.0, "scale": "log", "base": 3.5}],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": -0.005}],
        "arms": {"slots": 2, "min_hours": 1, "max_hours": 3, "late_data_hours": 1},
        "optimizer": {"seed": 0, "hold_fixed": "w_click", "bucket_size": 16,
                      "thompson_draws": 64, "proposals": 64},
        "backend": {"target": "hz_ray.backends.file_drop:FileDropBackend",
                    "kwargs": {"root": str(drop)}, "call_timeout_s": 10},
        "clock": {"mode": "accelerated", "seconds_per_hour": SECONDS_PER_HOUR},
        "telemetry": {"host": "127.0.0.1", "port": metrics_port},
    }


def hz_ray(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hz_ray.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def wait_for_hour(run_dir: Path, hour: int, job: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job exited early with {job.returncode}"
        status_file = run_dir / "status.json"
        if status_file.exists():
            status = json.loads(status_file.read_text())
            if status["hour"] >= hour and status["live_arms"]:
                return status
        time.sleep(0.3)
    raise AssertionError(f"job hour {hour} not reached in {timeout_s} s")


@needs_prometheus
@pytest.mark.prometheus
def test_a_live_job_is_run_watched_scraped_stopped_and_reported_from_the_cli(tmp_path):
    drop, run_dir = tmp_path / "drop", tmp_path / "run"
    metrics_port = free_port(29000, 29499)
    prom_port = free_port(29500, 29999)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(job_config(drop, metrics_port)))
    assert hz_ray("validate", config).returncode == 0

    (tmp_path / "prom").mkdir()
    prometheus = start_prometheus(tmp_path / "prom", metrics_port, prom_port)
    out, err = (tmp_path / "run.out").open("w"), (tmp_path / "run.err").open("w")
    job = subprocess.Popen([sys.executable, "-m", "hz_ray.cli", "run", str(config),
                            "--hours", "400", "--run-dir", str(run_dir)], cwd=REPO,
                           stdout=out, stderr=err, env=_env())
    platform = subprocess.Popen([sys.executable, str(REPO / "examples" /
                                                     "play_file_drop_platform.py"),
                                 str(run_dir), str(drop)], cwd=REPO, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(prom_port, prometheus)
        running = wait_for_hour(run_dir, 3, job, timeout_s=60)
        # the job runs on the wall clock: hour 3 comes no sooner than 3 paced hours after start
        clock = json.loads((run_dir / "clock.json").read_text())
        assert clock["kind"] == "accelerated" and clock["seconds_per_hour"] == SECONDS_PER_HOUR
        assert time.time() - clock["epoch_s"] >= 3 * SECONDS_PER_HOUR
        telemetry = json.loads((run_dir / "telemetry.json").read_text())
        assert telemetry["url"] == f"http://127.0.0.1:{metrics_port}/metrics"

        shown = hz_ray("status", run_dir)
        assert shown.returncode == 0, shown.stderr
        assert ": running, after job hour" in shown.stdout, shown.stdout
        # a live arm of this job (which one may change between two reads), and freshness
        assert f"{running['job_id']}.s0" in shown.stdout, shown.stdout
        assert "live arms" in shown.stdout and "data freshness per slot" in shown.stdout
        as_json = json.loads(hz_ray("status", run_dir, "--json").stdout)
        assert as_json["running"] is True and as_json["job_id"] == running["job_id"]

        # Prometheus scraped the job while it ran
        deadline = time.monotonic() + 20
        while True:
            answer = prom_api(prom_port, "query",
                              query='hzray_deltas_total{tuning_job="live-rehearsal",'
                                    'result="accepted"}')
            values = [float(r["value"][1]) for r in answer["data"]["result"]]
            if values and values[0] > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert values and values[0] > 0, answer
        info = prom_api(prom_port, "query", query="hzray_job_info")["data"]["result"]
        assert info and info[0]["metric"]["job_id"] == running["job_id"]

        stopped = hz_ray("stop", run_dir, timeout=180)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "the job was running" in stopped.stdout
        assert job.wait(timeout=60) == 143  # it ended on SIGTERM, after stopping its arms
    finally:
        for proc in (job, platform, prometheus):
            if proc.poll() is None:
                proc.terminate()
        for proc in (job, platform, prometheus):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        out.close()
        err.close()
    assert "interrupted (SIGTERM)" in (tmp_path / "run.err").read_text()

    # every arm asked for on the platform was asked to stop, and the log agrees
    requests = drop / "requests"
    launched = {p.name.split(".launch.json")[0] for p in requests.glob("*.launch.json")}
    stops = {p.name.split(".stop.json")[0] for p in requests.glob("*.stop.json")}
    assert launched and launched == stops
    after = hz_ray("status", run_dir)
    assert "NOT running" in after.stdout and "every arm the job launched is stopped" in \
        after.stdout, after.stdout

    report = hz_ray("report", run_dir, "--out", tmp_path / "report", timeout=180)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    final = json.loads((run_dir / "status.json").read_text())["recommendation"]
    shown_arm = re.search(r'id="recommended-arm">([^<]+)<', page)
    assert shown_arm, "the page names its recommendation"
    expected = "keep production weights (control)" if final["is_control"] else final["arm_id"]
    assert shown_arm.group(1) == expected, (shown_arm.group(1), final)
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png"))
