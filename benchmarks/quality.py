"""Quality benchmark: hz-ray against baselines and ablations on simulated A/B worlds.

Runs methods x worlds x seeds through the same driver (``hz_ray.local.run_local``)
and the same simulated platform, in parallel processes (one torch thread each),
and scores every run against the world's noise-free truth:

- gain: true objective delta of the final recommendation, in % (0 for the control);
- violation: summed true constraint shortfall of the final recommendation, in
  percentage points (pp; the unit of the paper's table, where gain is in %);
- feasible: violation == 0 (to 1e-9);
- first feasible improving hour: first job hour whose recommendation has true
  gain > 0 and violation == 0;
- regret: true feasible optimum minus gain, pp; and gain as a fraction of the optimum;
- online cost: traffic-weighted true violation of the arms that ran (arm-hours
  weight; every test group gets the same traffic), pp; online gain likewise;
- best ran: the best true gain of a feasible arm that ran >= ``recommend_min_hours``
  (what a perfect readout could have picked);
- wall and CPU seconds of the run.

Aggregates over seeds: mean, std, s.e. and median. Writes
``<out>/quality-<tag>.json`` and ``<out>/quality-<tag>.png`` (gain by hour, mean
with a +-1 s.e. band, the optimum dashed) and prints the table.

Seeds: run ``s`` uses world seed ``s`` (a different random world for ``paper``
and a different request pool for ``value_model``), backend noise seed ``s`` and
optimiser seed ``s``. True optima come from ``find_optimum`` and are cached in
``<out>/optima.json`` by ``world:seed`` (value_model: 1-2 min each); a scale-
invariant world is searched on the slice with its first weight at the base.

Usage::

    .venv/bin/python benchmarks/quality.py --methods hz-ray bo-unconstrained \
        --worlds paper --hours 30 --seeds 20 --workers 2
    .venv/bin/python benchmarks/quality.py --smoke --out /tmp/q
    .venv/bin/python benchmarks/quality.py --list
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import dataclasses
import importlib
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quality_certify import (  # noqa: E402 - after the path set-up
    CALIBRATION_HOURS,
    attach_yardsticks,
    calibration_rows,
    calibration_table,
    fill_yardsticks,
    pick_posterior,
)

FEASIBLE_TOL = 1e-9
DEFAULT_OUT = ROOT / "benchmarks" / "out"


# --------------------------------------------------------------------------- methods
@dataclasses.dataclass(frozen=True)
class Method:
    """One contender.

    Attributes:
        name: Label in tables.
        factory: ``"module:Class"`` of an Optimizer subclass, or None for hz-ray's.
        config: Nested overrides of the tuning config (``{"optimizer": {...}}``).
        backend: Backend options: ``reporting_delay_hours``, ``raw_means``,
            ``traffic_per_arm`` (users per group-hour, default 20,000).
        description: One line for the report.
        needs: Importable module the method needs (skipped with a message if absent).
    """

    name: str
    factory: str | None = None
    config: dict = dataclasses.field(default_factory=dict)
    backend: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    needs: str | None = None


_B = "benchmarks.baselines"
# Contender stops rank arms by hz-ray's Thompson picks: part of hz-ray's method, not of the
# platform. Baselines keep the shared lifecycle (guardrail stops, max hours).
_PLAIN = {"arms": {"contender_stop_share": 0.0}}
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("hz-ray", description="hz-ray as configured (GP per metric delta + constrained TS)"),
    Method("random", f"{_B}.random_search:RandomSearchOptimizer", config=_PLAIN,
           description="uniform random arms; best observed feasible arm"),
    Method("bo-unconstrained", f"{_B}.botorch_bo:UnconstrainedBO", config=_PLAIN,
           description="BoTorch qLogNEI on the objective only"),
    Method("bo-penalized", f"{_B}.botorch_bo:PenalizedBO", config=_PLAIN,
           description="BoTorch qLogNEI on objective - 10 x violation"),
    Method("bo-constrained", f"{_B}.botorch_bo:ConstrainedBO", config=_PLAIN,
           description="BoTorch qLogNEI with outcome constraints (Letham et al.)"),
    Method("ax", f"{_B}.ax_client:AxOptimizer", config=_PLAIN, needs="ax",
           description="Ax Client, outcome constraints, asynchronous trials"),
    # ablations of hz-ray
    Method("hz-raw", backend={"raw_means": True},
           description="ablation: raw means vs a fixed reference level, no same-hour control"),
    Method("hz-sync", config={"arms": {"synchronous": True}},
           description="ablation: synchronous batches (wait for the whole batch)"),
    Method("hz-p0", config={"optimizer": {"proposal_probability": 0.0}},
           description="ablation: no candidate proposals (p = 0)"),
    Method("hz-readouts", f"{_B}.hz_variants:ReadoutStudyOptimizer",
           description="hz-ray, plus alternative readout rules scored on the same runs"),
    *[Method(f"hz-delay{d}", backend={"reporting_delay_hours": d},
             description=f"ablation: reporting delay {d} h") for d in (0, 3, 6, 12)],
]}


def register_variant(name: str, base: str = "hz-ray", factory: str | None = None,
                     config: dict | None = None, backend: dict | None = None,
                     description: str = "") -> Method:
    """Add a method derived from ``base`` with more overrides (for method studies)."""
    parent = METHODS[base]
    method = Method(name, factory or parent.factory, _merge(parent.config, config or {}),
                    {**parent.backend, **(backend or {})}, description or name, parent.needs)
    METHODS[name] = method
    return method


def _parse_variant(spec: str) -> Method:
    """``name=base:key.sub=value,key2=value`` -> a registered variant (CLI helper)."""
    name, _, rest = spec.partition("=")
    base, _, assigns = rest.partition(":")
    config: dict = {}
    backend: dict = {}
    factory = None
    for item in filter(None, assigns.split(",")):
        key, _, raw = item.partition("=")
        value: Any = json.loads(raw) if raw[:1] in "-0123456789[{tfn\"" else raw
        if key == "factory":
            factory = raw
        elif key.startswith("backend."):
            backend[key[len("backend."):]] = value
        else:
            node = config
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
    return register_variant(name, base or "hz-ray", factory, config, backend, spec)


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ---------------------------------------------------------------------------- worlds
REALISM = {"paper": "paper"}  # world -> RealismConfig preset; others use the default


@dataclasses.dataclass(frozen=True)
class Setting:
    """How the simulated platform behaves, beside the world: traffic, delays, realism.

    Attributes:
        name: ``default`` or ``realistic``.
        traffic: Users per group-hour when ``--traffic`` is not given.
        reporting_delay_hours: The backend's delay, unless a method sets its own.
        realistic: Add :meth:`RealismConfig.realistic`'s effects to the world's realism.
    """

    name: str
    traffic: int
    reporting_delay_hours: float = 0.0
    realistic: bool = False


#: ``default``: the world's realism, no delay, 20,000 users. ``realistic``: issue 15's
#: held-out setting (50,000 users, 3-5 h delays, stragglers, duplicates, out-of-order
#: hours, a 2-hour ramp, daily and weekly cycles).
SETTINGS = {"default": Setting("default", 20_000),
            "realistic": Setting("realistic", 50_000, 3.0, True)}


def _realism(world_name: str, setting: str = "default"):
    from hz_ray.backends import RealismConfig

    preset = REALISM.get(world_name)
    base = RealismConfig.paper() if preset == "paper" else RealismConfig()
    return RealismConfig.realistic(base) if SETTINGS[setting].realistic else base


def arm_hours_for(hours: int) -> tuple[int, int]:
    """(min_hours, max_hours) of an arm for a horizon: the product defaults from 48 h."""
    from hz_ray.config import ArmsSpec

    return (ArmsSpec.min_hours, ArmsSpec.max_hours) if hours >= 48 else (3, 8)


def build_config(world, method: Method, seed: int, slots: int, arm_hours: tuple[int, int]):
    """The tuning config of one run: the world's problem + arms + method overrides."""
    from hz_ray.config import config_from_mapping

    raw = world.config_mapping()
    raw["name"] = f"quality-{method.name}"
    raw["arms"] = {"slots": slots, "min_hours": arm_hours[0], "max_hours": arm_hours[1]}
    raw["optimizer"] = {"seed": seed}
    if world.scale_invariant:  # the same search space for every method
        raw["optimizer"]["hold_fixed"] = world.parameter_names[0]
    raw = _merge(raw, method.config)
    return config_from_mapping(raw)


