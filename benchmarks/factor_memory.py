"""What the exact posterior's linear algebra costs in memory, piece by piece (issue 13).

Run::

    .venv/bin/python benchmarks/factor_memory.py --n 5000 --rhs 100

Each figure is the growth of this process's peak RSS (VmHWM, reset through
``/proc/self/clear_refs`` before each step) over its RSS when the step starts, in MiB, on
one torch thread:

- a solve with a lower Cholesky factor ``L`` (``n x n``) and ``--rhs`` right-hand sides, by
  ``torch.cholesky_solve`` and by two ``torch.linalg.solve_triangular`` calls, the way
  :meth:`hz_ray.exact_posterior.MetricPosterior.solve` does it;
- the training covariance of a real BoTorch model (8 weights), built by
  :func:`hz_ray.exact_posterior.kernel` in slices of 128 and 256 rows, with its wall time;
- four factors stored one per matrix against two packed pairs
  (:meth:`hz_ray.exact_posterior.LowerFactor.pack`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import hz_ray.exact_posterior as exact  # noqa: E402
from hz_ray.service.memory import peak_rss_bytes, rss_bytes  # noqa: E402

MIB = 2**20


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def peak_growth(step, *args) -> tuple[float, object]:
    """``(MiB the peak RSS rose over the RSS at the start, step(*args))``."""
    _reset_peak()
    start = rss_bytes()
    result = step(*args)
    return (peak_rss_bytes() - start) / MIB, result


def _factor(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    K = A @ A.T
    del A
    K.div_(n).diagonal().add_(0.1)
    return torch.linalg.cholesky_ex(K, out=(K, torch.empty((), dtype=torch.int32)))[0]


def _model(n: int):
    from hz_ray.surrogate import PosteriorSnapshot, prior_hyperparameters

    gen = torch.Generator().manual_seed(1)
    X = torch.rand(n, 8, generator=gen, dtype=torch.float64)
    Y = 0.01 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    snap = PosteriorSnapshot.build(X, Y, torch.full_like(Y, 1e-4), ("m",),
                                   [prior_hyperparameters(8, 0.05)])
    return snap.models[0]


def _two_solves(factor: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    inner = torch.linalg.solve_triangular(factor, rhs, upper=False)
    return torch.linalg.solve_triangular(factor.mT, inner, upper=True)


def _unpacked(n: int) -> list[torch.Tensor]:
    return [_factor(n, seed) for seed in range(4)]


def _packed(n: int) -> list:
    pairs = []
    for seed in (0, 2):
        first, second = _factor(n, seed), _factor(n, seed + 1)
        pairs.append(exact.LowerFactor.pack(first, second))
        del second
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rhs", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.n
    out: dict[str, object] = {"n": n, "rhs": args.rhs, "matrix_mib": n * n * 8 / MIB}

    factor = _factor(n, 0)
    rhs = torch.randn(n, args.rhs, dtype=torch.float64)
    out["cholesky_solve_mib"], a = peak_growth(torch.cholesky_solve, rhs, factor)
    out["two_triangular_solves_mib"], b = peak_growth(_two_solves, factor, rhs)
    out["solves_agree"] = bool(torch.allclose(a, b, rtol=1e-8, atol=1e-10))
    del a, b, rhs, factor

    model = _model(n)
    X = model.train_inputs[0]
    for rows in (128, 256):
        exact.KERNEL_CHUNK = rows
        started = time.perf_counter()
        mib, K = peak_growth(exact.kernel, model, X, X)
        out[f"kernel_{rows}_rows"] = {"temporaries_mib": mib - n * n * 8 / MIB,
                                      "seconds": time.perf_counter() - started}
        del K
    exact.KERNEL_CHUNK = 256

    out["four_factors_unpacked_mib"], kept = peak_growth(_unpacked, n)
    del kept
    out["four_factors_packed_mib"], kept = peak_growth(_packed, n)
    del kept
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
