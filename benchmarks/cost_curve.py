"""Cost curve of the central posterior service (issue 13): refit, plan, readout, RSS, latency.

Run (each size in a fresh child process, so its peak RSS is its own)::

    .venv/bin/python benchmarks/cost_curve.py --sizes 100,500,1000,2000 --out benchmarks/out/cost

For each size N the child builds a :class:`~hz_ray.service.posterior.PosteriorService` in
process (no Ray) with N observed arms, 6 hours x 4 metrics each, 8 log-scale weights and a
candidate set of 4096 points (a bucket of ``4096 - N`` plus the N arms), with the same
synthetic world and config as ``benchmarks/system.py`` (``bench_config``, ``observations``).
Then, on the service's reader optimizer and under its GP lock, one torch thread:

``refit_s``       hyperparameter fit by marginal likelihood, all 4 metrics (forced)
``condition_s``   a condition-only rebuild (fixed hyperparameters: what runs every hour),
                  including the first posterior call that factorizes the training covariance
                  (``condition_build_s``: the model build alone; GPyTorch factorizes lazily)
``plan_s``        one Thompson plan (K joint draws + pick counts over the candidates)
``readout_s``     live-arm assessments + the launch readout (``recommend``)
``rebuild_s``     ``refresh_now()`` end to end without a refit (condition + plan + readout)

RSS: ``peak_rss_setup_mb`` is VmHWM after the service's start (its first plan, over the prior)
and the ingest; VmHWM is then reset (``/proc/self/clear_refs``) before each of the refit,
condition, plan and readout (``peak_rss_refit_mb`` ... ``peak_rss_readout_mb``), so
``peak_rss_refit_plan_mb``, their maximum, is the peak of those phases alone;
``peak_rss_refresh_mb`` covers the final ``refresh_now()``, and ``peak_rss_mb`` is the
largest of them.

While the refit runs, the main thread plays a worker: ``sample`` then ``retire`` on slot 0,
20 ms apart, timed (``sample_p50_ms``, ``sample_p99_ms``; only samples that both started and
ended while the refit ran count). These calls are in process, so they include the service's
locks and the GIL contention with the refit thread, not a Ray call's hop.

The parent fits ``log t = a + k log n`` by least squares for each timing (k with its standard
error) and extrapolates where the plan age passes 60 s and one job hour. The plan age
(``plan_age_s``) is refit + condition + plan: what a fresh plan after a refit waits for,
the factorization of the training covariance included.
``--worker-rss`` measures a fresh interpreter that imports ``actors.arm_worker``.
``--ray-latency 500,2000`` also times samples the way a worker sees them: a Ray actor in its
own process calls the central actor (``actors.posterior``, populated with
``system.populate``) while that actor runs ``refresh_now(force_refit=True)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

CANDIDATES = 4096
MIN_BUCKET = 256
HOURS = 6
TIMINGS = ("refit_s", "condition_build_s", "condition_s", "plan_s", "readout_s", "rebuild_s")


# --------------------------------------------------------------------------- child


def _mb(value: float) -> float:
    return value / 2**20


def populate(service: Any, n: int, *, first_slot: int = 8, hour: int = 0,
             rng: np.random.Generator | None = None) -> None:
    """Hand out, report (6 hours x 4 metrics) and retire ``n`` arms, one slot each.

    By default slots 0..7 stay free for the sampler and the data are seeded by ``n``;
    the world is ``benchmarks/system.py``'s.

    Args:
        service: A :class:`~hz_ray.service.posterior.PosteriorService`.
        n: Arms to add.
        first_slot: The first arm's slot (each arm takes the next one, seq 0).
        hour: Job hour of the hand-outs; reports and retirements come ``HOURS`` later.
        rng: The data's generator (default: seeded by ``n``).
    """
    from system import observations

    from hz_ray.service.messages import Report

    rng = np.random.default_rng(n) if rng is None else rng
    for slot in range(first_slot, first_slot + n):
        reply = service.sample(slot, 0, hour)
        deltas = observations(reply.arm_id, dict(reply.params), HOURS, rng)
        service.report(Report(slot, hour + HOURS, reply.arm_id, tuple(deltas)))
        service.retire(slot, reply.arm_id, "done", hour + HOURS)
    service.commit()


def measure(n: int, samples: int, pause_s: float, out_dir: Path) -> dict[str, Any]:
    """Build a service with ``n`` observed arms and time its pieces (run in a child)."""
    from system import METRICS, bench_config

    from hz_ray.service.arm_states import STOPPED
    from hz_ray.service.memory import peak_rss_bytes, rss_bytes
    from hz_ray.service.posterior import PosteriorService
    from hz_ray.torch_threads import torch_threads

    row: dict[str, Any] = {"observed_arms": n, "metrics": len(METRICS), "hours": HOURS}
    bucket = max(CANDIDATES - n, MIN_BUCKET)
    config = bench_config(f"cost-{n}", slots=n + 8, bucket=bucket)
    with torch_threads(1):
        service = PosteriorService(config, out_dir / f"cost-{n}", job_id=f"cost-{n}",
                                   background=False, durable_reports=False)
        row["rss_start_mb"] = _mb(rss_bytes())
        t0 = time.perf_counter()
        populate(service, n)
        row["populate_s"] = time.perf_counter() - t0
        row["records"] = service.status().num_records
        row["rss_after_populate_mb"] = _mb(rss_bytes())
        row["peak_rss_setup_mb"] = _mb(peak_rss_bytes())  # includes the constructor's plan
        row["peak_reset"] = _reset_peak_rss()
        _emit(row)

        timings: dict[str, float] = {}
        phase_peaks: dict[str, float] = {}  # VmHWM of each phase (reset between phases)
        refit_done = threading.Event()
        failure: list[BaseException] = []

        def end_phase(name: str) -> None:
            """Record the peak RSS since the last reset as ``name``'s, then reset it."""
            phase_peaks[name] = _mb(peak_rss_bytes())
            _reset_peak_rss()

        def rebuild_pieces() -> None:
            try:
                with torch_threads(1), service._gp_lock:
                    live, _ = service._drain()
                    reader = service._rebuilder.reader
                    view = reader.view()
                    started = time.perf_counter()
                    reader.refresh(view, force_refit=True)
                    timings["refit_and_condition_s"] = time.perf_counter() - started
                    timings["refit_s"] = float(reader.surrogate.last_fit_seconds)
                    refit_done.set()
                    end_phase("refit")
                    started = time.perf_counter()
                    snapshot = reader.refresh(view)
                    timings["condition_build_s"] = time.perf_counter() - started
                    snapshot.mean_and_var(view.X[:1])  # GPyTorch factorizes on first use
                    timings["condition_s"] = time.perf_counter() - started
                    end_phase("condition")
                    started = time.perf_counter()
                    plan = reader.plan(live, salt=0)
                    timings["plan_s"] = time.perf_counter() - started
                    timings["plan_candidates"] = float(plan.candidates.shape[0])
                    end_phase("plan")
                    started = time.perf_counter()
                    reader.assess(list(live))
                    reader.recommend()
                    timings["readout_s"] = time.perf_counter() - started
                    end_phase("readout")
                    timings["train_points"] = float(view.X.shape[0])
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)
                refit_done.set()

        worker = threading.Thread(target=rebuild_pieces, name="cost-refit")
        worker.start()
        time.sleep(0.5)  # let the refit start
        latencies: list[float] = []
        seq = 0
        while not refit_done.is_set() and seq < samples:
            started = time.perf_counter()
            reply = service.sample(0, seq, HOURS)
            elapsed = time.perf_counter() - started
            service.retire(0, reply.arm_id, "benchmark", HOURS)
            service.transition(0, reply.arm_id, STOPPED, HOURS)  # the slot may sample again
            if not refit_done.is_set():
                latencies.append(elapsed)
            seq += 1
            time.sleep(pause_s)
        worker.join()
        if failure:
            raise failure[0]
        row.update(timings)
        row["plan_age_s"] = timings["refit_s"] + timings["condition_s"] + timings["plan_s"]
        row["rss_after_refit_plan_mb"] = _mb(rss_bytes())
        row["peak_rss_refit_plan_mb"] = max(phase_peaks.values(), default=0.0)
        row.update({f"peak_rss_{phase}_mb": mb for phase, mb in phase_peaks.items()})
        row["samples_during_refit"] = len(latencies)
        if latencies:
            lat = np.asarray(latencies) * 1e3
            row["sample_p50_ms"] = float(np.percentile(lat, 50))
            row["sample_p99_ms"] = float(np.percentile(lat, 99))
            row["sample_max_ms"] = float(lat.max())
        _emit(row)

        started = time.perf_counter()
        service.refresh_now()  # publish: condition + plan + readout (no refit)
        row["rebuild_s"] = time.perf_counter() - started
        row["rss_end_mb"] = _mb(rss_bytes())
        row["peak_rss_refresh_mb"] = _mb(peak_rss_bytes())  # reset when the readout ended
        row["peak_rss_mb"] = max(row["peak_rss_refresh_mb"], row["peak_rss_refit_plan_mb"])
        service.close()
    return row