# --------------------------------------------------------------------------- optimum
def optimum_key(world_name: str, seed: int) -> str:
    return f"{world_name}:{seed}"


def compute_optimum(world_name: str, seed: int) -> dict:
    """True feasible optimum of a world (slow for value_model): find_optimum, then refine."""
    _single_thread()
    from hz_ray.backends import find_optimum, make_world

    world = make_world(world_name, seed=seed)
    t0 = time.perf_counter()
    fixed = ({world.parameter_names[0]: world.base_params[world.parameter_names[0]]}
             if world.scale_invariant else None)
    opt = find_optimum(world, fixed=fixed)
    how = "find_optimum(world" + (", fixed={first weight: base})" if fixed else ")")
    found = {"objective": opt.objective, "violation": opt.violation, "feasible": opt.feasible,
             "params": opt.params, "how": how}
    out = refine_optimum(world, found)
    out["seconds"] = time.perf_counter() - t0
    return out


def refine_optimum(world, found: dict, n_cloud: int = 256, seed: int = 0,
                   problem=None) -> dict:
    """Polish a found optimum from more starting points (COBYQA in the search box).

    ``find_optimum``'s global Sobol stage can miss a thin feasible sliver: on
    value_model seed 5 no Sobol point was feasible and improving, so it returned
    the control. A random local search (shrinking Gaussian steps) follows the
    polish. Starts: the found point; the best feasible point of a Gaussian
    cloud (sd 0.1 in the unit cube) around the base; and, for a scale-invariant
    world, the best feasible point of the line that scales every free weight
    together (the same as moving the held one). The first weight stays at its
    base for a scale-invariant world, as in the tuner's search space.
    """
    import numpy as np
    from scipy.optimize import Bounds, NonlinearConstraint, minimize

    problem = problem or world.default_problem
    names = world.parameter_names
    free = list(range(1, len(names))) if world.scale_invariant else list(range(len(names)))
    logs = np.array([world.log_scale[names[i]] for i in free])
    lo = np.array([world.bounds[names[i]][0] for i in free], dtype=float)
    hi = np.array([world.bounds[names[i]][1] for i in free], dtype=float)
    lo_t = np.where(logs, np.log(np.where(logs, lo, 1.0)), lo)
    hi_t = np.where(logs, np.log(np.where(logs, hi, 1.0)), hi)
    base = world.base_vector()
    metrics = list(world.metrics)
    obj_w = np.array([problem.objective.get(m, 0.0) for m in metrics])
    rows = [(metrics.index(m), c, 1.0) for m, c in problem.min_deltas.items()]
    rows += [(metrics.index(m), c, -1.0) for m, c in problem.max_deltas.items()]

    def decode(V):
        V = np.clip(np.atleast_2d(V), 0.0, 1.0)
        raw = lo_t + V * (hi_t - lo_t)
        X = np.tile(base, (V.shape[0], 1))
        X[:, free] = np.where(logs, np.exp(raw), raw)
        return X

    def encode(x):
        raw = np.where(logs, np.log(x[free]), x[free])
        return np.clip((raw - lo_t) / (hi_t - lo_t), 0.0, 1.0)

    def evaluate(V):
        D = world.true_deltas_batch(decode(V))
        slack = np.stack([s * (D[:, j] - c) for j, c, s in rows], axis=1) if rows \
            else np.zeros((D.shape[0], 0))
        return D @ obj_w, slack

    v_base = encode(base)
    starts = [encode(np.array([found["params"][n] for n in names], dtype=float))]
    rng = np.random.default_rng(seed)
    cloud = np.clip(v_base + 0.1 * rng.standard_normal((n_cloud, len(free))), 0.0, 1.0)
    if world.scale_invariant:
        line = np.array([encode(np.r_[base[0], base[1:] * c])
                         for c in np.exp(np.linspace(0.0, -1.1, 23))])
        cloud = np.vstack([cloud, line])
    obj, slack = evaluate(cloud)
    ok = (slack >= -1e-12).all(axis=1)
    if ok.any():
        starts.append(cloud[np.flatnonzero(ok)[np.argmax(obj[ok])]])
    if world.scale_invariant and ok[n_cloud:].any():
        tail = np.flatnonzero(ok[n_cloud:]) + n_cloud
        starts.append(cloud[tail[np.argmax(obj[tail])]])
    best_v, best_obj = None, -np.inf
    for v0 in starts:
        for v in (v0, _cobyqa(evaluate, v0, minimize, Bounds, NonlinearConstraint)):
            if v is None:
                continue
            o, sl = evaluate(v)
            if (sl >= -1e-12).all() and o[0] > best_obj:
                best_v, best_obj = v, float(o[0])
    if best_v is not None:  # random local search: robust on piecewise-constant worlds
        for scale in (0.08, 0.04, 0.02, 0.01, 0.005):
            for _ in range(4):
                trial = np.clip(best_v + scale * rng.standard_normal((48, len(free))), 0.0, 1.0)
                o, sl = evaluate(trial)
                ok = (sl >= -1e-12).all(axis=1) & (o > best_obj)
                if not ok.any():
                    break
                i = np.flatnonzero(ok)[np.argmax(o[ok])]
                best_v, best_obj = trial[i], float(o[i])
    if best_v is None or (found.get("feasible", True)
                          and best_obj <= found["objective"] + 1e-12):
        return {**found, "refined": False}
    params = dict(zip(names, decode(best_v)[0].tolist(), strict=True))
    d = world.true_deltas(params)
    return {"objective": problem.objective_value(d), "violation": problem.violation(d),
            "feasible": problem.violation(d) <= FEASIBLE_TOL, "params": params,
            "how": found["how"] + " + refine_optimum (COBYQA from more starts, local search)",
            "refined": True, "found_objective": found["objective"]}


