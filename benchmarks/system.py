"""System benchmark of the Ray layer: sample latency, Ax comparison, ingest, stragglers, memory.

Run (about 15-25 minutes on a 2-core machine)::

    .venv/bin/python benchmarks/system.py                    # every section
    .venv/bin/python benchmarks/system.py --sections latency,ax --sizes 100,500

Prints one table per section and writes everything to ``benchmarks/out/system.json``.

Sections
--------
``latency``  Thompson-sample latency seen by a worker (a separate Ray actor calling
             ``sample`` then ``retire``), p50/p99 over ``--samples`` requests, with N observed
             arms (6 hours x 4 metrics each), 8 parameters, 4 metrics, 4096 candidates, while a
             forced GP hyperparameter refit runs in the central actor the whole time. Also the
             background cost of one fresh plan at N (condition + Thompson plan + readout).
``ax``       The same suggestion from Ax's ``Client.get_next_trials`` on the same observations.
``ingest``   Hourly deltas per second accepted (durably) by the central actor from 64 worker
             actors, per batch size.
``cycle``    64 arm workers on the simulated world, without and with 25% stragglers (6 h extra
             publication delay, 0.2 s per fetch): hourly cycle time of the other workers.
``memory``   Central actor RSS with 1000 arms x 72 hours x 4 metrics, after a full rebuild.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.driver import RayDriver
from actors.options import POSTERIOR_ACTOR_NAME, PosteriorActorOptions, job_namespace
from actors.posterior import start_posterior_actor
from hz_ray.config import TuningConfig, config_from_mapping
from hz_ray.records import HourlyDelta
from hz_ray.service.messages import Report
from hz_ray.sim import SimulatedFactory
from hz_ray.testing import StragglerFactory, percentile

ROOT = Path(__file__).resolve().parents[1]
LOW, HIGH = 0.25, 4.0
DIM, METRICS = 8, ("m0", "m1", "m2", "m3")
CANDIDATES = 4096


# --------------------------------------------------------------------------- helpers


def bench_config(name: str, slots: int, bucket: int, refit: bool = False,
                 **optimizer: Any) -> TuningConfig:
    """8 log-scale weights; objective m0; guardrails on m1, m2, m3 (4 modelled metrics)."""
    opt: dict[str, Any] = {"seed": 0, "bucket_size": bucket}
    if not refit:  # hyperparameters fitted once (at start); later rebuilds only condition
        opt.update(refit_min_new_points=10**6, refit_growth=1000.0)
    opt.update(optimizer)
    return config_from_mapping({
        "name": name,
        "parameters": [{"name": f"w{i}", "low": LOW, "high": HIGH, "scale": "log", "base": 1.0}
                       for i in range(DIM)],
        "objective": {"metric": "m0"},
        "constraints": [{"metric": m, "min_delta": -0.01} for m in METRICS[1:]],
        "arms": {"slots": slots, "min_hours": 6, "max_hours": 24},
        "optimizer": opt,
    })


def unit(params: dict[str, float]) -> np.ndarray:
    return np.array([math.log(params[f"w{i}"] / LOW) / math.log(HIGH / LOW) for i in range(DIM)])


def truth(u: np.ndarray) -> list[float]:
    """A smooth synthetic world over the unit cube: one delta per metric."""
    out = []
    for j in range(len(METRICS)):
        out.append(0.02 * math.sin(3 * u[j] + u[(j + 3) % DIM])
                   - 0.015 * float(np.sum((u - 0.3 - 0.1 * j) ** 2)) + 0.01)
    return out


def observations(arm_id: str, params: dict[str, float], hours: int,
                 rng: np.random.Generator) -> list[HourlyDelta]:
    t = truth(unit(params))
    return [HourlyDelta(arm_id, m, h, float(t[j] + 0.005 * rng.normal()), 2.5e-5, 20_000)
            for h in range(hours) for j, m in enumerate(METRICS)]


@ray.remote(num_cpus=0)
class Sampler:
    """A worker-like process: asks for Thompson samples and times them."""

    def __init__(self, namespace: str) -> None:
        self.post = ray.get_actor(POSTERIOR_ACTOR_NAME, namespace=namespace)

    def run(self, slot: int, count: int, pause_s: float) -> dict[str, Any]:
        latencies = []
        for seq in range(count):
            started = time.perf_counter()
            reply = ray.get(self.post.sample.remote(slot, seq, 0))
            latencies.append(time.perf_counter() - started)
            ray.get(self.post.retire.remote(slot, reply.arm_id, "benchmark", 0))
            time.sleep(pause_s)
        return {"latencies_s": latencies, "torch_imported": "torch" in sys.modules}


@ray.remote(num_cpus=0)
class Feeder:
    """A worker-like process that reports pre-built batches as fast as acks come back."""

    def __init__(self, namespace: str) -> None:
        self.post = ray.get_actor(POSTERIOR_ACTOR_NAME, namespace=namespace)
        self.batches: list[Report] = []

    def prepare(self, slot: int, arm_id: str, batch: int, total: int) -> int:
        deltas = [HourlyDelta(arm_id, METRICS[i % 4], i // 4, 0.001 * (i % 7), 2.5e-5, 1000)
                  for i in range(total)]
        self.batches = [Report(slot, 0, arm_id, tuple(deltas[i:i + batch]))
                        for i in range(0, total, batch)]
        return len(self.batches)

    def blast(self, start_at: float) -> dict[str, Any]:
        time.sleep(max(0.0, start_at - time.time()))
        began = time.time()
        accepted = 0
        for report in self.batches:
            accepted += ray.get(self.post.report.remote(report)).accepted
        return {"accepted": accepted, "began": began, "ended": time.time()}


def wait_status(post: Any, predicate, timeout_s: float, step_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        status = ray.get(post.status.remote())
        if predicate(status) or time.monotonic() > deadline:
            return status
        time.sleep(step_s)


def populate(post: Any, arms: int, first_slot: int, hours: int, seed: int) -> None:
    """Register ``arms`` arms (one per slot), report their data, retire them."""
    rng = np.random.default_rng(seed)
    step = 64
    for start in range(0, arms, step):
        slots = range(first_slot + start, first_slot + min(arms, start + step))
        replies = ray.get([post.sample.remote(s, 0, 0) for s in slots])
        reports = [Report(s, hours, r.arm_id, tuple(observations(r.arm_id, dict(r.params),
                                                                  hours, rng)))
                   for s, r in zip(slots, replies, strict=True)]
        ray.get([post.report.remote(r) for r in reports])
        ray.get([post.retire.remote(s, r.arm_id, "done", hours)
                 for s, r in zip(slots, replies, strict=True)])


# --------------------------------------------------------------------------- sections


def bench_latency(sizes: list[int], samples: int, out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        name = f"latency-{n}"
        config = bench_config(name, slots=n + 8, bucket=CANDIDATES - n)
        post = start_posterior_actor(config, out_dir / name, job_id=name)
        ray.get(post.ready.remote())
        t0 = time.perf_counter()
        populate(post, n, 8, hours=6, seed=n)
        populate_s = time.perf_counter() - t0
        status = wait_status(post, lambda s, n=n: s.posterior_version == s.data_version
                             and s.num_records == n * 6 * 4, timeout_s=1800)
        plan_s = status.last_refresh_s
        sampler = Sampler.remote(job_namespace(name))
        ray.get(sampler.run.remote(0, 3, 0.0))  # warm the path (and the sampler process)
        refit_ref = post.refresh_now.remote(force_refit=True)
        time.sleep(1.0)
        window_start = time.perf_counter()
        result = ray.get(sampler.run.remote(1, samples, 0.02))
        window_s = time.perf_counter() - window_start
        done, _ = ray.wait([refit_ref], timeout=0)
        refit_running_throughout = not done
        refit_s = None
        if done:
            refit_s = ray.get(post.status.remote()).last_refresh_s
        lat = result["latencies_s"]
        rows.append({
            "observed_arms": n, "candidates": CANDIDATES, "samples": len(lat),
            "p50_ms": 1e3 * percentile(lat, 50), "p99_ms": 1e3 * percentile(lat, 99),
            "max_ms": 1e3 * max(lat), "window_s": window_s,
            "refit_running_throughout": refit_running_throughout,
            "refit_s": refit_s, "fresh_plan_s": plan_s, "populate_s": populate_s,
            "sampler_imported_torch": result["torch_imported"],
        })
        print(f"latency N={n}: p50 {rows[-1]['p50_ms']:.1f} ms, p99 {rows[-1]['p99_ms']:.1f} ms"
              f" (refit running throughout: {refit_running_throughout}; fresh plan "
              f"{plan_s:.1f} s)", flush=True)
        ray.kill(sampler)
        ray.kill(post)
    return rows


def bench_ax(sizes: list[int]) -> list[dict[str, Any]]:
    try:
        from ax.api.client import Client
        from ax.api.configs import RangeParameterConfig
    except ImportError:
        print("ax-platform is not installed: pip install -c constraints.txt ax-platform==1.3.1")
        return []
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("ax", "botorch"):
            logging.getLogger(name).setLevel(logging.ERROR)
    rows = []
    for n in sizes:
        client = Client(random_seed=0)
        client.configure_experiment(parameters=[
            RangeParameterConfig(name=f"w{i}", bounds=(LOW, HIGH), parameter_type="float",
                                 scaling="log") for i in range(DIM)])
        client.configure_optimization(objective="m0", outcome_constraints=[
            f"{m} >= -0.01" for m in METRICS[1:]])
        # No center-point trial first: the N attached trials are the initialization, so the
        # timed call is a model-based (BoTorch) suggestion.
        client.configure_generation_strategy(initialize_with_center=False)
        rng = np.random.default_rng(n)
        t0 = time.perf_counter()
        for i in range(n):
            u = rng.uniform(size=DIM)
            params = {f"w{k}": float(LOW * (HIGH / LOW) ** u[k]) for k in range(DIM)}
            t = truth(unit(params))
            index = client.attach_trial(parameters=params, arm_name=f"a{i}")
            sem = math.sqrt(2.5e-5 / 6)
            client.complete_trial(index, raw_data={
                m: (float(t[j] + 0.005 * rng.normal() / math.sqrt(6)), sem)
                for j, m in enumerate(METRICS)})
        attach_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.get_next_trials(max_trials=1)
        suggest_s = time.perf_counter() - t0
        trial = client._experiment.trials[n]  # the new trial: which generator made it
        node = getattr(trial.generator_runs[0], "_generation_node_name", None) \
            or getattr(trial.generator_runs[0], "_model_key", None)
        rows.append({"observed_arms": n, "ax_get_next_trials_s": suggest_s,
                     "attach_s": attach_s, "ax_generator": str(node)})
        print(f"ax N={n}: get_next_trials {suggest_s:.1f} s ({node})", flush=True)
    return rows


def bench_ingest(batches: list[int], workers: int, seconds: float,
                 out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        name = f"ingest-{batch}"
        config = bench_config(name, slots=workers, bucket=100, thompson_draws=200)
        post = start_posterior_actor(config, out_dir / name, job_id=name)
        ray.get(post.ready.remote())
        feeders = [Feeder.remote(job_namespace(name)) for _ in range(workers)]
        replies = ray.get([post.sample.remote(s, 0, 0) for s in range(workers)])
        rate_guess = 25_000.0
        total = max(batch, int(rate_guess * seconds / workers) // batch * batch)
        ray.get([f.prepare.remote(s, r.arm_id, batch, total)
                 for s, (f, r) in enumerate(zip(feeders, replies, strict=True))])
        start_at = time.time() + 2.0
        results = ray.get([f.blast.remote(start_at) for f in feeders])
        began = min(r["began"] for r in results)
        ended = max(r["ended"] for r in results)
        accepted = sum(r["accepted"] for r in results)
        status = ray.get(post.status.remote())
        rows.append({"batch": batch, "workers": workers, "accepted": accepted,
                     "seconds": ended - began, "deltas_per_s": accepted / (ended - began),
                     "log_seq": status.log_seq, "records": status.num_records})
        print(f"ingest batch={batch}: {rows[-1]['deltas_per_s']:.0f} deltas/s", flush=True)
        for f in feeders:
            ray.kill(f)
        ray.kill(post)
    return rows


def bench_cycle(workers: int, hours: int, seconds_per_hour: float,
                out_dir: Path) -> list[dict[str, Any]]:
    from hz_ray.backends import make_world

    world = make_world("smooth")
    raw = world.config_mapping()
    raw.update(extra_metrics=list(world.metrics),
               arms={"slots": workers, "min_hours": 2, "max_hours": 4},
               optimizer={"seed": 0, "bucket_size": 100, "thompson_draws": 500})
    stragglers = frozenset(range(0, workers, 4))  # 25%
    rows = []
    for label, factory in (
        ("no stragglers", SimulatedFactory("smooth", seed=5)),
        ("25% stragglers", StragglerFactory(SimulatedFactory("smooth", seed=5), stragglers,
                                            extra_delay_hours=6.0, fetch_delay_s=0.2)),
    ):
        config = config_from_mapping({**raw, "name": f"cycle-{len(rows)}"})
        driver = RayDriver(config, factory, out_dir / f"cycle-{len(rows)}",
                           seconds_per_hour=seconds_per_hour)
        t0 = time.perf_counter()
        try:
            driver.start()
            startup_s = time.perf_counter() - t0
            run = driver.run(hours)
        finally:
            driver.shutdown()
        # the same slots in both runs: those that straggle in the second
        others = [w for w in run.workers if w.slot not in stragglers]
        cycles = [c for w in others for c in w.cycle_s]
        lags = [c for w in others for c in w.tick_lag_s]
        samples = [c for w in others for c in w.sample_s]
        strag = [c for w in run.workers if w.slot in stragglers for c in w.cycle_s]
        rows.append({
            "run": label, "workers": workers, "hours": hours,
            "seconds_per_hour": seconds_per_hour, "startup_s": startup_s,
            "other_cycle_p50_ms": 1e3 * percentile(cycles, 50),
            "other_cycle_p95_ms": 1e3 * percentile(cycles, 95),
            "other_tick_lag_p95_ms": 1e3 * percentile(lags, 95),
            "other_sample_p50_ms": 1e3 * percentile(samples, 50),
            "straggler_cycle_p50_ms": 1e3 * percentile(strag, 50) if strag else None,
            "arms": len(run.result.arms), "records": run.status.num_records,
            "torch_in_workers": any(w.torch_imported for w in run.workers),
        })
        print(f"cycle {label}: other workers' cycle p50 {rows[-1]['other_cycle_p50_ms']:.0f} ms"
              f" p95 {rows[-1]['other_cycle_p95_ms']:.0f} ms", flush=True)
    return rows


def bench_memory(arms: int, hours: int, live: int, out_dir: Path,
                 options: PosteriorActorOptions | None = None) -> dict[str, Any]:
    name = "memory"
    config = bench_config(name, slots=arms, bucket=100)
    post = start_posterior_actor(config, out_dir / name, job_id=name, options=options)
    ray.get(post.ready.remote())
    base = ray.get(post.status.remote()).extra
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    step = 50
    for start in range(0, arms, step):
        slots = list(range(start, min(arms, start + step)))
        replies = ray.get([post.sample.remote(s, 0, 0) for s in slots])
        reports = [Report(s, hours, r.arm_id, tuple(observations(r.arm_id, dict(r.params),
                                                                  hours, rng)))
                   for s, r in zip(slots, replies, strict=True)]
        ray.get([post.report.remote(r) for r in reports])
        ray.get([post.retire.remote(s, r.arm_id, "done", hours)
                 for s, r in zip(slots, replies, strict=True) if s >= live])
    ingest_s = time.perf_counter() - t0
    after_ingest = ray.get(post.status.remote())
    t0 = time.perf_counter()
    ray.get(post.finish.remote())  # the end of a job: rebuild on all data, checkpoint
    rebuild_s = time.perf_counter() - t0
    status = ray.get(post.status.remote())
    ray.kill(post)
    row = {"arms": arms, "hours": hours, "metrics": len(METRICS),
           "records": status.num_records, "ingest_s": ingest_s, "rebuild_s": rebuild_s,
           "rss_start_mb": base["rss_bytes"] / 2**20,
           "rss_after_ingest_mb": after_ingest.extra["rss_bytes"] / 2**20,
           "rss_after_rebuild_mb": status.extra["rss_bytes"] / 2**20,
           "peak_rss_mb": status.extra["peak_rss_bytes"] / 2**20}
    print(f"memory: RSS {row['rss_after_rebuild_mb']:.0f} MB, peak {row['peak_rss_mb']:.0f} MB",
          flush=True)
    return row


# ---------------------------------------------------------------------------- main


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = [f"\n{title}", " | ".join(columns), " | ".join("---" for _ in columns)]
    lines += [" | ".join(fmt(r.get(c)) for c in columns) for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="latency,ax,ingest,cycle,memory")
    parser.add_argument("--sizes", default="100,500,2000", help="observed arms (latency)")
    parser.add_argument("--ax-sizes", default="100,500", help="observed arms (Ax)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--batches", default="4,64,512")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--ingest-seconds", type=float, default=8.0)
    parser.add_argument("--cycle-hours", type=int, default=12)
    parser.add_argument("--seconds-per-hour", type=float, default=1.0)
    parser.add_argument("--malloc-arena-max", type=int, default=None,
                        help="memory section: MALLOC_ARENA_MAX of the central actor's process")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "system.json")
    args = parser.parse_args()
    sections = args.sections.split(",")
    out_dir = Path(tempfile.mkdtemp(prefix="hz-ray-bench-"))
    results: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "ray": ray.__version__},
    }
    started = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    try:
        if "latency" in sections:
            results["latency"] = bench_latency([int(s) for s in args.sizes.split(",")],
                                               args.samples, out_dir)
        if "ax" in sections:
            results["ax"] = bench_ax([int(s) for s in args.ax_sizes.split(",")])
        if "ingest" in sections:
            results["ingest"] = bench_ingest([int(b) for b in args.batches.split(",")],
                                             args.workers, args.ingest_seconds, out_dir)
        if "cycle" in sections:
            results["cycle"] = bench_cycle(args.workers, args.cycle_hours,
                                           args.seconds_per_hour, out_dir)
        if "memory" in sections:
            options = None
            if args.malloc_arena_max is not None:
                options = PosteriorActorOptions(runtime_env={"env_vars": {
                    "MALLOC_ARENA_MAX": str(args.malloc_arena_max)}})
            results["memory"] = bench_memory(1000, 72, 64, out_dir, options)
    finally:
        ray.shutdown()
    results["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    if "latency" in results:
        ax = {r["observed_arms"]: r["ax_get_next_trials_s"] for r in results.get("ax", [])}
        for r in results["latency"]:
            r["ax_s"] = ax.get(r["observed_arms"])
            r["speedup_p50"] = (r["ax_s"] / (r["p50_ms"] / 1e3)) if r["ax_s"] else None
        print(table("Thompson-sample latency seen by a worker (refit running concurrently)",
                    results["latency"],
                    ["observed_arms", "candidates", "samples", "p50_ms", "p99_ms", "max_ms",
                     "refit_running_throughout", "fresh_plan_s", "ax_s", "speedup_p50"]))
    if "ingest" in results:
        print(table("Ingest into the central actor", results["ingest"],
                    ["batch", "workers", "accepted", "seconds", "deltas_per_s"]))
    if "cycle" in results:
        print(table("64 arm workers, hourly cycle of the non-straggler workers",
                    results["cycle"],
                    ["run", "workers", "other_cycle_p50_ms", "other_cycle_p95_ms",
                     "other_tick_lag_p95_ms", "other_sample_p50_ms", "straggler_cycle_p50_ms"]))
    if "memory" in results:
        print(table("Central actor memory", [results["memory"]],
                    ["arms", "hours", "metrics", "records", "rss_after_ingest_mb",
                     "rss_after_rebuild_mb", "peak_rss_mb", "rebuild_s"]))
    print(f"\nwrote {args.out} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
