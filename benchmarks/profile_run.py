"""Where one quality-benchmark run spends its CPU time: cProfile of a single run.

Runs one (method, world, seed) exactly as ``benchmarks/quality.py`` does, in this process,
and prints the run's CPU seconds and the hz-ray functions that take the most cumulative time.

Usage::

    .venv/bin/python benchmarks/profile_run.py --world value_model --seed 3 --hours 72
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The driver's steps and the optimiser's parts, reported when they appear in the profile.
FUNCTIONS = (
    ("local.py", "step"), ("posterior.py", "refresh_now"), ("posterior.py", "_ensure_plan"),
    ("posterior.py", "report"), ("posterior.py", "sample"), ("posterior.py", "checkpoint_now"),
    ("posterior.py", "hour_progress"), ("slot.py", "decide"), ("slot.py", "poll"),
    ("commit_log.py", "wait"), ("memory.py", "release_memory"),
    ("optimizer.py", "plan"), ("optimizer.py", "refresh"), ("optimizer.py", "contender_shares"),
    ("optimizer.py", "_certifiable_optimum"), ("optimizer.py", "recommend"),
    ("thompson.py", "propose_candidates"), ("thompson.py", "refine_on_draws"),
    ("thompson.py", "local_search"), ("surrogate.py", "update"), ("surrogate.py", "sample"),
    ("surrogate.py", "_fit_in_place"),
)


def main(argv: list[str] | None = None) -> int:
    from benchmarks import quality as q

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="hz-ray")
    parser.add_argument("--world", default="value_model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=int, default=72)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--traffic", type=int, default=500_000)
    parser.add_argument("--top", type=int, default=0, help="also print the top N of cProfile")
    args = parser.parse_args(argv)
    task = {"method": args.method, "method_spec": dataclasses.asdict(q.METHODS[args.method]),
            "world": args.world, "seed": args.seed, "hours": args.hours, "slots": args.slots,
            "arm_hours": q.arm_hours_for(args.hours), "traffic": args.traffic}
    profile = cProfile.Profile()
    profile.enable()
    result = q._run_one(task)
    profile.disable()
    print(f"{args.method} {args.world} seed {args.seed}, {args.hours} h: gain "
          f"{result['gain_pct']:.3f}%, {result['n_arms']} arms, run CPU {result['cpu_s']:.1f} s "
          f"(wall {result['wall_s']:.1f} s, profiled)")
    stats = pstats.Stats(profile)
    print("| function | calls | cumulative s |\n|---|---:|---:|")
    for (file, _line, name), (_, calls, _, cumulative, _) in sorted(
            stats.stats.items(), key=lambda kv: -kv[1][3]):
        if "hz_ray" in file and (Path(file).name, name) in FUNCTIONS and cumulative >= 0.05:
            print(f"| {Path(file).name}:{name} | {calls} | {cumulative:.1f} |")
    if args.top:
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
