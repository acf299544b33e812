"""Why a soak recommended what it did at a job hour: the readout replayed from its log.

Rebuilds the posterior from a soak run folder's event log up to the readout of
``--hour`` (every event up to that readout's ``seq``; the GP hyperparameters
refitted from scratch, not the live ones), then prints the readout and, for the
arms with the largest posterior gain and for any arm named, the posterior gain,
P(feasible), the true gain on the soak's value-model world, the posterior
mean and sd of every metric, the arm's own data (mean and standard error), and
its true delta. Read-only: the folder is not written.

    .venv/bin/python benchmarks/soak_readout.py ROOT/seed0-faults --hour 56
    .venv/bin/python benchmarks/soak_readout.py ROOT/seed0-clean --hour 167 --arm s53-0015
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.soak_report import gain, soak_world  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a soak run folder (holding run/)")
    p.add_argument("--hour", type=int, required=True, help="the job hour of the readout")
    p.add_argument("--top", type=int, default=6, help="arms with the largest gain to show")
    p.add_argument("--arm", action="append", default=[],
                   help="also show this arm (its id or the end of it, e.g. s53-0015)")
    args = p.parse_args()

    import torch

    from hz_ray.optimizer import Optimizer
    from hz_ray.readout.folder import read_folder
    from hz_ray.torch_threads import torch_threads

    snap = read_folder(args.folder / "run")
    table = snap.table
    at_hour = table.filter(pc.and_(pc.equal(table["kind"], "recommendation"),
                                   pc.equal(table["hour"], args.hour)))
    if at_hour.num_rows == 0:
        raise SystemExit(f"no readout of hour {args.hour} in {args.folder}")
    cut = max(at_hour["seq"].to_pylist())
    logged = at_hour.to_pylist()[-1]
    snap = dataclasses.replace(snap, table=table.filter(pc.less_equal(table["seq"], cut)))
    with torch_threads(1):
        optimizer = Optimizer(snap.config)
        snap.replay_into(optimizer.ledger)
        optimizer.refresh()
        rec = optimizer.recommend()
        arms = optimizer.ledger.arms
        need = snap.config.optimizer.recommend_min_hours
        ids = [a for a in arms if optimizer.ledger.hours_observed(a) >= need]
        X = optimizer.space.encode_many([arms[a].params for a in ids])
        mean, var = optimizer.snapshot().mean_and_var(X)
        gains, _ = optimizer.outcomes.gain_posterior(mean, var)
        p_feas = optimizer.outcomes.p_feasible(mean, var)
    threshold = snap.config.optimizer.feasibility_threshold
    print(f"hour {args.hour}: {len(arms)} arms, {len(ids)} with {need}+ hours; logged readout "
          f"{logged['arm_id']}; replayed readout {rec.arm_id} (true gain "
          f"{gain(dict(rec.params)) if not rec.is_control else 0.0:.3f}%, posterior gain "
          f"{100 * rec.objective_mean:.3f}%, P(feasible) {rec.p_feasible:.3f})")
    print(f"arms with P(feasible) >= {threshold}: {int((p_feas >= threshold).sum())}; "
          f"largest P(feasible): {float(p_feas.max()):.3f}")
    print(f"metrics: {', '.join(snap.config.metrics)}; guardrails: "
          + ", ".join(f"{c.metric} >= {100 * c.min_delta:+.2f}%" for c in snap.config.constraints))
    shown = torch.argsort(gains, descending=True)[:args.top].tolist()
    shown += [i for name in args.arm for i, a in enumerate(ids) if a.endswith(name)]
    world = soak_world()
    print("| arm | posterior gain % | P(feasible) | true gain % "
          "| posterior mean % (sd) by metric | its own data % (s.e.) | true delta % |")
    print("|---|---|---|---|---|---|---|")
    for i in shown:
        cells = ", ".join(f"{100 * float(m):+.2f} ({100 * float(v) ** 0.5:.2f})"
                          for m, v in zip(mean[i], var[i], strict=True))
        truth = world.true_deltas(dict(arms[ids[i]].params))
        true_cells = ", ".join(f"{100 * truth[m]:+.2f}" for m in snap.config.metrics)
        own = optimizer.ledger.estimates(ids[i])
        own_cells = ", ".join(f"{100 * own[m].mean:+.2f} ({100 * own[m].sem:.2f})" if m in own
                              else "-" for m in snap.config.metrics)
        print(f"| {ids[i]} | {100 * float(gains[i]):.3f} | {float(p_feas[i]):.3f} | "
              f"{gain(dict(arms[ids[i]].params)):.3f} | {cells} | {own_cells} | {true_cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