def _cobyqa(evaluate, v0, minimize, bounds_cls, constraint_cls):
    import numpy as np

    memo = {}

    def get(v):
        key = v.tobytes()
        if key not in memo:
            memo.clear()
            o, sl = evaluate(v[None, :])
            memo[key] = (float(o[0]), sl[0])
        return memo[key]

    constraints = [constraint_cls(lambda v: get(v)[1], 0.0, np.inf)] if get(v0)[1].size else []
    try:
        res = minimize(lambda v: -get(v)[0], v0, method="COBYQA", bounds=bounds_cls(0.0, 1.0),
                       constraints=constraints,
                       options={"maxfev": 300, "initial_tr_radius": 0.05,
                                "final_tr_radius": 1e-5})
    except (ValueError, RuntimeError):
        return None
    return np.clip(res.x, 0.0, 1.0)


def refine_cached(world_name: str, seed: int, found: dict) -> dict:
    """Pool task: :func:`refine_optimum` of a cached optimum."""
    _single_thread()
    from hz_ray.backends import make_world

    t0 = time.perf_counter()
    out = refine_optimum(make_world(world_name, seed=seed), found)
    out["refine_seconds"] = time.perf_counter() - t0
    return out


def information_limit(world_name: str, seed: int, hours: int, slots: int, optimum: dict,
                      traffic: int = 20_000) -> dict:
    """Best gain that ``hours`` x ``slots`` of traffic could certify as feasible at 95%.

    Suppose every slot ran one and the same point for the whole job. The delta of
    metric ``i`` averaged over the job then has variance
    ``cv_i^2 / traffic / hours * (1 / slots + 1)``: the test groups' noise averages
    over ``slots * hours`` group-hours, the same-hour control's only over ``hours``.
    Each guardrail bound is tightened by ``z`` such deviations, with ``z`` the
    one-sided Bonferroni quantile for P(all guardrails hold) >= 0.95, and the best
    point of the tightened problem is found (``refine_optimum`` from the true
    optimum). Without prior knowledge beyond the data, no tuner can recommend a
    better point *and know* at 95% that it is feasible; a tuner can still be lucky,
    or use a well-specified prior, so it is a yardstick, not a hard bound.
    """
    _single_thread()
    from statistics import NormalDist

    from hz_ray.backends import BenchmarkProblem, make_world

    world = make_world(world_name, seed=seed)
    base = world.default_problem
    k = len(base.min_deltas) + len(base.max_deltas)
    z = NormalDist().inv_cdf(1 - 0.05 / max(k, 1))
    margin = {m: z * world.unit_cv[m] * math.sqrt((1.0 / slots + 1.0) / traffic / hours)
              for m in [*base.min_deltas, *base.max_deltas]}
    tight = BenchmarkProblem(base.objective,
                             {m: c + margin[m] for m, c in base.min_deltas.items()},
                             {m: c - margin[m] for m, c in base.max_deltas.items()})
    start = dict(optimum)
    start["feasible"] = tight.violation(world.true_deltas(optimum["params"])) <= FEASIBLE_TOL
    start["objective"] = optimum["objective"] if start["feasible"] else -math.inf
    out = refine_optimum(world, start, problem=tight)
    gain = max(0.0, out["objective"]) if math.isfinite(out["objective"]) else 0.0
    return {"hours": hours, "slots": slots, "z": z,
            "margins_pp": {m: 100 * v for m, v in margin.items()},
            "certifiable_gain_pct": 100 * gain,
            "frac_of_optimum": gain / optimum["objective"] if optimum["objective"] > 0 else None}


def _information_limits(pool, args, seeds: list[int], optima: dict) -> int:
    """CLI: information_limit for every world x seed x horizon; prints and writes JSON."""
    keys = [(w, s, h) for w in args.worlds for s in seeds for h in args.hours]
    futs = {pool.submit(information_limit, w, s, h, args.slots, optima[optimum_key(w, s)],
                        args.traffic): (w, s, h) for w, s, h in keys}
    rows = {}
    for fut in cf.as_completed(futs):
        w, s, h = futs[fut]
        r = fut.result()
        rows[f"{optimum_key(w, s)}:{h}h"] = r
        print(f"{w} seed {s} {h} h: certifiable {r['certifiable_gain_pct']:.3f}% "
              f"({100 * (r['frac_of_optimum'] or 0):.0f}% of the optimum); margins pp "
              + ", ".join(f"{m} {v:.3f}" for m, v in r["margins_pp"].items()), flush=True)
    for h in args.hours:
        fr = sorted(100 * (r["frac_of_optimum"] or 0) for k, r in rows.items()
                    if k.endswith(f":{h}h"))
        print(f"{h} h, traffic {args.traffic}: median {statistics.median(fr):.0f}% of the "
              f"optimum certifiable (min {fr[0]:.0f}%, max {fr[-1]:.0f}%)")
    path = args.out / f"information_limit-{args.tag or 'run'}.json"
    path.write_text(json.dumps({"traffic": args.traffic, "slots": args.slots, "rows": rows},
                               indent=1))
    print(f"wrote {path}")
    return 0


