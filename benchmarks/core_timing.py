"""Timing of the GP core: hyperparameter refits and one Thompson selection.

Measures, with the median over ``--repeats`` runs:

- GP refit: ``Surrogate.update(..., force_refit=True)`` for ``--metrics`` metrics in ``--dim``
  dimensions at each of ``--fit-sizes`` training-set sizes;
- one Thompson selection, ``PosteriorSnapshot.sample`` + ``pick_counts``, with ``--draws``
  draws over each of ``--candidates`` candidate-set sizes, for exact and pathwise draws (the
  smaller sizes locate the crossover behind ``EXACT_SAMPLE_LIMIT``).

Usage::

    .venv/bin/python benchmarks/core_timing.py [--repeats 3] [--out benchmarks/out/core_timing.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from hz_ray.surrogate import DTYPE, EXACT_SAMPLE_LIMIT, PATHWISE_NUM_FEATURES, Surrogate
from hz_ray.thompson import pick_counts


def synthetic_data(n: int, dim: int, metrics: int, seed: int):
    """Smooth lift surfaces of a few % with heteroskedastic noise, in the unit cube."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, dim, generator=gen, dtype=DTYPE)
    freq = 1.0 + 2.0 * torch.rand(metrics, dim, generator=gen, dtype=DTYPE)
    phase = 2.0 * math.pi * torch.rand(metrics, dim, generator=gen, dtype=DTYPE)
    f = 0.02 * torch.sin(X.unsqueeze(1) * freq + phase).mean(-1)  # n x m
    sd = 0.002 + 0.006 * torch.rand(n, metrics, generator=gen, dtype=DTYPE)
    Y = f + sd * torch.randn(n, metrics, generator=gen, dtype=DTYPE)
    return X, Y, sd**2


def shared_loadings(Yvar: torch.Tensor, hours: int, window: int, seed: int) -> torch.Tensor:
    """``m x n x hours`` loadings: each point ran ``window`` consecutive hours of a ``hours``-hour
    job, and half of its variance is the control error it shares with the arms of those hours."""
    gen = torch.Generator().manual_seed(seed)
    n, m = Yvar.shape
    start = torch.randint(0, hours - window + 1, (n,), generator=gen)
    A = torch.zeros(n, hours, dtype=DTYPE)
    for i in range(n):
        A[i, int(start[i]):int(start[i]) + window] = 1.0 / window
    # sum_t (a_t sqrt(c))^2 = c / window = Yvar / 2  =>  c = window * Yvar / 2
    scale = (window * Yvar / 2).sqrt()  # n x m
    return (A.unsqueeze(0) * scale.T.unsqueeze(-1)).contiguous()


CPU_TIMES: list[float] = []  # process CPU seconds of the last median_time call's repeats


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn(r)`` over ``repeats``; CPU seconds go to CPU_TIMES."""
    times = []
    CPU_TIMES.clear()
    for r in range(repeats):
        cpu = time.process_time()
        start = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - start)
        CPU_TIMES.append(time.process_time() - cpu)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--metrics", type=int, default=4)
    parser.add_argument("--fit-sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--train-points", type=int, default=100,
                        help="training points of the posterior used for selection timing")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--candidates", type=int, nargs="+",
                        default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--pathwise-features", type=int, nargs="+",
                        default=[PATHWISE_NUM_FEATURES],
                        help="random Fourier feature counts to time for pathwise draws")
    parser.add_argument("--shared-noise", action="store_true",
                        help="refit with shared-control noise (12-hour arms in a 72-hour job, "
                             "half of each variance shared), as the optimizer builds it")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/core_timing.json"))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    metric_names = [f"m{j}" for j in range(args.metrics)]
    rows = []

    for n in args.fit_sizes:
        X, Y, Yvar = synthetic_data(n, args.dim, args.metrics, seed=n)

        loads = shared_loadings(Yvar, 72, 12, seed=n) if args.shared_noise else None

        def refit(r, X=X, Y=Y, Yvar=Yvar, loads=loads):
            Surrogate(metric_names, args.dim).update(X, Y, Yvar, force_refit=True,
                                                      loadings=loads)

        med, times = median_time(refit, args.repeats)
        rows.append({"task": "gp_refit", "n_train": n, "metrics": args.metrics, "dim": args.dim,
                     "shared_noise": args.shared_noise,
                     "median_s": med, "times_s": times,
                     "median_cpu_s": statistics.median(CPU_TIMES)})
        print(f"gp_refit  n_train={n:5d}  {args.metrics} metrics, d={args.dim}, "
              f"shared noise {args.shared_noise}: "
              f"median {med:8.3f} s (cpu {statistics.median(CPU_TIMES):.3f} s)", flush=True)

    X, Y, Yvar = synthetic_data(args.train_points, args.dim, args.metrics, seed=1)
    snapshot = Surrogate(metric_names, args.dim).update(X, Y, Yvar)
    w = torch.zeros(args.metrics, dtype=DTYPE)
    w[0] = 1.0
    G = torch.eye(args.metrics, dtype=DTYPE)[1:]
    b = torch.full((args.metrics - 1,), -0.01, dtype=DTYPE)
    for N in args.candidates:
        cands = torch.rand(N, args.dim, generator=torch.Generator().manual_seed(N), dtype=DTYPE)
        variants = [("exact", None)] + [("pathwise", f) for f in args.pathwise_features]
        for method, features in variants:
            snap = snapshot if features is None else dataclasses.replace(
                snapshot, num_features=features)
            split = {"sample": [], "pick": []}

            def select(r, cands=cands, method=method, split=split, snap=snap):
                t0 = time.perf_counter()
                draws = snap.sample(cands, args.draws, seed=r, method=method)
                t1 = time.perf_counter()
                pick_counts(draws, w, G, b)
                split["sample"].append(t1 - t0)
                split["pick"].append(time.perf_counter() - t1)

            med, times = median_time(select, args.repeats)
            label = method if features is None else f"{method}/F={features}"
            rows.append({"task": "thompson_select", "method": label, "candidates": N,
                         "draws": args.draws, "n_train": args.train_points,
                         "metrics": args.metrics, "dim": args.dim, "median_s": med,
                         "times_s": times, "median_cpu_s": statistics.median(CPU_TIMES),
                         "median_sample_s": statistics.median(split["sample"]),
                         "median_pick_s": statistics.median(split["pick"])})
            print(f"select    N={N:5d}  K={args.draws}  {label:16s}: median {med:8.3f} s "
                  f"(cpu {statistics.median(CPU_TIMES):.3f}, "
                  f"sample {statistics.median(split['sample']):.3f}, "
                  f"pick {statistics.median(split['pick']):.3f})", flush=True)

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "exact_sample_limit": EXACT_SAMPLE_LIMIT,
        "pathwise_num_features": PATHWISE_NUM_FEATURES,
        "repeats": args.repeats,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")

    print()
    print(f"{'task':16s} {'method':16s} {'n_train':>7s} {'N':>6s} {'K':>5s} {'median s':>9s} "
          f"{'cpu s':>8s}")
    for row in rows:
        print(f"{row['task']:16s} {row.get('method', '-'):16s} {row['n_train']:7d} "
              f"{row.get('candidates', '-')!s:>6s} {row.get('draws', '-')!s:>5s} "
              f"{row['median_s']:9.3f} {row['median_cpu_s']:8.3f}")
    print(f"\n{env['torch_threads']} torch threads, {env['cpu_count']} CPUs; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
