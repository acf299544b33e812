"""Time one GP hyperparameter fit with 1 and with 2 torch intra-op threads.

Run: python benchmarks/fit_threads.py [--points 100] [--dim 8] [--repeats 3]
Each setting runs in its own subprocess (torch's thread pool is per process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import sys, time, torch
threads, points, dim, repeats = map(int, sys.argv[1:5])
torch.set_num_threads(threads)
from hz_ray.surrogate import fit_metric_gp
g = torch.Generator().manual_seed(0)
X = torch.rand(points, dim, generator=g, dtype=torch.float64)
y = 0.02 * torch.sin(3 * X).sum(-1) + 0.002 * torch.randn(points, generator=g, dtype=torch.float64)
yvar = torch.full((points,), 4e-6, dtype=torch.float64)
fit_metric_gp(X, y, yvar)
times = []
for _ in range(repeats):
    t = time.perf_counter(); fit_metric_gp(X, y, yvar); times.append(time.perf_counter() - t)
print(sorted(times)[len(times) // 2])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = {}
    for threads in (1, 2):
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.points),
                              str(args.dim), str(args.repeats)],
                             check=True, capture_output=True, text=True).stdout.split()
        rows[threads] = float(out[-1])
    load = os.getloadavg()[0]
    print(f"one {args.dim}-d GP fit on {args.points} points, median of {args.repeats}:")
    for threads, seconds in rows.items():
        print(f"  {threads} thread(s): {seconds:.3f} s")
    print(f"  ratio 2/1: {rows[2] / rows[1]:.1f}x   (1-min load average {load:.1f})")
    print(json.dumps({"points": args.points, "dim": args.dim, "seconds": rows, "load": load}))


if __name__ == "__main__":
    main()