def load_optima(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_optima(path: Path, new: dict) -> None:
    """Merge ``new`` into the cache file atomically (other processes may write too)."""
    cache = load_optima(path)
    cache.update(new)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)


# ------------------------------------------------------------------------ one run
def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _import(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def run_one(task: dict) -> dict:
    """Run one (method, world, seed) and score it; never raises (errors are recorded)."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    try:
        return _run_one(task)
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid
        return {**{k: task[k] for k in ("method", "world", "seed", "hours")},
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                "wall_s": time.perf_counter() - start_wall,
                "cpu_s": time.process_time() - start_cpu}


def make_run(method: Method, world_name: str, seed: int, slots: int,
             arm_hours: tuple[int, int], traffic: int, setting: str = "default"):
    """``(world, config, clock, backend)`` of one run, the backend shaped by the method.

    Args:
        method: The method (its config overrides and backend options).
        world_name: A world of :func:`hz_ray.backends.make_world`, seeded with ``seed``.
        seed: World, noise and optimiser seed.
        slots: Live arms at once.
        arm_hours: The arms' ``(min_hours, max_hours)``.
        traffic: Users per group-hour, unless the method sets ``traffic_per_arm``.
        setting: A key of :data:`SETTINGS` (realism and reporting delay).
    """
    from hz_ray.backends import SimulatedBackend, make_world
    from hz_ray.clock import SimClock

    world = make_world(world_name, seed=seed)
    config = build_config(world, method, seed, slots, arm_hours)
    clock = SimClock()
    backend = SimulatedBackend(
        world, clock, seed=seed, realism=_realism(world_name, setting),
        reporting_delay_hours=method.backend.get("reporting_delay_hours",
                                                 SETTINGS[setting].reporting_delay_hours),
        traffic_per_arm=int(method.backend.get("traffic_per_arm", traffic)))
    if method.backend.get("raw_means"):
        from benchmarks.baselines.raw_means import RawMeansBackend

        backend = RawMeansBackend(backend)
    return world, config, clock, backend


def _run_one(task: dict) -> dict:
    _single_thread()
    import logging

    logging.getLogger("hz_ray").setLevel(logging.WARNING)
    from hz_ray.local import run_local

    method = Method(**task["method_spec"])
    seed, hours = task["seed"], task["hours"]
    world, config, clock, backend = make_run(method, task["world"], seed, task["slots"],
                                             tuple(task["arm_hours"]),
                                             task.get("traffic", 20_000),
                                             task.get("setting", "default"))
    problem = world.default_problem
    instances: list = []
    factory = None
    if method.factory is not None:
        cls = _import(method.factory)

        def factory(cfg, cls=cls):
            instances.append(cls(cfg))
            return instances[-1]

    run_dir = Path(tempfile.mkdtemp(prefix="hzq-"))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        result = run_local(config, backend, clock=clock, hours=hours, seed=seed,
                           run_dir=run_dir, optimizer_factory=factory)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        extras = {}
        if instances and hasattr(instances[-1], "native_best"):
            params = instances[-1].native_best()
            if params is not None:
                d = world.true_deltas(params)
                extras["native_final"] = {"gain_pct": 100 * problem.objective_value(d),
                                          "violation_pp": 100 * problem.violation(d),
                                          "params": params}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    def score(params) -> tuple[float, float]:
        d = world.true_deltas(params)
        return 100 * problem.objective_value(d), 100 * problem.violation(d)

    if instances and hasattr(instances[-1], "readout_log"):
        hours_of = [h for h, _ in result.recommendations]
        readouts = {}
        for rule, entries in instances[-1].readout_log.items():
            tr = []
            for call, arm_id, params in entries:
                if call < len(hours_of):
                    g, v = (0.0, 0.0) if arm_id == "control" else score(params)
                    tr.append([hours_of[call], round(g, 6), round(v, 6), arm_id])
            if tr:
                readouts[rule] = tr
        extras["readouts"] = readouts

    trace, calibration = [], []
    for hour, rec in result.recommendations:
        g, v = (0.0, 0.0) if rec.is_control else score(rec.params)
        trace.append([hour, round(g, 6), round(v, 6), rec.arm_id])
        if hour + 1 in CALIBRATION_HOURS and not rec.is_control:
            calibration.append(pick_posterior(hour + 1, rec, world.true_deltas(rec.params),
                                              problem))
    final = result.recommendation
    gain, viol = (0.0, 0.0) if final.is_control else score(final.params)
    first = next((h for h, g, v, _ in trace if g > 0 and v <= 100 * FEASIBLE_TOL), None)
    switches = sum(1 for a, b in zip(trace, trace[1:], strict=False) if a[3] != b[3])
    arm_hours_total = cost = online_gain = 0.0
    best_ran, best_ran_arm = 0.0, None
    arms = []
    min_rec = config.optimizer.recommend_min_hours
    for arm in result.arms.values():
        end = arm.stopped_hour if arm.stopped_hour is not None else hours
        live = max(0, end - arm.launched_hour)
        g, v = score(arm.params)
        arm_hours_total += live
        cost += live * v
        online_gain += live * g
        if v <= 100 * FEASIBLE_TOL and arm.hours_observed >= min_rec and g > best_ran:
            best_ran, best_ran_arm = g, arm.arm_id
        arms.append([arm.arm_id, arm.launched_hour, arm.stopped_hour, arm.stop_reason,
                     arm.hours_observed, round(g, 5), round(v, 5)])
    best_any = max((a[5] for a in arms if a[6] <= 100 * FEASIBLE_TOL), default=0.0)
    for rule, tr in extras.get("readouts", {}).items():
        g, v = tr[-1][1], tr[-1][2]
        extras["readouts"][rule] = {
            "gain_pct": g, "violation_pp": v, "feasible": v <= 100 * FEASIBLE_TOL,
            "first_feasible_hour": next((t[0] for t in tr if t[1] > 0
                                         and t[2] <= 100 * FEASIBLE_TOL), None),
            "switches": sum(1 for a, b in zip(tr, tr[1:], strict=False) if a[3] != b[3]),
            "trace": tr}
    return {
        "method": method.name, "world": task["world"], "seed": seed, "hours": hours,
        "slots": task["slots"], "arm_hours": list(task["arm_hours"]),
        "traffic": task.get("traffic", 20_000), "setting": task.get("setting", "default"),
        "calibration": calibration,
        "gain_pct": gain, "violation_pp": viol, "feasible": viol <= 100 * FEASIBLE_TOL,
        "final_arm": final.arm_id, "final_params": dict(final.params),
        "final_posterior": {"gain_mean_pct": 100 * final.objective_mean,
                            "gain_lcb_pct": 100 * final.objective_lcb,
                            "p_feasible": final.p_feasible},
        "first_feasible_hour": first, "switches": switches,
        "online_cost_pp": cost / arm_hours_total if arm_hours_total else 0.0,
        "online_gain_pct": online_gain / arm_hours_total if arm_hours_total else 0.0,
        "best_ran_pct": best_ran, "best_ran_arm": best_ran_arm,
        "best_any_feasible_pct": best_any, "n_arms": len(arms),
        "wall_s": wall, "cpu_s": cpu, "trace": trace, "arms": arms, **extras,
    }


# ----------------------------------------------------------------------- aggregate
def _stats(values: list[float]) -> dict:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    n = len(vals)
    if not n:
        return {"n": 0, "mean": None, "std": None, "se": None, "median": None}
    sd = statistics.stdev(vals) if n > 1 else 0.0
    return {"n": n, "mean": statistics.fmean(vals), "std": sd, "se": sd / math.sqrt(n),
            "median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def expand_readouts(runs: list[dict]) -> list[dict]:
    """One pseudo-run ``method[rule]`` per logged readout rule (same arms, other pick)."""
    out = []
    for r in runs:
        for rule, ro in (r.get("readouts") or {}).items():
            pseudo = {k: v for k, v in r.items() if k not in ("readouts", "arms")}
            pseudo.update({k: ro[k] for k in ("gain_pct", "violation_pp", "feasible",
                                              "first_feasible_hour", "switches", "trace")})
            pseudo["final_arm"] = ro["trace"][-1][3] if ro["trace"] else None
            pseudo["method"] = f"{r['method']}[{rule}]"
            pseudo["readout_of"] = r["method"]
            out.append(pseudo)
    return out


def attach_optima(runs: list[dict], optima: dict) -> None:
    """Add the optimum, regret and fraction of optimum to every run.

    The optimum of a world seed is raised to the best feasible arm that any run
    on it actually ran, if that is better (flagged ``optimum_raised``).
    """
    best_seen: dict[str, float] = defaultdict(float)
    for r in runs:
        if "error" not in r:
            key = optimum_key(r["world"], r["seed"])
            best_seen[key] = max(best_seen[key], r["best_any_feasible_pct"])
    for r in runs:
        if "error" in r:
            continue
        key = optimum_key(r["world"], r["seed"])
        opt = optima.get(key)
        if opt is None:
            continue
        found = 100 * opt["objective"]
        value = max(found, best_seen[key])
        r["optimum_pct"] = value
        r["optimum_raised"] = value > found + 1e-9
        r["regret_pp"] = value - r["gain_pct"]
        r["frac_opt"] = r["gain_pct"] / value if value > 0 else None
        r["best_ran_frac_opt"] = r["best_ran_pct"] / value if value > 0 else None


def summarize(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if "error" not in r:
            groups[(r["world"], r["hours"], r.get("setting", "default"), r.get("traffic"),
                    r["method"])].append(r)
    out = []
    for (world, hours, setting, traffic, method), rs in groups.items():
        firsts = [r["first_feasible_hour"] for r in rs]
        found = [f for f in firsts if f is not None]
        row = {
            "world": world, "hours": hours, "setting": setting, "traffic": traffic,
            "method": method, "seeds": len(rs),
            "gain_pct": _stats([r["gain_pct"] for r in rs]),
            "violation_pp": _stats([r["violation_pp"] for r in rs]),
            "feasible_frac": sum(r["feasible"] for r in rs) / len(rs),
            "frac_opt": _stats([r.get("frac_opt") for r in rs]),
            "frac_yardstick": _stats([r.get("frac_yardstick") for r in rs]),
            "best_ran_frac_yardstick": _stats([r.get("best_ran_frac_yardstick") for r in rs]),
            "yardstick_frac_opt": _stats([r["yardstick_pct"] / r["optimum_pct"] for r in rs
                                          if r.get("yardstick_pct") is not None
                                          and r.get("optimum_pct")]),
            "regret_pp": _stats([r.get("regret_pp") for r in rs]),
            "first_feasible_hour": _stats(found),
            "first_feasible_found_frac": len(found) / len(rs),
            "first_feasible_within_48h_frac": sum(1 for f in found if f <= 48) / len(rs),
            "first_feasible_hour_median_all": (statistics.median(
                [f if f is not None else math.inf for f in firsts])),
            "online_cost_pp": _stats([r["online_cost_pp"] for r in rs]),
            "online_gain_pct": _stats([r["online_gain_pct"] for r in rs]),
            "best_ran_frac_opt": _stats([r.get("best_ran_frac_opt") for r in rs]),
            "switches": _stats([r["switches"] for r in rs]),
            "wall_s": _stats([r["wall_s"] for r in rs]),
            "cpu_s": _stats([r["cpu_s"] for r in rs]),
        }
        natives = [r["native_final"] for r in rs if "native_final" in r]
        if natives:
            row["native_final_gain_pct"] = _stats([n["gain_pct"] for n in natives])
            row["native_final_violation_pp"] = _stats([n["violation_pp"] for n in natives])
            row["native_final_feasible_frac"] = sum(
                n["violation_pp"] <= 100 * FEASIBLE_TOL for n in natives) / len(natives)
        out.append(row)
    return out


def _fmt(s: dict, digits: int = 3, se: bool = True) -> str:
    if not s or s.get("mean") is None:
        return "-"
    text = f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    return text + (f" ({s['se']:.{digits}f})" if se else "")


def table(summary: list[dict], order: list[str]) -> str:
    """The paper-style markdown table, one block per (world, horizon)."""
    lines = []
    rank = {m: i for i, m in enumerate(order)}
    for key in sorted({scenario_of(r) for r in summary}):
        world, hours, setting, traffic = key
        rows = sorted((r for r in summary if scenario_of(r) == key),
                      key=lambda r: rank.get(r["method"], 999))
        lines.append(f"\n### {world}, {hours} h, {setting} setting, {traffic:,} users per "
                     f"group-hour\n")
        ys = [r["yardstick_frac_opt"] for r in rows if r.get("yardstick_frac_opt", {}).get("n")]
        if ys:
            lines.append(f"Yardstick (what the traffic can certify): median "
                         f"{_pct(ys[0])} of the optimum.\n")
        lines.append("| method | seeds | gain % mean ± sd (se) | median | % of opt (median) "
                     "| % of yardstick (median) | violation pp mean ± sd (se) | feasible "
                     "| first feasible lift h (median; <= 48 h) | regret pp "
                     "| online violation pp | best ran % opt | best ran % yardstick "
                     "| wall s (median) | CPU s (median) |")
        lines.append("|" + "---|" * 15)
        for r in rows:
            ff = r["first_feasible_hour_median_all"]
            first = "never" if math.isinf(ff) else f"{ff:.0f}"
            lines.append(
                f"| {r['method']} | {r['seeds']} | {_fmt(r['gain_pct'])} "
                f"| {r['gain_pct']['median']:.3f} | {_pct(r['frac_opt'])} "
                f"| {_pct(r.get('frac_yardstick'))} "
                f"| {_fmt(r['violation_pp'], 4)} | {100 * r['feasible_frac']:.0f}% "
                f"| {first}; {100 * r['first_feasible_within_48h_frac']:.0f}% "
                f"| {_fmt(r['regret_pp'], 3, se=False)} "
                f"| {_fmt(r['online_cost_pp'], 3, se=False)} "
                f"| {_pct(r['best_ran_frac_opt'])} "
                f"| {_pct(r.get('best_ran_frac_yardstick'))} | {r['wall_s']['median']:.1f} "
                f"| {r['cpu_s']['median']:.1f} |")
        natives = [r for r in rows if "native_final_gain_pct" in r]
        for r in natives:
            lines.append(f"\n{r['method']}'s own final pick (Client.get_best_parameterization): "
                         f"gain {_fmt(r['native_final_gain_pct'])} %, violation "
                         f"{_fmt(r['native_final_violation_pp'], 4)} pp, feasible "
                         f"{100 * r['native_final_feasible_frac']:.0f}%")
    return "\n".join(lines)


def _pct(s: dict) -> str:
    return "-" if not s or s.get("median") is None else f"{100 * s['median']:.0f}%"


def plot(runs: list[dict], path: Path, order: list[str]) -> None:
    """Gain of the recommendation by hour: mean with a +-1 s.e. band, per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in runs if "error" not in r and "readout_of" not in r]
    scenarios = sorted({(r["world"], r["hours"]) for r in ok})
    if not scenarios:
        return
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.5),
                             squeeze=False)
    for ax, (world, hours) in zip(axes[0], scenarios, strict=True):
        rs = [r for r in ok if (r["world"], r["hours"]) == (world, hours)]
        methods = sorted({r["method"] for r in rs}, key=lambda m: order.index(m)
                         if m in order else 999)
        for m in methods:
            curves = np.array([[t[1] for t in r["trace"]] for r in rs if r["method"] == m])
            mean = curves.mean(axis=0)
            se = curves.std(axis=0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1 \
                else np.zeros_like(mean)
            h = np.arange(len(mean))
            ax.plot(h, mean, label=f"{m} (n={len(curves)})")
            ax.fill_between(h, mean - se, mean + se, alpha=0.2)
        opts = [r["optimum_pct"] for r in rs if "optimum_pct" in r]
        if opts:
            ax.axhline(statistics.fmean(opts), ls="--", c="k", lw=1, label="true optimum (mean)")
        ax.set_title(f"{world}, {hours} h")
        ax.set_xlabel("job hour")
        ax.set_ylabel("true gain of the recommendation, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def _sources() -> dict:
    """Short hashes and mtimes of hz-ray's method files (the code the numbers belong to)."""
    import hashlib

    out = {}
    for name in ("optimizer.py", "thompson.py", "surrogate.py", "local.py", "config.py"):
        path = ROOT / "hz_ray" / name
        if path.exists():
            out[name] = {"sha256_12": hashlib.sha256(path.read_bytes()).hexdigest()[:12],
                         "mtime": time.strftime("%Y-%m-%d %H:%M",
                                                time.localtime(path.stat().st_mtime))}
    return out


def _machine() -> dict:
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average_1m": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["hz-ray", "random", "bo-unconstrained",
                                                         "bo-penalized", "bo-constrained"])
    parser.add_argument("--worlds", nargs="+", default=["paper"])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None,
                        help="explicit seeds (overrides --seeds)")
    parser.add_argument("--hours", type=int, nargs="+", default=[72])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--traffic", type=int, default=None,
                        help="users per group-hour (test groups and control alike; default: "
                             "the setting's); a method's backend.traffic_per_arm overrides it")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="default",
                        help="the platform's behaviour: default (the world's realism, no "
                             "delay, 20,000 users) or realistic (issue 15: 50,000 users, "
                             "3-5 h delays, stragglers, duplicates, out-of-order hours, ramp)")
    parser.add_argument("--no-yardstick", action="store_true",
                        help="do not compute the certifiable-gain yardstick of each scenario")
    parser.add_argument("--arm-hours", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="arm min_hours and max_hours (default: 2 24 from 48 h, else 3 8)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run for tests: hz-ray and random, branin, 1 seed, 8 h, 3 slots")
    parser.add_argument("--variant", action="append", default=[],
                        help="extra method NAME=BASE:key.sub=value,... e.g. "
                             "hz-k100=hz-ray:optimizer.thompson_draws=100")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--optima", type=Path, default=None,
                        help="optimum cache (default <out>/optima.json)")
    parser.add_argument("--list", action="store_true", help="list the methods and exit")
    parser.add_argument("--optima-only", action="store_true",
                        help="compute and refine the true optima, then exit")
    parser.add_argument("--information-limit", action="store_true",
                        help="compute the certifiable-gain yardstick (information_limit) for "
                             "the worlds x seeds x hours at --slots and --traffic, then exit")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="re-score and tabulate saved quality-*.json files (no runs)")
    parser.add_argument("--paired", nargs=2, default=None, metavar=("TAG:METHOD", "TAG:METHOD"),
                        help="print paired differences (A - B) of two saved runs, no runs")
    parser.add_argument("--per-seed", nargs="*", default=None, metavar="METHOD",
                        help="also print per-seed rows of these methods (all if none given)")
    parser.add_argument("--arms", nargs=2, metavar=("TAG:METHOD", "SEED"), default=None,
                        help="print one saved run's arms (launch, stop, reason, hours of "
                             "data, true gain and violation), no runs")
    args = parser.parse_args(argv)
    if args.traffic is None:
        args.traffic = SETTINGS[args.setting].traffic
    if args.merge:
        return merge(args)
    if args.paired:
        return paired(*args.paired, args.out)
    if args.arms:
        return print_arms(args.arms[0], int(args.arms[1]), args.out)

    for spec in args.variant:
        _parse_variant(spec)
    if args.list:
        for m in METHODS.values():
            print(f"{m.name:18s} {m.description}")
        return 0
    if args.smoke:
        args.methods = ["hz-ray", "random"]
        args.worlds = ["test_function:branin"]
        args.seed_list, args.hours, args.slots = [0], [8], 3
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; --list shows them")
    methods = []
    for name in args.methods:
        m = METHODS[name]
        if m.needs and importlib.util.find_spec(m.needs) is None:
            print(f"SKIP {name}: {m.needs} is not installed "
                  f"(.venv/bin/pip install -c constraints.txt ax-platform==1.3.1)")
            continue
        methods.append(m)
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    optima_path = args.optima or args.out / "optima.json"
    tag = args.tag or ("smoke" if args.smoke else
                       "-".join([*(w.replace(":", "_") for w in args.worlds),
                                 *(f"{h}h" for h in args.hours)]))
    t_start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        optima = load_optima(optima_path)
        missing = [(w, s) for w in args.worlds for s in seeds
                   if optimum_key(w, s) not in optima]
        if missing:
            print(f"computing {len(missing)} true optima ...", flush=True)
            futs = {pool.submit(compute_optimum, w, s): (w, s) for w, s in missing}
            for fut in cf.as_completed(futs):
                w, s = futs[fut]
                save_optima(optima_path, {optimum_key(w, s): fut.result()})
            optima = load_optima(optima_path)
        unrefined = [(w, s) for w in args.worlds for s in seeds
                     if "refined" not in optima[optimum_key(w, s)]]
        if unrefined:
            print(f"refining {len(unrefined)} cached optima ...", flush=True)
            futs = {pool.submit(refine_cached, w, s, optima[optimum_key(w, s)]): (w, s)
                    for w, s in unrefined}
            for fut in cf.as_completed(futs):
                w, s = futs[fut]
                save_optima(optima_path, {optimum_key(w, s): fut.result()})
            optima = load_optima(optima_path)
        if args.optima_only:
            return 0
        if args.information_limit:
            return _information_limits(pool, args, seeds, optima)
        tasks = [{"method": m.name, "method_spec": dataclasses.asdict(m), "world": w,
                  "seed": s, "hours": h, "slots": args.slots, "traffic": args.traffic,
                  "setting": args.setting,
                  "arm_hours": list(args.arm_hours or arm_hours_for(h))}
                 for h in args.hours for w in args.worlds for s in seeds for m in methods]
        print(f"{len(tasks)} runs on {args.workers} workers ...", flush=True)
        runs = []
        futs = {pool.submit(run_one, t): t for t in tasks}
        for i, fut in enumerate(cf.as_completed(futs), 1):
            r = fut.result()
            runs.append(r)
            if "error" in r:
                print(f"[{i}/{len(tasks)}] {r['method']} {r['world']} seed {r['seed']}: "
                      f"ERROR {r['error']}", flush=True)
            else:
                print(f"[{i}/{len(tasks)}] {r['method']:16s} {r['world']:12s} {r['hours']:3d}h "
                      f"seed {r['seed']:2d}: gain {r['gain_pct']:6.3f}% viol "
                      f"{r['violation_pp']:.4f}pp first {r['first_feasible_hour']} "
                      f"wall {r['wall_s']:.1f}s cpu {r['cpu_s']:.1f}s", flush=True)
        _write_runs(args.out / f"quality-{tag}.partial.json", runs)
        yardsticks = {} if args.no_yardstick else fill_yardsticks(
            runs, optima, args.out / "yardsticks.json", information_limit, pool.submit)
    runs += expand_readouts(runs)
    attach_optima(runs, optima)
    attach_yardsticks(runs, yardsticks)
    runs.sort(key=lambda r: (r["world"], r["hours"], r["method"], r["seed"]))
    summary = summarize(runs)
    order = [m.name for m in methods]
    order += sorted({r["method"] for r in runs if "readout_of" in r})
    text = table(summary, order)
    print(text)
    print(calibration_table(calibration_rows(runs)))
    if args.per_seed is not None:
        print(per_seed(runs, args.per_seed))
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "argv": argv if argv is not None else sys.argv[1:], "seeds": seeds,
            "hours": args.hours, "slots": args.slots, "workers": args.workers,
            "traffic": args.traffic, "setting": args.setting,
            "methods": {m.name: dataclasses.asdict(m) for m in methods},
            "machine": _machine(), "hz_ray_sources": _sources(),
            "elapsed_s": time.perf_counter() - t_start}
    json_path = args.out / f"quality-{tag}.json"
    json_path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs,
                                     "optima": {k: v for k, v in optima.items()
                                                if k.split(":")[0] in args.worlds
                                                or k.rsplit(":", 1)[0] in args.worlds}},
                                    indent=1, default=str))
    png_path = args.out / f"quality-{tag}.png"
    plot(runs, png_path, order)
    errors = [r for r in runs if "error" in r]
    print(f"\nwrote {json_path} and {png_path}; {len(errors)} errors; "
          f"{time.perf_counter() - t_start:.0f} s")
    return 1 if errors else 0