class RaySampler:
    """A worker-like Ray actor (own process, no torch): sample, retire, stop; timed."""

    def __init__(self, namespace: str) -> None:
        import ray

        from actors.options import POSTERIOR_ACTOR_NAME

        self.post = ray.get_actor(POSTERIOR_ACTOR_NAME, namespace=namespace)

    def run(self, slot: int, first_seq: int, count: int, pause_s: float) -> dict[str, Any]:
        import ray

        from hz_ray.service.arm_states import STOPPED

        spans = []
        for seq in range(first_seq, first_seq + count):
            started = time.time()
            reply = ray.get(self.post.sample.remote(slot, seq, HOURS))
            spans.append((started, time.time()))
            ray.get(self.post.retire.remote(slot, reply.arm_id, "benchmark", HOURS))
            ray.get(self.post.transition.remote(slot, reply.arm_id, STOPPED, HOURS))
            time.sleep(pause_s)
        from hz_ray.service.memory import rss_bytes

        return {"spans": spans, "torch_imported": "torch" in sys.modules,
                "rss_mb": _mb(rss_bytes())}


def ray_latency(n: int, samples: int, pause_s: float, out_dir: Path) -> dict[str, Any]:
    """Sample latency seen by a worker actor over Ray while the central actor refits."""
    import ray
    from filelock import FileLock
    from system import bench_config, populate, wait_status

    from actors.options import job_namespace
    from actors.posterior import start_posterior_actor
    from hz_ray.run_folder import LOCK_FILE

    name = f"cost-ray-{n}"
    config = bench_config(name, slots=n + 8, bucket=max(CANDIDATES - n, MIN_BUCKET))
    (out_dir / name).mkdir(parents=True)
    # The actor hands out arms only while the run folder's lock is held (by a driver).
    lock = FileLock(str(out_dir / name / LOCK_FILE))
    lock.acquire()
    post = start_posterior_actor(config, out_dir / name, job_id=name)
    ray.get(post.ready.remote())
    t0 = time.perf_counter()
    populate(post, n, 8, hours=HOURS, seed=n)
    wait_status(post, lambda st: st.posterior_version == st.data_version
                and st.num_records == n * HOURS * 4, timeout_s=1800)
    populate_s = time.perf_counter() - t0
    sampler = ray.remote(num_cpus=0)(RaySampler).remote(job_namespace(name))
    ray.get(sampler.run.remote(0, 0, 3, 0.0))  # warm the path and the sampler process
    refit_started = time.time()
    refit_ref = post.refresh_now.remote(force_refit=True)
    time.sleep(0.5)
    result_ref = sampler.run.remote(0, 3, samples, pause_s)
    ray.get(refit_ref)
    refit_ended = time.time()
    refit_wall_s = refit_ended - refit_started
    result = ray.get(result_ref)
    during = [b - a for a, b in result["spans"] if a >= refit_started and b <= refit_ended]
    ray.kill(sampler)
    ray.kill(post)
    lock.release()
    row: dict[str, Any] = {"observed_arms": n, "populate_s": populate_s,
                           "forced_refresh_wall_s": refit_wall_s,
                           "samples_during_refit": len(during),
                           "samples_total": len(result["spans"]),
                           "sampler_imported_torch": result["torch_imported"],
                           "sampler_rss_mb": result["rss_mb"]}
    if during:
        lat = np.asarray(during) * 1e3
        row.update(sample_p50_ms=float(np.percentile(lat, 50)),
                   sample_p99_ms=float(np.percentile(lat, 99)), sample_max_ms=float(lat.max()))
    print(json.dumps(row), flush=True)
    return row


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _emit(row: dict[str, Any]) -> None:
    print("ROW " + json.dumps(row), flush=True)


