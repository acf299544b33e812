"""Calibration of hz-ray's posterior on the value-model world: z-scores of the truth.

For every arm that ran at least ``recommend_min_hours`` hours, at the end of a 72-hour job,
``z = (true delta - posterior mean) / posterior sd`` per metric. A calibrated posterior has
z with mean ~0 and sd ~1 over arms and seeds; the share of arms whose true deltas meet every
guardrail among those the posterior certifies (P(feasible) >= ``feasibility_threshold``,
0.95) should be >= that threshold.

Usage::

    .venv/bin/python benchmarks/calibration.py --seeds 0 1 2 3 --variants shared independent
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = {"shared": {}, "independent": {"optimizer": {"shared_control_noise": False}}}


def run(seed: int, variant: str, traffic: int, hours: int) -> dict:
    from benchmarks import quality as q

    q._single_thread()
    from hz_ray.local import run_local

    method = q.register_variant(f"calib-{variant}", config=VARIANTS[variant])
    world, config, clock, backend = q.make_run(method, "value_model", seed, 8,
                                               q.arm_hours_for(hours), traffic)
    problem = world.default_problem
    holder = {}

    def factory(cfg):
        from hz_ray.optimizer import Optimizer

        holder["opt"] = Optimizer(cfg)
        return holder["opt"]

    run_local(config, backend, clock=clock, hours=hours, seed=seed,
              run_dir=tempfile.mkdtemp(prefix="hzcal-"), optimizer_factory=factory)
    opt = holder["opt"]
    need = config.optimizer.recommend_min_hours
    ids = [a for a in opt.ledger.arms if opt.ledger.hours_observed(a) >= need]
    assessed = {a.arm_id: a for a in opt.assess(ids)}
    X = opt.space.encode_many([opt.ledger.arms[a].params for a in ids])
    mean, var = opt.snapshot().mean_and_var(X)
    z, certified = [], []
    for i, arm_id in enumerate(ids):
        truth = world.true_deltas(opt.ledger.arms[arm_id].params)
        z.append([(truth[m] - float(mean[i, j])) / float(var[i, j]) ** 0.5
                  for j, m in enumerate(opt.metrics)])
        if assessed[arm_id].p_feasible >= config.optimizer.feasibility_threshold:
            certified.append(problem.violation(truth) <= q.FEASIBLE_TOL)
    return {"seed": seed, "variant": variant, "metrics": list(opt.metrics), "z": z,
            "certified_feasible": certified}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--traffic", type=int, default=500_000)
    parser.add_argument("--hours", type=int, default=72)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "out" / "calibration.json")
    args = parser.parse_args(argv)
    import concurrent.futures as cf
    import multiprocessing

    tasks = [(s, v) for v in args.variants for s in args.seeds]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        results = list(pool.map(run, *zip(*tasks, strict=True),
                                [args.traffic] * len(tasks), [args.hours] * len(tasks)))
    print("| variant | arms | metric | z mean | z sd | share \\|z\\| < 1.96 |")
    print("|---|---:|---|---:|---:|---:|")
    for variant in args.variants:
        rows = [r for r in results if r["variant"] == variant]
        Z = np.array([z for r in rows for z in r["z"]])
        for j, m in enumerate(rows[0]["metrics"]):
            print(f"| {variant} | {len(Z)} | {m} | {Z[:, j].mean():+.2f} | {Z[:, j].std():.2f} "
                  f"| {np.mean(np.abs(Z[:, j]) < 1.96):.2f} |")
    for variant in args.variants:
        cert = [c for r in results if r["variant"] == variant for c in r["certified_feasible"]]
        print(f"{variant}: arms with P(feasible) >= 0.95: {len(cert)}, truly feasible: "
              f"{sum(cert)} ({np.mean(cert) if cert else float('nan'):.3f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"argv": sys.argv[1:], "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
