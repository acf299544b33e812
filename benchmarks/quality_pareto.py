"""Multi-objective quality: hypervolume of the feasible arms run, the preferred pick, online harm.

The rows of ``benchmarks/quality.py`` for Pareto worlds, on the same driver
(``run_local``), the same simulated backends and the same paired seeds; each method
runs every (world, seed). Scored on the *true* deltas, per run:

- ``hv_ratio``: hypervolume of the signed true deltas of the feasible arms run by the
  last hour, reference point the control, over the hypervolume of the true feasible
  front (a dense search, :func:`hz_ray.sim.pareto.true_pareto_front`, raised by the
  feasible arms any run of the same world seed ran, so every method shares one
  denominator).
- ``cheb_frac``: the true Chebyshev value (at the job's preference, equal shares when
  none) of the recommended arm, over the best on that front (0 for the control). The
  front is a set of points, so files run with another ``--preference`` (or
  ``--skip-fronts``) are scored on the same front with ``--merge``.
- ``feasible``: the recommended arm's true violation is 0.
- ``online_cost_pp``: traffic-weighted true guardrail violation of the arms run.

Usage::

    .venv/bin/python benchmarks/quality_pareto.py --worlds value_model_pareto \\
        --methods hz-ray ax random --seeds 10 --hours 72 --traffic 500000 \\
        --preference 0.7 0.3 --workers 2 --out benchmarks/out/pareto
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import importlib.util
import json
import math
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quality import (  # noqa: E402 - after the path set-up
    FEASIBLE_TOL,
    METHODS,
    Method,
    _machine,
    _merge,
    _single_thread,
    _sources,
    arm_hours_for,
    make_run,
)

FRONT_SAMPLES = 4096


def _problem(world, preference: list[float] | None):
    problem = world.default_problem
    if preference is None:
        return problem
    names = list(problem.pareto)
    if len(preference) != len(names):
        raise SystemExit(f"--preference needs {len(names)} shares for {names}")
    return dataclasses.replace(problem, preference=dict(zip(names, preference, strict=True)))


def run_pareto(task: dict) -> dict:
    """One (method, world, seed) run: the arms' and the pick's true deltas. Never raises."""
    start = time.perf_counter()
    try:
        return _run_pareto(task)
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid
        import traceback

        return {**{k: task[k] for k in ("method", "world", "seed")},
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                "wall_s": time.perf_counter() - start}


def _run_pareto(task: dict) -> dict:
    _single_thread()
    import logging

    logging.getLogger("hz_ray").setLevel(logging.WARNING)
    from benchmarks.quality import _import
    from hz_ray.local import run_local

    method = Method(**task["method_spec"])
    if task["preference"] is not None:
        names = list(_world_problem_names(task["world"]))
        method = dataclasses.replace(method, config=_merge(method.config, {"objective": {
            "preference": dict(zip(names, task["preference"], strict=True))}}))
    seed, hours = task["seed"], task["hours"]
    world, config, clock, backend = make_run(method, task["world"], seed, task["slots"],
                                             tuple(task["arm_hours"]), task["traffic"])
    factory = None
    if method.factory is not None:
        cls = _import(method.factory)

        def factory(cfg, cls=cls):
            return cls(cfg)

    run_dir = Path(tempfile.mkdtemp(prefix="hzp-"))
    wall0 = time.perf_counter()
    try:
        result = run_local(config, backend, clock=clock, hours=hours, seed=seed,
                           run_dir=run_dir, optimizer_factory=factory)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    arms = []
    for arm in result.arms.values():
        end = arm.stopped_hour if arm.stopped_hour is not None else hours
        arms.append({"arm_id": arm.arm_id, "live_hours": max(0, end - arm.launched_hour),
                     "deltas": world.true_deltas(arm.params)})
    final = result.recommendation
    return {"method": method.name, "world": task["world"], "seed": seed, "hours": hours,
            "preference": task["preference"], "arms": arms, "final_arm": final.arm_id,
            "final_deltas": None if final.is_control else world.true_deltas(final.params),
            "wall_s": time.perf_counter() - wall0}


def _world_problem_names(world_name: str) -> tuple[str, ...]:
    from hz_ray.backends import make_world

    return tuple(make_world(world_name, seed=0).default_problem.pareto)


def true_front(world_name: str, seed: int, preference: list[float] | None) -> dict:
    """The world seed's true front: its signed values (any preference is scored on them)."""
    _single_thread()
    from hz_ray.backends import make_world
    from hz_ray.sim.pareto import true_pareto_front

    world = make_world(world_name, seed=seed)
    problem = _problem(world, preference)
    fixed = {world.parameter_names[0]: world.base_params[world.parameter_names[0]]} \
        if world.scale_invariant else None
    front = true_pareto_front(world, problem, n_samples=FRONT_SAMPLES, seed=seed, fixed=fixed)
    return {"values": front.values.tolist(), "n_front": len(front.params),
            "n_feasible": front.n_feasible}


