"""Chaos soak (issue 13): a long job on a two-node Ray cluster under faults every hour.

Each run starts its own local two-node cluster (``ray.cluster_utils.Cluster``: a head
and a worker node, separate raylet processes, both offering ``arm_slot`` resources),
the platform actor on the head (:mod:`benchmarks.soak_world`), and the job's driver
as a child process (:mod:`benchmarks.soak_job`). Faults come from a seeded
schedule (:func:`benchmarks.soak_world.make_schedule`): every job hour a backend
error and a hang on launch, fetch or stop, bad readings of every kind in turn and
every few hours an arm-worker kill (the driver's threads), one central-actor kill
per simulated day; once mid-run this process removes the worker node (every
process of it; its workers restart on the head) and SIGKILLs the driver, then
starts a new driver that resumes from the run folder. A fault-free run of the
same seed (``--baseline``) gives the paired gain. Tables: :mod:`benchmarks.soak_report`.

Run::

    .venv/bin/python benchmarks/soak.py --short                  # a few hours, test tier
    .venv/bin/python benchmarks/soak.py --days 1 --slots 64 --seconds-per-hour 10 --out day1.md
    .venv/bin/python benchmarks/soak.py --days 7 --slots 64 --seconds-per-hour 10 --seeds 5 \
        --baseline

The job clock runs on while a killed driver is replaced (as a real clock would): on a
2-core box 64 actors take ~30 s to start and the killed driver's supervisor ~20 s to stop
its arms, so keep ``--seconds-per-hour`` large enough that this outage stays well inside
the job's ``late_data_hours`` (12) and the run; at 64 slots the platform calls of a loaded
2-core box also need ``--call-timeout`` 8 s (with 1.5 s a quarter of them time out and
stopped arms' last hours are never received: lost).

``--json PATH`` also writes the figures as JSON (what ``tests/ray/test_soak.py`` reads).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from benchmarks.soak_job import CALL_TIMEOUT_S, soak_config  # noqa: E402
from benchmarks.soak_report import analyse, render  # noqa: E402
from benchmarks.soak_world import make_schedule  # noqa: E402

SUPERVISOR_WAIT_S = 6.0  # the killed driver's supervisor polls every 2 s, then stops its arms
# (holding the run folder's lock until every stop is done; the resume waits for it)


def _clock_hour(run_dir: Path) -> float:
    try:
        state = json.loads((run_dir / "clock.json").read_text())
        state = state.get("state", state)
        return (time.time() - state["epoch_s"]) / state["seconds_per_hour"]
    except (OSError, ValueError, KeyError, TypeError):
        return -1.0


def _job(spec: dict[str, Any], folder: Path, life: int, resume: bool) -> subprocess.Popen:
    path = folder / f"spec-{life}.json"
    path.write_text(json.dumps({**spec, "life": life, "resume": resume}))
    out = open(folder / f"job-{life}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "benchmarks.soak_job", str(path)],
                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _wait_unlocked(run_dir: Path, timeout_s: float) -> None:
    """Wait until no process holds the run folder (the supervisor's final stops are done)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(run_dir / "job.lock"))
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            lock.acquire(timeout=0.5)
        except Timeout:
            continue
        lock.release()
        return


def _wait(proc: subprocess.Popen, timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9


def run_one(args: argparse.Namespace, seed: int, faulty: bool, root: Path) -> dict[str, Any]:
    """One soak (or its fault-free twin) on a fresh two-node cluster; its figures."""
    import ray
    from ray.cluster_utils import Cluster

    from benchmarks.soak_platform import append_line, start_host
    from benchmarks.soak_world import SoakWorldFactory

    folder = root / f"seed{seed}-{'faults' if faulty else 'clean'}"
    folder.mkdir(parents=True, exist_ok=True)
    hours = args.hours
    schedule = make_schedule(seed, hours, short=args.short, call_timeout_s=args.call_timeout,
                             node_kill=not args.no_node_kill,
                             driver_kill=not args.no_driver_kill) if faulty else []
    spec = {"address": "", "folder": str(folder), "seed": seed, "slots": args.slots,
            "max_hours": args.max_hours, "hours": hours,
            "seconds_per_hour": args.seconds_per_hour, "call_timeout_s": args.call_timeout,
            "schedule": [dataclasses.asdict(f) for f in schedule]}
    half = max(1, args.slots // 2)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False,
        "resources": {"arm_slot": args.slots, "soak_head": 1}})
    started = time.time()
    host = None
    try:
        worker_node = cluster.add_node(num_cpus=1, resources={"arm_slot": half})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        spec["address"] = cluster.address
        metrics = tuple(soak_config(spec).metrics)
        host = start_host(SoakWorldFactory(seed, metrics, hours, tuple(schedule)))
        ray.get(host.get_pid.remote(), timeout=120)
        life, resume = 0, False
        pending = sorted((f for f in schedule if f.kind in ("node_kill", "driver_kill")),
                         key=lambda f: f.hour)
        codes = []
        limit_s = hours * args.seconds_per_hour * 3 + 600
        while True:
            proc = _job(spec, folder, life, resume)
            killed = False
            while proc.poll() is None and time.time() - started < limit_s:
                now = _clock_hour(folder / "run")
                if pending and now >= pending[0].hour + 0.4:
                    f = pending.pop(0)
                    if f.kind == "node_kill":
                        cluster.remove_node(worker_node)
                        append_line(str(folder / "faults.jsonl"), {
                            "fid": f.fid, "kind": f.kind, "hour": now, "outcome": "killed",
                            "time_s": time.time()})
                    else:
                        proc.kill()
                        proc.wait()
                        append_line(str(folder / "faults.jsonl"), {
                            "fid": f.fid, "kind": f.kind, "hour": now, "pid": proc.pid,
                            "outcome": "killed", "time_s": time.time()})
                        killed = True
                        break
                time.sleep(0.1)
            code = -9 if killed else _wait(proc, 5 if proc.poll() is not None else 1)
            codes.append(code)
            if not killed:
                break
            time.sleep(SUPERVISOR_WAIT_S)
            _wait_unlocked(folder / "run", limit_s)
            life, resume = life + 1, True
        try:
            startup_s = json.loads((folder / "run" / "clock.json").read_text())["epoch_s"] \
                - started
        except (OSError, ValueError, KeyError):
            startup_s = None
        report = ray.get(host.report.remote(), timeout=120)
        (folder / "platform.json").write_text(json.dumps(report))
        wall_s = time.time() - started
    finally:
        if host is not None:
            with contextlib.suppress(Exception):  # the cluster goes down next
                ray.kill(host)
        ray.shutdown()
        cluster.shutdown()
    empty = {"published": [], "returned": [], "fired": [], "pending": [], "live": [],
             "max_live": 0, "launches": 0}
    return analyse(folder, report or empty, schedule, seed=seed, faulty=faulty, hours=hours,
                   slots=args.slots, codes=codes, wall_s=wall_s, lives=life + 1,
                   startup_s=startup_s, seconds_per_hour=args.seconds_per_hour)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    p.add_argument("--hours", type=int, default=None, help="job hours (overrides --days)")
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    p.add_argument("--seed-list", type=int, nargs="+", default=None,
                   help="explicit seeds (overrides --seeds), e.g. to add pairs to earlier runs")
    p.add_argument("--seconds-per-hour", type=float, default=2.0)
    p.add_argument("--max-hours", type=int, default=8, help="an arm's longest run")
    p.add_argument("--call-timeout", type=float, default=8.0,
                   help="backend.call_timeout_s (s); hangs last 0.3x or 1.5x of it. On a loaded "
                        "2-core box a quarter of 64 slots' platform calls take over 1.5 s")
    p.add_argument("--baseline", action="store_true", help="also a fault-free run per seed")
    p.add_argument("--baseline-only", action="store_true",
                   help="only the fault-free run per seed (pair it with an earlier faulty one)")
    p.add_argument("--no-node-kill", action="store_true")
    p.add_argument("--no-driver-kill", action="store_true")
    p.add_argument("--short", action="store_true",
                   help="test tier: 7 hours, 4 slots, 0.8 s/hour, no node or driver kill")
    p.add_argument("--root", type=Path, default=None, help="folder for the runs (default: tmp)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                   help="run nothing: render the runs of earlier --json files together (pairs "
                        "a faulty run with its fault-free twin from another invocation)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown tables here")
    p.add_argument("--json", type=Path, default=None, help="write the figures (JSON) here")
    args = p.parse_args(argv)
    if args.short:
        args.hours = args.hours or 7
        args.slots, args.max_hours = min(args.slots, 4), min(args.max_hours, 3)
        args.seconds_per_hour = min(args.seconds_per_hour, 0.8)
        args.call_timeout = min(args.call_timeout, CALL_TIMEOUT_S)
        args.no_node_kill = args.no_driver_kill = True
    if args.hours is None:
        args.hours = round(args.days * 24)
    return args


def merged_runs(paths: list[Path], args: argparse.Namespace) -> list[dict]:
    """The runs of earlier ``--json`` files, checked to be one soak's shape.

    Sets ``args.hours``, ``args.slots`` and ``args.seconds_per_hour`` from the runs, for the
    tables' heading.

    Raises:
        SystemExit: A file is missing or not a soak's JSON, the runs differ in hours, slots
            or clock, or a (seed, faulty) run appears twice.
    """
    runs: list[dict] = []
    for path in paths:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(
                f"--merge: cannot read {path} as a soak's --json file ({exc})") from exc
        if not isinstance(loaded, list) or not all(
                isinstance(r, dict) and {"seed", "faulty", "hours", "slots"} <= set(r)
                for r in loaded):
            raise SystemExit(f"--merge: {path} is not a list of soak runs (write it with "
                             "soak.py --json)")
        runs.extend(loaded)
    shapes = {(r["hours"], r["slots"], r.get("clock_s_per_day")) for r in runs}
    if len(shapes) != 1:
        raise SystemExit(f"--merge: the runs differ in (hours, slots, clock s/day): "
                         f"{sorted(shapes, key=str)}; merge only runs of one soak's shape")
    seen = Counter((r["seed"], r["faulty"]) for r in runs)
    twice = [k for k, n in seen.items() if n > 1]
    if twice:
        raise SystemExit(f"--merge: (seed, faulty) runs appear more than once: {twice}")
    hours, slots, clock = shapes.pop()
    args.hours, args.slots = hours, slots
    args.seconds_per_hour = None if clock is None else clock / 24
    return sorted(runs, key=lambda r: (r["seed"], not r["faulty"]))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runs = []
    if args.merge is not None:
        runs = merged_runs(args.merge, args)
    else:
        root = args.root or Path(tempfile.mkdtemp(prefix="hz-ray-soak-"))
        for seed in (args.seed_list if args.seed_list is not None else range(args.seeds)):
            if not args.baseline_only:
                runs.append(run_one(args, seed, True, root))
            if args.baseline or args.baseline_only:
                runs.append(run_one(args, seed, False, root))
    text = render(runs, args, " ".join(sys.argv[1:]))
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps(runs, default=str))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