def _write_runs(path: Path, runs: list[dict]) -> None:
    """Save the raw runs before scoring them (a scoring crash must not lose them)."""
    path.write_text(json.dumps({"runs": runs}, default=str))


def per_seed(runs: list[dict], methods: list[str] | None) -> str:
    """Per-seed rows: the diagnosis view of misses."""
    lines = ["\n| world | h | method | seed | gain % | % opt | violation pp | first lift h "
             "| best ran % opt | final arm (hours) | switches |", "|" + "---|" * 11]
    for r in runs:
        if "error" in r or (methods and r["method"] not in methods):
            continue
        hours = next((a[4] for a in r.get("arms", []) if a[0] == r.get("final_arm")), "-")
        frac = r.get("frac_opt")
        bro = r.get("best_ran_frac_opt")
        lines.append(
            f"| {r['world']} | {r['hours']} | {r['method']} | {r['seed']} | {r['gain_pct']:.3f} "
            f"| {'-' if frac is None else f'{100 * frac:.0f}%'} | {r['violation_pp']:.4f} "
            f"| {r['first_feasible_hour']} | {'-' if bro is None else f'{100 * bro:.0f}%'} "
            f"| {r.get('final_arm')} ({hours}) | {r['switches']} |")
    return "\n".join(lines)