# --------------------------------------------------------------------------- parent


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one size in a child process; keeps the last row it printed if it times out."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(n),
               "--samples", str(args.samples), "--pause-ms", str(args.pause_ms)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout_s,
                              check=False)
        stdout, rc, timed_out = done.stdout, done.returncode, False
        stderr = done.stderr
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc, timed_out = None, True
    rows = [json.loads(line[4:]) for line in stdout.splitlines() if line.startswith("ROW ")]
    row = rows[-1] if rows else {"observed_arms": n}
    row.update(child_wall_s=time.perf_counter() - started, child_rc=rc, timed_out=timed_out)
    if rc not in (0, None) or (timed_out and not rows):
        row["child_stderr_tail"] = stderr[-2000:]
    return row


def fit_power(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """Least squares of log t = a + k log n; k with its standard error."""
    pts = [(r["observed_arms"], r[key]) for r in rows
           if isinstance(r.get(key), (int, float)) and r[key] > 0]
    if len(pts) < 2:
        return None
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    A = np.column_stack([np.ones_like(x), x])
    (a, k), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (a + k * x)
    dof = len(pts) - 2
    sxx = float(((x - x.mean()) ** 2).sum())
    se = math.sqrt(float(resid @ resid) / dof / sxx) if dof > 0 else None
    return {"a": float(a), "k": float(k), "k_se": se, "points": len(pts),
            "sizes": [p[0] for p in pts]}


def predict(fit: dict[str, Any], n: float) -> float:
    return math.exp(fit["a"] + fit["k"] * math.log(n))


def crossing(fits: list[dict[str, Any]], limit_s: float) -> float | None:
    """The n at which the sum of the fitted curves reaches ``limit_s`` (bisection in log n)."""
    if any(f["k"] <= 0 for f in fits):
        return None
    lo, hi = math.log(10.0), math.log(1e9)
    if sum(predict(f, math.exp(hi)) for f in fits) < limit_s:
        return None
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if sum(predict(f, math.exp(mid)) for f in fits) < limit_s:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def summarize(results: dict[str, Any]) -> None:
    """Fits over all sizes and over the largest 3 and 2; where the plan age crosses limits.

    The plan age is refit + condition + plan time. The fit over all sizes averages a slope that
    steepens with n; the fit over the largest sizes is the nearer guide to extrapolate from.
    """
    rows = sorted((r for r in results["rows"] if "refit_s" in r),
                  key=lambda r: r["observed_arms"])
    keys = (*TIMINGS, "refit_and_condition_s", "peak_rss_refit_plan_mb", "sample_p50_ms")
    results["fits"] = {}
    results["plan_age_crossing_n"] = {}
    for label, subset in (("all", rows), ("largest3", rows[-3:]), ("largest2", rows[-2:])):
        if len(subset) < 2 or (label != "all" and len(subset) == len(rows)):
            continue
        fits = {key: fit_power(subset, key) for key in keys}
        results["fits"][label] = fits
        if fits["refit_s"] and fits["condition_s"] and fits["plan_s"]:
            parts = [fits["refit_s"], fits["condition_s"], fits["plan_s"]]
            results["plan_age_crossing_n"][label] = {"60s": crossing(parts, 60.0),
                                                     "3600s": crossing(parts, 3600.0)}


def worker_rss() -> dict[str, Any]:
    """RSS of a fresh interpreter after importing the arm worker's modules; torch imported?"""
    probe = ("import sys, json\n"
             "def rss():\n"
             "    for line in open('/proc/self/status'):\n"
             "        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024\n"
             "base = rss()\n"
             "import {module}\n"
             "print(json.dumps({{'module': '{module}', 'rss_mb': rss(), 'bare_mb': base,"
             " 'torch': 'torch' in sys.modules, 'botorch': 'botorch' in sys.modules,"
             " 'gpytorch': 'gpytorch' in sys.modules}}))\n")
    out = {}
    for module in ("ray", "hz_ray.service.slot", "actors.arm_worker"):
        done = subprocess.run([sys.executable, "-c", probe.format(module=module)],
                              capture_output=True, text=True, cwd=ROOT, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = done.stdout.strip().splitlines()
        out[module] = json.loads(lines[-1]) if done.returncode == 0 and lines else \
            {"error": done.stderr[-1000:]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000,2000")
    parser.add_argument("--metrics", type=int, default=4, choices=[4],
                        help="modelled metrics (the synthetic world of system.py has 4)")
    parser.add_argument("--dims", type=int, default=8, choices=[8],
                        help="weights (the synthetic world of system.py has 8)")
    parser.add_argument("--samples", type=int, default=300,
                        help="most worker samples timed during one refit")
    parser.add_argument("--pause-ms", type=float, default=20.0)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per size")
    parser.add_argument("--worker-rss", action="store_true")
    parser.add_argument("--ray-latency", default="",
                        help="sizes at which to time samples over Ray during an actor refit")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "cost")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="recompute the fits of an earlier cost_curve.json in place")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.from_json is not None:  # fits only, from an earlier run's rows
        results = json.loads(args.from_json.read_text())
        summarize(results)
        args.from_json.write_text(json.dumps(results, indent=2))
        report(results)
        return 0
    if args.child is not None:
        with tempfile.TemporaryDirectory(prefix="hz-ray-cost-") as tmp:
            _emit(measure(args.child, args.samples, args.pause_ms / 1e3, Path(tmp)))
        return 0

    import torch

    results: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cost_curve.json"
    for n in [int(s) for s in args.sizes.split(",") if s]:
        row = run_size(n, args)
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        path.write_text(json.dumps(results, indent=2))
    summarize(results)
    if args.worker_rss:
        results["worker_rss"] = worker_rss()
    if args.ray_latency:
        import ray

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 log_to_driver=False)
        try:
            with tempfile.TemporaryDirectory(prefix="hz-ray-cost-") as tmp:
                results["ray_latency"] = [
                    ray_latency(int(s), args.samples, args.pause_ms / 1e3, Path(tmp))
                    for s in args.ray_latency.split(",") if s]
        finally:
            ray.shutdown()
    path.write_text(json.dumps(results, indent=2))
    report(results)
    print(f"wrote {path}")
    return 0


def report(results: dict[str, Any]) -> None:
    for label, fits in results["fits"].items():
        for key, fit in fits.items():
            if fit:
                se = f"{fit['k_se']:.2f}" if fit["k_se"] is not None else "n/a"
                print(f"[{label}] {key}: k = {fit['k']:.2f} (s.e. {se}) over n = {fit['sizes']}")
    print(json.dumps({k: results.get(k) for k in ("plan_age_crossing_n", "worker_rss")},
                     indent=2))


if __name__ == "__main__":
    sys.exit(main())