def score(runs: list[dict], fronts: dict, preference: list[float] | None) -> None:
    """Add ``hv_ratio``, ``cheb_frac``, ``feasible`` and ``online_cost_pp`` to every run."""
    import numpy as np

    from hz_ray.backends import make_world
    from hz_ray.sim.pareto import chebyshev_value, hypervolume

    problems: dict[str, object] = {}
    pooled: dict[tuple, list] = defaultdict(list)
    best_ran: dict[tuple, float] = defaultdict(lambda: -math.inf)
    for r in runs:
        if "error" in r:
            continue
        problem = problems.setdefault(r["world"], _problem(make_world(r["world"], seed=0),
                                                           preference))
        names = list(problem.pareto)
        r["_signed"] = [[problem.pareto[m] * a["deltas"][m] for m in names] for a in r["arms"]
                        if problem.violation(a["deltas"]) <= FEASIBLE_TOL]
        r["_problem"] = problem
        pooled[(r["world"], r["seed"])] += r["_signed"]
        best_ran[(r["world"], r["seed"])] = max(
            [best_ran[(r["world"], r["seed"])]]
            + [chebyshev_value(a["deltas"], problem) for a in r["arms"]
               if problem.violation(a["deltas"]) <= FEASIBLE_TOL])
    for r in runs:
        if "error" in r:
            continue
        problem = r.pop("_problem")
        front = fronts[f"{r['world']}:{r['seed']}"]
        k = len(problem.pareto)
        ref = np.zeros(k)
        everything = np.array(front["values"] + pooled[(r["world"], r["seed"])]).reshape(-1, k)
        denom = hypervolume(everything, ref)
        mine = np.array(r.pop("_signed")).reshape(-1, k)
        r["hv_ratio"] = hypervolume(mine, ref) / denom if denom > 0 else math.nan
        shares = problem.preference_shares
        scale = np.array([1.0 / (k * shares[m]) for m in problem.pareto])
        front_best = float((np.array(front["values"]).reshape(-1, k) * scale).min(axis=1).max())
        best = max(front_best, best_ran[(r["world"], r["seed"])])
        d = r["final_deltas"]
        value = 0.0 if d is None else chebyshev_value(d, problem)
        r["feasible"] = d is None or problem.violation(d) <= FEASIBLE_TOL
        r["cheb_frac"] = (value / best if best > 0 else math.nan) if r["feasible"] else 0.0
        hours = sum(a["live_hours"] for a in r["arms"])
        cost = sum(a["live_hours"] * problem.violation(a["deltas"]) for a in r["arms"])
        r["online_cost_pp"] = 100 * cost / hours if hours else 0.0