def paired(spec_a: str, spec_b: str, out: Path) -> int:
    """Print paired differences A - B over the seeds two saved runs share, per scenario.

    Runs pair by seed within one scenario (world, hours, setting, traffic): a file of
    several worlds gives one block per world, never a difference across worlds.

    Args:
        spec_a: ``TAG:METHOD`` of ``<out>/quality-TAG.json``.
        spec_b: The same for the method subtracted.
        out: Folder of the JSON files.

    Returns:
        0, or 2 when no scenario has 2 shared seeds.
    """
    def load(spec: str) -> dict[tuple, dict[int, dict]]:
        tag, _, method = spec.partition(":")
        data = json.loads((out / f"quality-{tag}.json").read_text())
        grouped: dict[tuple, dict[int, dict]] = {}
        for r in data["runs"]:
            if r["method"] == method and "error" not in r and "readout_of" not in r:
                grouped.setdefault(scenario_of(r), {})[r["seed"]] = r
        return grouped

    a_all, b_all = load(spec_a), load(spec_b)
    printed = 0
    for scenario in sorted(set(a_all) & set(b_all), key=str):
        a, b = a_all[scenario], b_all[scenario]
        seeds = sorted(set(a) & set(b))
        if len(seeds) < 2:
            continue
        printed += 1
        world, hours, setting, traffic = scenario
        print(f"{world}, {hours} h, {setting} setting, {traffic:,} users:")
        for key, unit, better in (("gain_pct", "points", "ahead"),
                                  ("online_cost_pp", "pp", "lower")):
            diffs = [a[s][key] - b[s][key] for s in seeds]
            se = statistics.stdev(diffs) / math.sqrt(len(diffs))
            wins = sum(d > 0 for d in diffs) if better == "ahead" else sum(d < 0 for d in diffs)
            print(f"  {key}: {spec_a} - {spec_b} over {len(seeds)} paired seeds: "
                  f"{statistics.mean(diffs):+.3f} {unit} (s.e. {se:.3f}); "
                  f"A {better} on {wins} of {len(diffs)}")
        mean_a, mean_b = _mean_trace(a, seeds), _mean_trace(b, seeds)
        for (name, own), (other_name, other) in (((spec_a, mean_a), (spec_b, mean_b)),
                                                 ((spec_b, mean_b), (spec_a, mean_a))):
            final_hour = max(other)
            reach = next((h for h in sorted(own) if own[h] >= other[final_hour]), None)
            print(f"  seed-mean gain by hour: {name} reaches {other_name}'s final "
                  f"{other[final_hour]:.3f}% (hour {final_hour}) "
                  f"{'never' if reach is None else f'at hour {reach}'}")
    if not printed:
        print(f"no scenario with 2 or more shared seeds between {spec_a} and {spec_b}")
        return 2
    return 0


