"""``ray job submit -- hz-ray run ... --address auto`` against a ``ray start --head`` cluster.

The cluster is this test's own: ``ray start --head --block`` in a new session, on
non-default ports (none in Ray's worker range 10002-19999, nor 6379 / 8265), with its own
short ``--temp-dir``, the dashboard (the job server) on 127.0.0.1, and this venv's ``bin``
first on ``PATH`` so the job's entrypoint finds ``hz-ray``. It is stopped through the
process group of that ``ray start`` (never ``ray stop``, which would stop every Ray on the
machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEMO = ROOT / "hz_ray" / "defaults" / "demo.yaml"
# (GCS, Ray client server, dashboard agent, dashboard) per candidate: never Ray's defaults
# (6379, 10001, 52365, 8265) nor its worker port range 10002-19999.
PORT_SETS = [(base, base + 1, base + 2, base + 2000) for base in (6391, 6491, 6591, 6691)]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def job_status(output: str, submission: str) -> str:
    """The status ``ray job status`` printed: a terminal one in words, any other by name."""
    job = re.escape(f"'{submission}'")
    for pattern, status in ((rf"Job {job} succeeded", "SUCCEEDED"),
                            (rf"Job {job} failed", "FAILED"),
                            (rf"Job {job} was stopped", "STOPPED")):
        if re.search(pattern, output):
            return status
    found = re.search(rf"Status for job {job}: (\w+)", output)
    return found.group(1) if found else ""


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> tuple[int, int, int, int]:
    for ports in PORT_SETS:
        if all(_free(p) for p in ports):
            return ports
    pytest.skip(f"no free set of ports among {PORT_SETS}")


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def _stop_group(proc: subprocess.Popen[bytes]) -> list[int]:
    """Stop the ``ray start`` we started and every process in its group; returns survivors."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group(proc.pid):
            time.sleep(0.2)
        if not _group(proc.pid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    return _group(proc.pid)


def _wait_for_dashboard(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, \
            f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the job server at {url} did not come up:\n{log.read_text()[-3000:]}")


def _ray(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _job_config(path: Path) -> str:
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["name"] = "submit-test"
    raw["arms"] = {**raw["arms"], "slots": 2}
    raw["backend"]["target"] = "simulated:value_model"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return raw["name"]


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_ray_job_submit_runs_hz_ray_on_an_existing_cluster(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("stops its cluster through /proc process groups (Linux)")
    for tool in ("ray", "hz-ray"):
        assert (BIN / tool).is_file(), f"{tool} is not installed next to {sys.executable}"
    started = time.monotonic()
    gcs, client, agent, dashboard = _ports()
    url = f"http://127.0.0.1:{dashboard}"
    # Ray's socket paths must stay short: a temp dir under /tmp, not under tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="hzs-", dir="/tmp" if Path("/tmp").is_dir() else None))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    config = tmp_path / "job.yaml"
    name = _job_config(config)
    run_dir = tmp_path / "run"
    head_log = tmp_path / "head.log"
    submission = f"hzray-submit-{uuid.uuid4().hex[:8]}"
    with head_log.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", "--num-cpus=2", f"--temp-dir={temp_dir}",
             "--disable-usage-stats"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    survivors: list[int] = []
    try:
        _wait_for_dashboard(url, proc, head_log)
        submit = _ray(env, "job", "submit", "--address", url, "--submission-id", submission,
                      "--no-wait", "--", "hz-ray", "run", str(config), "--ray", "--address",
                      "auto", "--hours", "3", "--run-dir", str(run_dir))
        assert submit.returncode == 0, submit.stdout + submit.stderr
        status, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline:
            out = _ray(env, "job", "status", "--address", url, "--log-color", "false",
                       submission)
            status = job_status(out.stdout + out.stderr, submission)
            if status in TERMINAL:
                break
            time.sleep(1)
        logs = _ray(env, "job", "logs", "--address", url, submission)
        assert status == "SUCCEEDED", f"job {status or 'unknown'}:\n{logs.stdout[-4000:]}"

        from ray.util.state import list_actors

        classes = {a.class_name for a in list_actors(address=url, limit=1000)}
        assert "PosteriorActor" in classes, f"the job did not run on this cluster: {classes}"
    finally:
        survivors = _stop_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not survivors, f"processes of the test's cluster still alive: {survivors}"

    job = json.loads((run_dir / "job.json").read_text(encoding="utf-8"))
    assert job["name"] == name
    assert sorted((run_dir / "log").glob("part-*.parquet")), "the job wrote no event log parts"
    assert time.monotonic() - started < 90, "the submit test should take well under a minute"


@pytest.mark.parametrize("output, status", [
    ("INFO cli.py:67 -- Job 'hzray-submit-1' succeeded", "SUCCEEDED"),
    ("ERROR cli.py:67 -- Job 'hzray-submit-1' failed\nStatus message: boom", "FAILED"),
    ("WARNING cli.py:85 -- Job 'hzray-submit-1' was stopped", "STOPPED"),
    ("INFO cli.py:92 -- Status for job 'hzray-submit-1': RUNNING", "RUNNING"),
    ("INFO cli.py:92 -- Status for job 'hzray-submit-2': RUNNING", ""),
    ("", ""),
])
def test_job_status_reads_what_ray_job_status_prints(output, status):
    assert job_status(output, "hzray-submit-1") == status