def _stat(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return (f"{statistics.median(vals):.3f} (mean {statistics.fmean(vals):.3f} ± "
            f"{sd / math.sqrt(len(vals)):.3f})")


def table(runs: list[dict], order: list[str]) -> str:
    """One row per (world, method): medians (mean ± se) over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if "error" not in r:
            groups[(r["world"], r["method"])].append(r)
    lines = ["| world | method | seeds | HV / true HV | Chebyshev % of optimum "
             "| final feasible | online harm (pp) |", "|---|---|---|---|---|---|---|"]
    for (world, method), rs in sorted(groups.items(),
                                      key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        lines.append(
            f"| {world} | {method} | {len(rs)} | {_stat([r['hv_ratio'] for r in rs])} | "
            f"{_stat([r['cheb_frac'] for r in rs])} | "
            f"{sum(r['feasible'] for r in rs)}/{len(rs)} | "
            f"{_stat([r['online_cost_pp'] for r in rs])} |")
    return "\n".join(lines)


def merge(paths: list[Path], preference: list[float] | None) -> int:
    """Re-score the runs of several saved files together and print the table."""
    runs, fronts, order = [], {}, []
    for path in paths:
        saved = json.loads(path.read_text())
        fronts.update(saved["fronts"])
        for r in saved["runs"]:
            if r.get("preference") != preference:
                continue  # scored with its own preference in another merge
            runs.append(r)
            if r["method"] not in order:
                order.append(r["method"])
    score(runs, fronts, preference)
    print(table(runs, order))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the grid, score it, print the table and write ``quality-pareto-<tag>.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["hz-ray", "ax", "random"])
    parser.add_argument("--worlds", nargs="+", default=["value_model_pareto"])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None,
                        help="explicit seeds (overrides --seeds)")
    parser.add_argument("--hours", type=int, default=72)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--traffic", type=int, default=500_000)
    parser.add_argument("--preference", type=float, nargs="+", default=None,
                        help="shares of the Pareto metrics, in the world's order")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "pareto")
    parser.add_argument("--skip-fronts", action="store_true",
                        help="run and save only; score later with --merge beside a file "
                             "that holds the same world seeds' fronts")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="score saved quality-pareto-*.json files together (one shared "
                             "front per world seed), print the table; no runs")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.preference)
    methods = []
    for name in args.methods:
        m = METHODS[name]
        if m.needs and importlib.util.find_spec(m.needs) is None:
            print(f"SKIP {name}: {m.needs} is not installed "
                  "(.venv/bin/pip install -c constraints.txt ax-platform==1.3.1)")
            continue
        methods.append(m)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    with cf.ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        front_futs = {} if args.skip_fronts else {
            pool.submit(true_front, w, s, args.preference): f"{w}:{s}"
            for w in args.worlds for s in seeds}
        tasks = [{"method": m.name, "method_spec": dataclasses.asdict(m), "world": w,
                  "seed": s, "hours": args.hours, "slots": args.slots,
                  "traffic": args.traffic, "preference": args.preference,
                  "arm_hours": list(arm_hours_for(args.hours))}
                 for w in args.worlds for s in seeds for m in methods]
        futs = [pool.submit(run_pareto, t) for t in tasks]
        fronts = {key: fut.result() for fut, key in front_futs.items()}
        runs = []
        for i, fut in enumerate(cf.as_completed(futs), 1):
            r = fut.result()
            runs.append(r)
            status = r.get("error") or f"{len(r['arms'])} arms, pick {r['final_arm']}"
            print(f"[{i}/{len(tasks)}] {r['method']} {r['world']} seed {r['seed']}: {status} "
                  f"({r['wall_s']:.0f} s)", flush=True)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": _machine(), "hz_ray_sources": _sources(),
            "elapsed_s": time.perf_counter() - t0}
    path = args.out / f"quality-pareto-{args.tag}.json"
    saved = {"meta": meta, "fronts": fronts, "runs": runs}
    path.write_text(json.dumps(saved, indent=1, default=str))  # before scoring: keep the runs
    if not args.skip_fronts:
        score(runs, fronts, args.preference)
        saved["table"] = table(runs, [m.name for m in methods])
        print(saved["table"])
        path.write_text(json.dumps(saved, indent=1, default=str))
    errors = [r for r in runs if "error" in r]
    print(f"wrote {path}; {len(errors)} errors; {time.perf_counter() - t0:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