def scenario_of(run: dict) -> tuple:
    """``(world, hours, setting, traffic)`` of a run or summary row (older: default setting)."""
    return (run["world"], run["hours"], run.get("setting", "default"), run.get("traffic") or 0)


def print_arms(spec: str, seed: int, out: Path) -> int:
    """Print the arms of one saved run (``TAG:METHOD`` and seed): the lifecycle view."""
    tag, _, method = spec.partition(":")
    data = json.loads((out / f"quality-{tag}.json").read_text())
    run = next((r for r in data["runs"] if r["method"] == method and r["seed"] == seed
                and "error" not in r and "readout_of" not in r), None)
    if run is None:
        print(f"no run of {method} seed {seed} in {tag}")
        return 2
    print("| arm | launched h | stopped h | reason | hours of data | true gain % "
          "| true violation pp |\n|" + "---|" * 7)
    for arm_id, launched, stopped, reason, hours, gain, viol in run["arms"]:
        print(f"| {arm_id} | {launched} | {'-' if stopped is None else stopped} | "
              f"{reason or '-'} | {hours} | {gain:.3f} | {viol:.3f} |")
    return 0


def _mean_trace(runs: dict[int, dict], seeds: list[int]) -> dict[int, float]:
    """``{hour: gain % of the recommendation, mean over seeds}`` for the hours every seed has."""
    by_seed = [{t[0]: t[1] for t in runs[s]["trace"]} for s in seeds]
    hours = set.intersection(*(set(t) for t in by_seed))
    return {h: statistics.mean(t[h] for t in by_seed) for h in sorted(hours)}


