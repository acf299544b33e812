"""Stopping tolerance of the subset hyperparameter fit (issue 13): time against fit quality.

Run::

    .venv/bin/python benchmarks/fit_tolerance.py --arms 5000 --ftol 1e-6,1e-5

Builds the data of ``benchmarks/cost_curve.py`` at ``--arms`` observed arms (a
:class:`~hz_ray.service.posterior.PosteriorService` in process, 6 hours x 4 metrics per arm,
the world of ``benchmarks/system.py``), takes the training subset a refit uses
(:func:`hz_ray.surrogate.fit_rows`) and fits each metric's GP from the default start, one torch
thread, once with scipy's default L-BFGS-B tolerance and once per ``--ftol``. Per metric and
tolerance it reports:

``seconds``      wall time of the fit
``evaluations``  loss-and-gradient evaluations
``loss_gap_nats`` how much lower the log marginal likelihood (MAP, with the priors) of the
                 subset is than at the default's optimum, in nats over the whole subset
``mean_shift_sd`` the largest change of the posterior mean over all training points, in
                 units of the default fit's posterior sd there (conditioned on every point)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]



def training_data(arms: int) -> tuple[Any, Any, Any]:
    """``(X, Y, Yvar)`` of a service with ``arms`` observed arms, as cost_curve builds it."""
    from cost_curve import CANDIDATES, MIN_BUCKET, populate
    from system import bench_config

    from hz_ray.service.posterior import PosteriorService

    config = bench_config(f"ftol-{arms}", slots=arms + 8,
                          bucket=max(CANDIDATES - arms, MIN_BUCKET))
    with tempfile.TemporaryDirectory() as tmp:
        service = PosteriorService(config, Path(tmp) / "job", job_id=f"ftol-{arms}",
                                   background=False, durable_reports=False)
        populate(service, arms)
        with service._gp_lock:
            service._drain()
            view = service._rebuilder.reader.view()
        service.close()
    return view.X, view.Y, view.Yvar


def fit_one(X: Any, y: Any, yvar: Any, ftol: float | None) -> tuple[Any, float, int]:
    """Fit one metric's GP from the default start; returns ``(model, seconds, evaluations)``."""
    import botorch.optim.core as core

    from hz_ray import surrogate

    real = core.minimize_with_timeout
    count = [0]

    def counted(fun: Any, x0: Any, *args: Any, **kwargs: Any) -> Any:
        def fun_counted(x: Any, *a: Any) -> Any:
            count[0] += 1
            return fun(x, *a)
        return real(fun_counted, x0, *args, **kwargs)

    core.minimize_with_timeout = counted
    try:
        started = time.perf_counter()
        model, _ = surrogate._fit_metric_gp(X, y, yvar, None, surrogate.DEFAULT_PRIOR_SD,
                                            None, None, ftol)
        seconds = time.perf_counter() - started
    finally:
        core.minimize_with_timeout = real
    return model, seconds, count[0]


def map_loss_nats(model: Any) -> float:
    """Negative log marginal likelihood plus priors of the model's training data, in nats."""
    import torch
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from hz_ray import surrogate

    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    with surrogate._exact_algebra(), torch.no_grad():
        per_point = -mll(model(*model.train_inputs), model.train_targets).item()
    model.eval()
    return per_point * int(model.train_targets.shape[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", type=int, default=5000)
    parser.add_argument("--ftol", default="1e-6,1e-5", help="comma-separated tolerances")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    tolerances = [float(t) for t in args.ftol.split(",") if t]

    from hz_ray import surrogate
    from hz_ray.surrogate import PosteriorSnapshot
    from hz_ray.torch_threads import torch_threads

    X, Y, Yvar = training_data(args.arms)
    rows = surrogate.fit_rows(X.shape[0])
    Xf, Yf, Vf = (X, Y, Yvar) if rows is None else (X[rows], Y[rows], Yvar[rows])
    settings: list[float | None] = [None, *tolerances]
    fits: dict[float | None, list[tuple[Any, float, int]]] = {}
    with torch_threads(1):
        for ftol in settings:
            fits[ftol] = [fit_one(Xf, Yf[:, j], Vf[:, j], ftol) for j in range(Y.shape[1])]
            print(f"ftol {ftol}: {[round(f[1], 1) for f in fits[ftol]]} s", flush=True)
        snapshots = {ftol: PosteriorSnapshot.build(
            X, Y, Yvar, [f"m{j}" for j in range(Y.shape[1])],
            [surrogate._extract_hyperparameters(model) for model, _, _ in fits[ftol]])
            for ftol in settings}
        mean0, var0 = snapshots[None].mean_and_var(X)
        results: list[dict[str, Any]] = []
        for j in range(Y.shape[1]):
            base_model, base_s, base_n = fits[None][j]
            base_loss = map_loss_nats(base_model)
            row: dict[str, Any] = {"metric": j,
                                   "default": {"seconds": base_s, "evaluations": base_n}}
            for ftol in tolerances:
                model, seconds, evaluations = fits[ftol][j]
                mean1, _ = snapshots[ftol].mean_and_var(X)
                shift = float(((mean1[:, j] - mean0[:, j]).abs()
                               / var0[:, j].clamp_min(1e-30).sqrt()).max())
                row[f"{ftol:g}"] = {"seconds": seconds, "evaluations": evaluations,
                                    "loss_gap_nats": map_loss_nats(model) - base_loss,
                                    "mean_shift_sd": shift}
            results.append(row)
            print(json.dumps(row), flush=True)
    total = {"default": sum(r["default"]["seconds"] for r in results)}
    for ftol in tolerances:
        total[f"{ftol:g}"] = sum(r[f"{ftol:g}"]["seconds"] for r in results)
    summary = {"arms": args.arms, "train_points": int(X.shape[0]),
               "fit_points": int(Xf.shape[0]), "total_seconds": total,
               "machine": f"{platform.machine()}, {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(summary), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "metrics": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