def merge(args) -> int:
    """Tabulate saved runs (several files, e.g. baselines and hz-ray run apart).

    With ``--seed-list`` only those seeds are tabulated (e.g. to pair a 20-seed run with a
    10-seed one).
    """
    runs, optima, order = [], {}, []
    for path in args.merge:
        data = json.loads(Path(path).read_text())
        runs += [r for r in data["runs"] if "readout_of" not in r
                 and (args.seed_list is None or r["seed"] in args.seed_list)]
        optima.update(data.get("optima", {}))
        order += [m for m in data["meta"]["methods"] if m not in order]
    optima.update(load_optima(args.optima or args.out / "optima.json"))
    if not args.no_yardstick:
        attach_yardsticks(runs, fill_yardsticks(runs, optima, args.out / "yardsticks.json",
                                                information_limit))
    runs += expand_readouts(runs)
    attach_optima(runs, optima)
    runs.sort(key=lambda r: (r["world"], r["hours"], r["method"], r["seed"]))
    order += sorted({r["method"] for r in runs if "readout_of" in r})
    summary = summarize(runs)
    print(table(summary, order))
    print(calibration_table(calibration_rows(runs)))
    if args.per_seed is not None:
        print(per_seed(runs, args.per_seed))
    if args.tag:
        json_path = args.out / f"quality-{args.tag}.json"
        json_path.write_text(json.dumps({"meta": {"merged": [str(p) for p in args.merge],
                                                  "methods": {m: {} for m in order}},
                                         "summary": summary, "runs": runs, "optima": optima},
                                        indent=1, default=str))
        plot(runs, args.out / f"quality-{args.tag}.png", order)
        print(f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
