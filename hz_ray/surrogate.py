r"""One Gaussian process per metric delta, with a refit policy and immutable snapshots.

The tuner models every metric delta :math:`\Delta X_j(\theta)` (a relative lift against the
control arm, e.g. ``0.01`` for +1%) as an independent GP over the unit cube ``[0, 1]^d`` in which
the optimizer encodes the parameters. Each arm contributes one training point: its aggregated
delta and the known variance of that aggregate (``Yvar``), which differs from arm to arm
(heteroskedastic), so every GP is a BoTorch :class:`~botorch.models.SingleTaskGP` with fixed
per-point noise (``train_Yvar``).

Three layers:

- :func:`fit_metric_gp` builds one GP, either fitting its hyperparameters by marginal likelihood
  or loading given ones (cheap conditioning, no optimisation).
- :class:`PosteriorSnapshot` is an immutable view of the posterior of all metrics at one moment:
  posterior means and variances, joint Thompson draws (exact or pathwise), and conditioning on
  extra (fantasy) observations.
- :class:`Surrogate` holds the per-metric hyperparameters between rounds, decides by a
  :class:`RefitPolicy` when to refit them, and serialises to a JSON-safe dict.

All tensors are ``torch.float64``. Nothing here changes global torch settings or consumes the
global random number generator (seeded draws use their own ``torch.Generator`` or run inside
``torch.random.fork_rng``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any, Literal

import gpytorch
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from botorch.sampling.pathwise.features import gen_kernel_features
from gpytorch.kernels import ScaleKernel
from gpytorch.likelihoods.noise_models import FixedGaussianNoise
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import LogNormalPrior
from linear_operator.operators import DenseLinearOperator, ZeroLinearOperator
from torch import Tensor

from hz_ray.errors import ConfigError, InputDataError, StateError, field_error
from hz_ray.exact_posterior import KERNEL_CHUNK, MetricPosterior, kernel, robust_cholesky

__all__ = [
    "DEFAULT_PRIOR_SD",
    "DTYPE",
    "EXACT_SAMPLE_LIMIT",
    "FIT_POINTS_LIMIT",
    "MEAN_VAR_CHUNK",
    "PATHWISE_NUM_FEATURES",
    "PosteriorPaths",
    "SCHEMA_VERSION",
    "PosteriorSnapshot",
    "RefitPolicy",
    "Surrogate",
    "check_loadings",
    "fit_metric_gp",
    "fit_rows",
    "prior_hyperparameters",
]

_LOG = logging.getLogger(__name__)

DTYPE = torch.float64
"""The dtype of all GP math."""

DEFAULT_PRIOR_SD = 0.02
"""Prior standard deviation of a metric delta before any data (a relative lift of 2%)."""

EXACT_SAMPLE_LIMIT = 1024
"""Largest number of points at which :meth:`PosteriorSnapshot.sample` draws exactly.

Chosen by measurement (``benchmarks/core_timing.py``: 4 metrics, d = 8, 100 training points,
K = 1000 draws, sample + pick, 2 CPU cores): exact draws were 3x faster than pathwise ones at
N = 256 and 1.7x at 512, on a par at 1024 (within 20%, wall and single-thread CPU time alike),
and 1.5-2.7x / 6-8x slower at 2048 / 4096, where the ``O(N^3)`` factorisation and the
``O(K N^2)`` product overtake the ``O(K N F)`` cost of paths. At the tie, exact wins because
pathwise covariances carry the Fourier-feature error (see ``PosteriorSnapshot.sample``).
"""

FIT_POINTS_LIMIT = 1000
"""Most training points a hyperparameter fit uses; above it a random subset (see :func:`fit_rows`).

Below the limit every fit is exactly what it was before the limit existed (all points, default
start); the posterior always conditions on every point.
"""

SUBSET_FIT_FTOL = 1e-6
"""L-BFGS-B ``ftol`` of a hyperparameter fit on a subset (above :data:`FIT_POINTS_LIMIT`).

The fit stops once an iteration lowers the loss by less than this; the loss is GPyTorch's
negative log marginal likelihood per training point, so on the 1000-point subset that is
0.001 nats in all. Fits at or below the limit keep scipy's default (``2.2e-9``). Measured at
5000 observed arms of ``benchmarks/cost_curve.py``'s world (``benchmarks/fit_tolerance.py``,
4 metrics, 1 thread): 82 s at the default, 42 s at ``1e-6``, 26 s at ``1e-5``. At ``1e-6``
each fit ended within 0.1 nats (of the 1000-point log likelihood) of the default's optimum
and moved the posterior mean at every training point by at most 0.06 posterior sd; ``1e-5``
moved it by up to 0.49 sd.
"""

MEAN_VAR_CHUNK = 512
"""Points per variance chunk of :meth:`PosteriorSnapshot.mean_and_var` (an ``n x 512``
cross-covariance and its triangular solve at a time)."""

PATHWISE_NUM_FEATURES = 1024
"""Random Fourier features of the prior in pathwise (Matheron) draws (BoTorch's default)."""

SCHEMA_VERSION = 1
"""Version of the layout written by :meth:`Surrogate.state_dict`."""

# A scale estimate counts the prior scale as this many pseudo-observations (see
# _standardization_stats): it decides the scale at n = 1 and tempers it at n = 2.
_SCALE_PSEUDO_POINTS = 2.0
# Known noise variances are floored at this fraction of scale**2 (noise sd >= 0.1% of the
# outcome scale), so that noise-free duplicates keep the kernel matrix positive definite.
_MIN_NOISE_REL = 1e-6
# The "no data" snapshot is the GP conditioned on one pseudo-observation at zero whose noise
# variance is this many times the prior variance: its posterior is the prior to 1e-12.
_PSEUDO_NOISE_REL = 1e12
# Fixed seed of the random restarts inside fit_gpytorch_mll (they sample from the priors).
_FIT_SEED = 0
# GPyTorch's max_cholesky_size while hz-ray computes: larger than any training set.
_CHOLESKY_ALWAYS = 10**9
# Up to this many training points a pathwise draw's noise comes from a Cholesky factor of the
# dense noise covariance (as before the exact_posterior module); above, from its low-rank form.
_DENSE_NOISE_LIMIT = 1000
# Keys of the outcome-transform state that belong to the hyperparameters.
_TRANSFORM_KEYS = ("outcome_transform.means", "outcome_transform.stdvs",
                   "outcome_transform._stdvs_sq")

Hyperparameters = dict[str, Tensor]
"""Hyperparameters of one metric's GP: raw parameter tensors keyed by state-dict name, plus the
outcome standardisation (``outcome_transform.means`` / ``stdvs`` / ``_stdvs_sq``)."""


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _as_tensor(name: str, value: Any, ndim: int) -> Tensor:
    try:
        t = torch.as_tensor(value, dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise field_error(InputDataError, name, type(value).__name__,
                          "a real-valued tensor", str(exc)) from exc
    if t.dim() != ndim:
        raise field_error(InputDataError, f"{name}.shape", tuple(t.shape),
                          f"a {ndim}-dim tensor", "Check the layout documented in the docstring.")
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).nonzero()[0, 0])
        raise field_error(InputDataError, name, f"non-finite entry at row {bad}",
                          "finite everywhere", "Drop or repair NaN/inf before modelling.")
    return t


def _check_points(name: str, X: Any, dim: int | None = None) -> Tensor:
    """Validate points in the unit cube; returns an ``n x d`` float64 tensor."""
    X = _as_tensor(name, X, 2)
    if dim is not None and X.shape[-1] != dim:
        raise field_error(InputDataError, f"{name}.shape[-1]", X.shape[-1], f"equal to dim={dim}",
                          "Encode parameters into the unit cube of the search space first.")
    if X.numel() and (X.min() < 0.0 or X.max() > 1.0):
        raise field_error(InputDataError, name, f"range [{float(X.min())}, {float(X.max())}]",
                          "inside the unit cube [0, 1]^d",
                          "Encode parameters with the search space before modelling.")
    return X


def _check_observations(
    X: Any, Y: Any, Yvar: Any, dim: int | None, num_metrics: int | None, prefix: str = ""
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate ``X`` (``n x d``), ``Y`` and ``Yvar`` (``n x m``)."""
    X = _check_points(f"{prefix}X", X, dim)
    Y = _as_tensor(f"{prefix}Y", Y, 2)
    Yvar = _as_tensor(f"{prefix}Yvar", Yvar, 2)
    n = X.shape[0]
    for name, t in ((f"{prefix}Y", Y), (f"{prefix}Yvar", Yvar)):
        expected = (n, num_metrics if num_metrics is not None else Y.shape[1])
        if tuple(t.shape) != expected:
            raise field_error(InputDataError, f"{name}.shape", tuple(t.shape), f"{expected}",
                              "Give one row per point of X and one column per metric.")
    if (Yvar < 0).any():
        raise field_error(InputDataError, f"{prefix}Yvar", float(Yvar.min()), "a variance >= 0",
                          "Pass the variance of each aggregated delta, not a standard error.")
    return X, Y, Yvar


def _check_prior_sd(prior_sd: float) -> float:
    if isinstance(prior_sd, bool) or not isinstance(prior_sd, (int, float)) or not (
        math.isfinite(prior_sd) and prior_sd > 0
    ):
        raise field_error(ConfigError, "prior_sd", prior_sd, "a finite number > 0",
                          "Use the typical size of a metric delta, e.g. 0.02 for 2%.")
    return float(prior_sd)


# --------------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------------


class _FrozenStandardize(Standardize):
    r"""``Standardize(m=1)`` whose centre and scale are given, never re-estimated.

    BoTorch's ``Standardize`` estimates its statistics from the training targets whenever the
    model is built. We fix them instead, for two reasons: (1) its estimate breaks down at small
    ``n`` (one point gives scale 1.0, i.e. a prior sd of 100% on a lift; two equal points give
    the same), and (2) the centre and scale are really part of the hyperparameters: the
    kernel's outputscale is expressed in units of the scale, so cheap conditioning with stored
    hyperparameters must reuse the stored statistics to mean the same prior.
    """

    def __init__(self, means: Tensor, stdvs: Tensor, stdvs_sq: Tensor | None = None) -> None:
        super().__init__(m=1)
        self.means = means.detach().clone().to(DTYPE).reshape(1, 1)
        self.stdvs = stdvs.detach().clone().to(DTYPE).reshape(1, 1)
        self._stdvs_sq = (self.stdvs.pow(2) if stdvs_sq is None
                          else stdvs_sq.detach().clone().to(DTYPE).reshape(1, 1))
        self._is_trained = torch.tensor(True)

    def forward(
        self, Y: Tensor, Yvar: Tensor | None = None, X: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Standardise with the fixed statistics, in train and eval mode alike."""
        Y_tf = (Y - self.means) / self.stdvs
        Yvar_tf = Yvar / self._stdvs_sq if Yvar is not None else None
        return Y_tf, Yvar_tf


def _standardization_stats(y: Tensor, yvar: Tensor, prior_sd: float) -> tuple[Tensor, Tensor]:
    r"""Centre and scale of one metric's training targets, robust at small ``n``.

    Points are weighted by their marginal precision under the prior,
    ``w_i = 1 / (prior_sd^2 + yvar_i)``, so that a point whose noise swamps any plausible
    signal barely moves the statistics. The centre is the weighted mean. The scale is a
    shrinkage estimate that counts the prior scale as ``_SCALE_PSEUDO_POINTS`` observations,
    ``s^2 = (k prior_sd^2 + SS) / (k + n_eff - 1)``, with ``SS`` the weighted sum of squares
    and ``n_eff`` Kish's effective sample size: ``s = prior_sd`` at ``n = 1`` and ``s`` tends
    to the (weighted) sample standard deviation as ``n`` grows.

    Args:
        y: ``n``-dim targets (metric deltas), ``n >= 1``.
        yvar: ``n``-dim known noise variances.
        prior_sd: Prior standard deviation of a delta.

    Returns:
        ``(centre, scale)``, two 0-dim float64 tensors in the units of ``y``.
    """
    w = 1.0 / (prior_sd**2 + yvar)
    sw = w.sum()
    centre = (w * y).sum() / sw
    n_eff = sw**2 / (w**2).sum()
    ss = n_eff * (w * (y - centre) ** 2).sum() / sw
    k = _SCALE_PSEUDO_POINTS
    var = (k * prior_sd**2 + ss) / (k + n_eff - 1.0)
    return centre, var.sqrt()


def _make_covar_module(dim: int) -> ScaleKernel:
    r"""Matern-5/2 ARD kernel with BoTorch's dimension-scaled lengthscale prior, scaled.

    - Matern-5/2: lift surfaces over value-model weights are smooth but not analytic; the
      twice-differentiable Matern is the standard choice for A/B-test BO (Letham et al. 2019,
      Ax) and is less over-confident between points than RBF.
    - Lengthscale prior ``LogNormal(sqrt(2) + log(d)/2, sqrt(3))`` (Hvarfner et al. 2024,
      BoTorch's current default), constrained ``>= 0.025``, initialised at the prior mode.
    - ``ScaleKernel`` with a ``LogNormal(1, 1)`` outputscale prior (mode 1 in standardised
      units, so that with no information the MAP signal sd equals the outcome scale, and the
      ``n = 0`` prior sd equals ``prior_sd``), initialised at 1. BoTorch's default omits the
      outputscale because ``Standardize`` sets the signal variance to one, but with large known
      heteroskedastic noise the spread of the targets is mostly noise, and a fitted
      outputscale lets the marginal likelihood separate signal from noise.
    """
    base = get_covar_module_with_dim_scaled_prior(ard_num_dims=dim, use_rbf_kernel=False)
    covar = ScaleKernel(base, outputscale_prior=LogNormalPrior(loc=1.0, scale=1.0))
    covar.outputscale = 1.0
    return covar


def check_loadings(loadings: Any, n: int, m: int, Yvar: Tensor) -> Tensor | None:
    r"""Validate loadings on shared control errors; None (independent noise) passes.

    Args:
        loadings: ``m x n x H`` tensor, finite; ``loadings[j, i, t]**2`` is the variance that
            point ``i``'s metric ``j`` gets from shared error ``t``, so
            ``sum_t loadings[j, i, t]**2`` must not exceed ``Yvar[i, j]`` (up to rounding).
        n: Number of training points.
        m: Number of metrics.
        Yvar: ``n x m`` total noise variances.

    Returns:
        The loadings as float64, or None.

    Raises:
        InputDataError: Wrong shape, non-finite values, or a shared part above the total.
    """
    if loadings is None:
        return None
    t = torch.as_tensor(loadings, dtype=DTYPE)
    if t.dim() != 3 or t.shape[:2] != (m, n):
        raise field_error(InputDataError, "loadings.shape", tuple(t.shape), f"({m}, {n}, H)")
    if not torch.isfinite(t).all():
        raise field_error(InputDataError, "loadings", "a non-finite entry", "finite everywhere")
    shared = (t * t).sum(dim=-1).T  # n x m
    if n and bool((shared > Yvar * (1 + 1e-9) + 1e-300).any()):
        raise field_error(InputDataError, "loadings", "a shared variance above Yvar",
                          "sum_t loadings[j, i, t]**2 <= Yvar[i, j]",
                          "The shared part of a variance is a part of the total.")
    return t


class _SharedControlNoise(FixedGaussianNoise):
    r"""Known noise with a part shared between observations: ``diag(r) + U U^T``.

    Every test arm is compared with the same control group, so the control's sampling error
    of an hour enters the delta of every arm that ran in that hour (:mod:`hz_ray.delta`). With
    ``U[i, t]`` the loading of arm ``i`` on hour ``t``'s control error (its aggregation weight
    of that hour times the square root of the control's share of its variance), the noise
    covariance of the per-arm aggregates is ``diag(r) + U U^T``, where ``r`` keeps each
    aggregate's total variance ``noise`` on the diagonal. Pooling arms through the GP then
    averages their own errors but not the control error they share.

    Args:
        noise: ``n`` total noise variances (standardised units), as BoTorch computed them.
        loadings: ``n x H`` loadings ``U`` (standardised units).
    """

    def __init__(self, noise: Tensor, loadings: Tensor) -> None:
        super().__init__(noise=noise)
        shared = (loadings * loadings).sum(dim=-1)
        self.residual = (self.noise - shared).clamp_min(_MIN_NOISE_REL)
        self.loadings = loadings
        self.noise = self.residual + shared

    def forward(self, *params: Any, shape: torch.Size | None = None,
                noise: Tensor | None = None, **kwargs: Any) -> Any:
        """The dense covariance on the training points; elsewhere as the parent class.

        Given ``noise`` is returned as it is, and points other than the training points get
        no noise, exactly as :class:`FixedGaussianNoise` does.
        """
        base = super().forward(*params, shape=shape, noise=noise, **kwargs)
        if noise is not None or isinstance(base, ZeroLinearOperator):
            return base
        return DenseLinearOperator(self.dense())

    def dense(self) -> Tensor:
        """The ``n x n`` noise covariance."""
        return torch.diag(self.residual) + self.loadings @ self.loadings.T

    def _apply(self, fn):
        self.residual = fn(self.residual)
        self.loadings = fn(self.loadings)
        return super()._apply(fn)


def _noise_covariance(model: SingleTaskGP) -> Tensor:
    """The ``n x n`` known noise covariance of a model's training targets (standardised)."""
    noise_covar = model.likelihood.noise_covar
    if isinstance(noise_covar, _SharedControlNoise):
        return noise_covar.dense()
    return torch.diag(model.likelihood.noise)


def _build_model(X: Tensor, y: Tensor, yvar: Tensor, transform: _FrozenStandardize,
                 loadings: Tensor | None = None) -> SingleTaskGP:
    floor = _MIN_NOISE_REL * transform._stdvs_sq.reshape(())
    model = SingleTaskGP(
        train_X=X,
        train_Y=y.unsqueeze(-1),
        train_Yvar=yvar.clamp_min(floor).unsqueeze(-1),
        covar_module=_make_covar_module(X.shape[-1]),
        outcome_transform=transform,
    )
    model.mean_module.constant = 0.0
    if loadings is not None and bool((loadings != 0).any()):
        scaled = loadings / transform.stdvs.reshape(())
        model.likelihood.noise_covar = _SharedControlNoise(model.likelihood.noise, scaled)
    return model.to(DTYPE)


def _hyperparameter_keys(model: SingleTaskGP) -> list[str]:
    return [name for name, _ in model.named_parameters()] + list(_TRANSFORM_KEYS)


def _extract_hyperparameters(model: SingleTaskGP) -> Hyperparameters:
    state = model.state_dict()
    return {key: state[key].detach().clone() for key in _hyperparameter_keys(model)}


def _load_hyperparameters(model: SingleTaskGP, hyperparameters: Mapping[str, Tensor]) -> None:
    state = model.state_dict()
    for key, value in hyperparameters.items():
        state[key] = value
    model.load_state_dict(state)


def _check_hyperparameters(hyperparameters: Mapping[str, Any], dim: int) -> Hyperparameters:
    """Check keys and shapes against a template model; returns float64 tensors."""
    template = prior_hyperparameters(dim)
    if set(hyperparameters) != set(template):
        raise StateError(
            f"hyperparameters have keys {sorted(hyperparameters)}; expected {sorted(template)}.",
            "Pass the dict produced by a previous fit of the same dimension, or None to refit.",
        )
    out: Hyperparameters = {}
    for key, ref in template.items():
        value = torch.as_tensor(hyperparameters[key], dtype=DTYPE)
        if value.shape != ref.shape or not torch.isfinite(value).all():
            raise StateError(
                f"hyperparameter {key!r} has shape {tuple(value.shape)} (finite: "
                f"{bool(torch.isfinite(value).all())}); expected finite values of shape "
                f"{tuple(ref.shape)}.",
                "The stored hyperparameters belong to a different search space; refit instead.",
            )
        out[key] = value
    return out


def prior_hyperparameters(dim: int, prior_sd: float = DEFAULT_PRIOR_SD) -> Hyperparameters:
    r"""Hyperparameters of the GP prior before any data.

    Centre 0 and scale ``prior_sd`` (so the prior of a delta is ``N(0, prior_sd^2)`` at every
    point), outputscale 1 (the prior mode), lengthscales at the prior mode
    (``0.2 sqrt(d)`` in unit-cube units), constant mean 0. These are also the fallback when a
    marginal-likelihood fit fails.

    Args:
        dim: Dimension ``d`` of the unit cube.
        prior_sd: Prior standard deviation of a delta.

    Returns:
        A :data:`Hyperparameters` dict.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise field_error(ConfigError, "dim", dim, "an integer >= 1")
    prior_sd = _check_prior_sd(prior_sd)
    transform = _FrozenStandardize(torch.zeros((), dtype=DTYPE),
                                   torch.tensor(prior_sd, dtype=DTYPE))
    X = torch.full((1, dim), 0.5, dtype=DTYPE)
    y = torch.zeros(1, dtype=DTYPE)
    model = _build_model(X, y, torch.ones(1, dtype=DTYPE), transform)
    return _extract_hyperparameters(model)


def _exact_algebra() -> gpytorch.settings.max_cholesky_size:
    """GPyTorch solves and log-determinants by Cholesky at every size (used by the fits).

    GPyTorch's default switches to conjugate gradients and Lanczos above 800 points, which is
    approximate; hz-ray's own posterior (:mod:`hz_ray.exact_posterior`) is always exact.
    """
    return gpytorch.settings.max_cholesky_size(_CHOLESKY_ALWAYS)


def _fit_in_place(model: SingleTaskGP, ftol: float | None = None) -> bool:
    """Fit by marginal likelihood (MAP under the priors); on any failure restore the start.

    Args:
        model: The GP, fitted in place.
        ftol: L-BFGS-B's ``ftol`` (stop when an iteration lowers the per-point loss by less),
            or None for scipy's default.

    Returns:
        True when the fit succeeded and gave finite hyperparameters.
    """
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    ok = False
    try:
        # fit_gpytorch_mll resamples hyperparameters from the priors on a failed attempt, using
        # the global RNG: fork it and seed it so that fits are deterministic and side-effect free.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(_FIT_SEED)
            with _exact_algebra():
                fit_gpytorch_mll(mll, optimizer_kwargs=None if ftol is None
                                 else {"options": {"ftol": ftol}})
        for w in caught:
            _LOG.debug("GP fit warning: %s", w.message)
        ok = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    except Exception as exc:  # never crash the tuner on a bad fit; fall back to the prior
        _LOG.warning("GP hyperparameter fit failed (%s: %s); using the prior hyperparameters.",
                     type(exc).__name__, exc)
    if not ok:
        model.load_state_dict(start)
    model.eval()
    return ok


def _fit_metric_gp(
    X: Tensor,
    y: Tensor,
    yvar: Tensor,
    hyperparameters: Mapping[str, Tensor] | None,
    prior_sd: float,
    loadings: Tensor | None = None,
    warm_start: Mapping[str, Tensor] | None = None,
    ftol: float | None = None,
) -> tuple[SingleTaskGP, bool]:
    """Unchecked core of :func:`fit_metric_gp`; returns ``(model, fit_ok)``.

    ``warm_start`` (a previous fit's hyperparameters) starts the marginal-likelihood fit from
    its kernel, mean and noise parameters instead of the defaults; the standardisation is
    always the data's own. It is also where a failed fit falls back to. ``ftol`` is the
    optimiser's stopping tolerance (see :func:`_fit_in_place`).
    """
    if hyperparameters is not None:
        transform = _FrozenStandardize(
            hyperparameters["outcome_transform.means"],
            hyperparameters["outcome_transform.stdvs"],
            hyperparameters["outcome_transform._stdvs_sq"],
        )
        model = _build_model(X, y, yvar, transform, loadings)
        _load_hyperparameters(model, hyperparameters)
        model.eval()
        return model, True
    centre, scale = _standardization_stats(y, yvar, prior_sd)
    model = _build_model(X, y, yvar, _FrozenStandardize(centre, scale), loadings)
    if warm_start is not None:
        _load_hyperparameters(model, {k: v for k, v in warm_start.items()
                                      if k not in _TRANSFORM_KEYS})
    ok = _fit_in_place(model, ftol)
    return model, ok


def fit_rows(num_points: int, limit: int | None = None) -> Tensor | None:
    """Training rows a hyperparameter fit uses: all (None) up to ``limit``, else a subset.

    Above ``limit`` points the exact marginal likelihood costs ``O(n^3)`` per optimiser step
    (``benchmarks/cost_curve.py``: 110 s for 4 metrics at n = 2000, over 520 s at 3000).
    Hyperparameters (a few lengthscales, one outputscale) are estimated well from a random
    subset of ``limit`` points; the posterior is still conditioned on every point.

    Args:
        num_points: Training points ``n``.
        limit: Largest ``n`` fitted on all points, >= 2 (default :data:`FIT_POINTS_LIMIT`).

    Returns:
        None (all rows), or ``limit`` sorted row indices: row 0 (the control, the first
        training row) and a random draw, seeded by ``n``, of the others.
    """
    limit = FIT_POINTS_LIMIT if limit is None else limit
    if num_points <= limit:
        return None
    gen = torch.Generator().manual_seed(num_points)
    others = torch.randperm(num_points - 1, generator=gen)[: limit - 1] + 1
    return torch.cat([torch.zeros(1, dtype=torch.long), others.sort().values])


def fit_metric_gp(
    X: Tensor,
    y: Tensor,
    yvar: Tensor,
    hyperparameters: Mapping[str, Tensor] | None = None,
    *,
    prior_sd: float = DEFAULT_PRIOR_SD,
) -> SingleTaskGP:
    r"""Build the GP of one metric delta, fitting or loading its hyperparameters.

    The model is a :class:`~botorch.models.SingleTaskGP` with fixed heteroskedastic noise
    (``train_Yvar``, floored at ``1e-6`` times the squared outcome scale so that noise-free
    duplicate rows stay well posed), a constant mean, the kernel of
    :func:`_make_covar_module` (Matern-5/2 ARD, dimension-scaled lengthscale prior, fitted
    outputscale) and a ``Standardize(m=1)`` outcome transform whose centre and scale are
    precision-weighted and shrunk to ``prior_sd`` at small ``n`` (see
    :func:`_standardization_stats`), which makes ``n = 1`` and ``n = 2`` well defined.

    Args:
        X: ``n x d`` training inputs in the unit cube, ``n >= 1``; duplicate rows are allowed.
        y: ``n``-dim observed deltas (relative lifts, e.g. ``0.01`` = +1%).
        yvar: ``n``-dim known variances of the observed deltas (squared lift units), ``>= 0``.
        hyperparameters: Hyperparameters from a previous fit (see
            :meth:`Surrogate.state_dict` / :func:`prior_hyperparameters`). When given they are
            loaded as they are, standardisation included, and nothing is fitted: conditioning
            on the new data costs one Cholesky factorisation.
        prior_sd: Prior standard deviation of a delta; sets the scale at small ``n``.

    Returns:
        The model in eval mode. Without ``hyperparameters`` its hyperparameters are the
        maximum a posteriori fit of the marginal likelihood; if that fit fails (numerical error,
        non-finite result) they fall back to the prior's, with a logged warning.

    Raises:
        InputDataError: On bad shapes, non-finite values, points outside the cube or negative
            variances.
        StateError: When ``hyperparameters`` do not match a model of dimension ``d``.
    """
    prior_sd = _check_prior_sd(prior_sd)
    X = _check_points("X", X)
    y = _as_tensor("y", y, 1)
    yvar = _as_tensor("yvar", yvar, 1)
    if X.shape[0] < 1 or y.shape != (X.shape[0],) or yvar.shape != (X.shape[0],):
        raise field_error(InputDataError, "shapes", (tuple(X.shape), tuple(y.shape),
                                                     tuple(yvar.shape)),
                          "X: n x d, y: n, yvar: n with n >= 1",
                          "Use the prior (Surrogate.update with no points) when there is no data.")
    if (yvar < 0).any():
        raise field_error(InputDataError, "yvar", float(yvar.min()), "a variance >= 0")
    hp = None if hyperparameters is None else _check_hyperparameters(hyperparameters, X.shape[1])
    model, _ = _fit_metric_gp(X, y, yvar, hp, prior_sd)
    return model


# --------------------------------------------------------------------------------------------
# Posterior snapshot
# --------------------------------------------------------------------------------------------


def _derive_seeds(seed: int, count: int) -> list[int]:
    gen = torch.Generator().manual_seed(int(seed))
    return [int(s) for s in torch.randint(0, 2**62, (count,), generator=gen)]


def _untransform(model: SingleTaskGP) -> tuple[Tensor, Tensor]:
    """``(centre, scale)`` of the model's frozen outcome standardisation (0-d tensors)."""
    transform = model.outcome_transform
    return transform.means.reshape(()), transform.stdvs.reshape(())


def _exact_draws(posterior: MetricPosterior, X: Tensor, num_draws: int, seed: int) -> Tensor:
    """``num_draws x N`` exact joint draws of the latent f at ``X`` (``N x d``), lift units."""
    centre, scale = _untransform(posterior.model)
    mean, cov = posterior.mean_and_covariance(X)
    L = robust_cholesky(scale**2 * cov)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num_draws, X.shape[0], generator=gen, dtype=DTYPE)
    return centre + scale * mean + z @ L.transpose(-1, -2)


class _MetricPaths:
    r"""``K`` pathwise (Matheron) function draws of one metric's latent delta.

    Each draw is a function ``f = f0 + k(., X_tr) (K_tr + Sigma)^{-1} (y - f0(X_tr) - eps)``
    (Wilson et al. 2020), with ``f0 = mu + phi(.)^T w`` a prior draw in the random Fourier
    feature space of BoTorch's ``gen_kernel_features`` (``w ~ N(0, I)``) and
    ``eps ~ N(0, Sigma)``. This is what ``botorch.sampling.pathwise.draw_matheron_paths``
    computes; doing it here with plain ``N x F`` by ``F x K`` matrix products measured about
    twice as fast for ``K = 1000`` (BoTorch's ``GeneralizedLinearPath`` evaluates ``K`` batched
    matrix-vector products) and draws every random number from one seeded generator.

    The draws are functions: evaluating them at new points later gives values consistent with
    earlier evaluations, which is what a local search on one Thompson sample needs.

    Args:
        posterior: The metric's exact posterior (its model, factor and solves).
        num_draws: ``K >= 1``.
        seed: Seed of every random number of the draws.
        num_features: Random Fourier features ``F`` of the prior draw.
    """

    def __init__(self, posterior: MetricPosterior, num_draws: int, seed: int,
                 num_features: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        model = posterior.model
        self.model = model
        self.posterior = posterior
        with torch.no_grad():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # the feature frequencies use the global RNG: fork it
                self.features = gen_kernel_features(
                    kernel=model.covar_module, num_inputs=model.train_inputs[0].shape[-1],
                    num_outputs=num_features)
            X_tr = model.train_inputs[0]
            y_tr = model.train_targets  # standardised
            self.weights = torch.randn(num_draws, self.features.num_outputs, generator=gen,
                                       dtype=DTYPE)  # K x F
            prior_tr = self._prior(X_tr)
            z = torch.randn(X_tr.shape[0], num_draws, generator=gen, dtype=DTYPE)
            if X_tr.shape[0] <= _DENSE_NOISE_LIMIT:
                # Small n: the noise draw as it always was (a Cholesky of the dense noise).
                eps = robust_cholesky(_noise_covariance(model)) @ z
            else:  # the same distribution without an n x n matrix
                eps = posterior.noise_draws(z, gen)
            del z
            # At training row i a draw is f0_i + (K alpha)_i = y_i - eps_i - (Sigma alpha)_i.
            self._at_rows = eps.neg_().add_(y_tr.unsqueeze(-1))  # y - eps, n x K
            del eps
            self.alpha = posterior.solve(prior_tr.neg_().add_(self._at_rows))  # n x K
            del prior_tr
            self._at_rows.sub_(posterior.noise_times(self.alpha))
        self.centre, self.scale = _untransform(model)

    def evaluate(self, X: Tensor, training_rows: Tensor | None) -> Tensor:
        """Every draw at ``X`` (``N x d``) -> ``K x N`` (lift units), training rows for free.

        Args:
            X: The points.
            training_rows: ``N`` indices: the training row that ``X[i]`` is (its exact
                input), or -1. Draws at training rows cost ``O(1)`` each instead of ``O(n)``.
        """
        if training_rows is None or not bool((training_rows >= 0).any()):
            return self(X)
        known = training_rows >= 0
        out = torch.empty(self.weights.shape[0], X.shape[0], dtype=DTYPE)
        out[:, known] = self.centre + self.scale * self._at_rows[training_rows[known]].T
        if bool((~known).any()):
            out[:, ~known] = self(X[~known])
        return out

    def _prior(self, X: Tensor) -> Tensor:
        """The prior draws at ``X``: ``N x d`` -> ``N x K`` (standardised)."""
        out = torch.empty(X.shape[0], self.weights.shape[0], dtype=DTYPE)
        for start in range(0, X.shape[0], KERNEL_CHUNK):
            chunk = X[start:start + KERNEL_CHUNK]
            out[start:start + KERNEL_CHUNK] = (self.features(chunk) @ self.weights.T
                                               + self.model.mean_module(chunk).unsqueeze(-1))
        return out

    def __call__(self, X: Tensor) -> Tensor:
        """Every draw at the same points: ``N x d`` -> ``K x N`` (lift units)."""
        with torch.no_grad():
            X_tr = self.model.train_inputs[0]
            f = self._prior(X)
            for start in range(0, X.shape[0], KERNEL_CHUNK):
                chunk = X[start:start + KERNEL_CHUNK]
                f[start:start + KERNEL_CHUNK] += kernel(self.model, chunk, X_tr) @ self.alpha
        return self.centre + self.scale * f.T.contiguous()

    def per_draw(self, X: Tensor) -> Tensor:
        """Draw ``k`` at its own points: ``K x M x d`` -> ``K x M`` (lift units)."""
        K, M, d = X.shape
        flat = X.reshape(K * M, d)
        with torch.no_grad():
            X_tr = self.model.train_inputs[0]
            phi = self.features(flat).reshape(K, M, -1)
            f = torch.einsum("kmf,kf->km", phi, self.weights)
            f = f + self.model.mean_module(flat).reshape(K, M)
            cross = kernel(self.model, flat, X_tr).reshape(K, M, -1)
            f = f + torch.einsum("kmn,nk->km", cross, self.alpha)
        return self.centre + self.scale * f


class PosteriorPaths:
    r"""``K`` joint Thompson samples of every metric delta, as functions of the weights.

    Made by :meth:`PosteriorSnapshot.paths`; metrics are independent, as in the snapshot.
    """

    def __init__(self, metric_paths: Sequence[_MetricPaths], dim: int) -> None:
        self._paths = tuple(metric_paths)
        self.dim = dim

    @property
    def num_metrics(self) -> int:
        """``m``, the number of metrics."""
        return len(self._paths)

    @property
    def num_draws(self) -> int:
        """``K``, the number of draws."""
        return int(self._paths[0].weights.shape[0])

    def __call__(self, X: Tensor, training_rows: Tensor | None = None) -> Tensor:
        r"""Every draw at ``X``.

        Args:
            X: ``N x d`` points in the unit cube.
            training_rows: Optional ``N`` indices: the training row that ``X[i]`` is, or -1
                (cheaper, same values; see :meth:`PosteriorSnapshot.sample`).

        Returns:
            ``K x N x m`` draws (lift units).
        """
        X = _check_points("X", X, self.dim)
        rows = check_training_rows(training_rows, X, self._paths[0].model.train_inputs[0])
        return torch.stack([p.evaluate(X, rows) for p in self._paths], dim=-1)



    def per_draw(self, X: Tensor) -> Tensor:
        r"""Draw ``k`` at its own points ``X[k]``.

        Args:
            X: ``K x M x d`` points in the unit cube.

        Returns:
            ``K x M x m`` draws (lift units).
        """
        X = torch.as_tensor(X, dtype=DTYPE)
        if X.dim() != 3 or X.shape[0] != self.num_draws or X.shape[2] != self.dim:
            raise field_error(InputDataError, "X.shape", tuple(X.shape),
                              f"(K={self.num_draws}, M, d={self.dim})")
        return torch.stack([p.per_draw(X) for p in self._paths], dim=-1)


def check_training_rows(training_rows: Tensor | None, X: Tensor, train_X: Tensor
                        ) -> Tensor | None:
    """Validate ``training_rows`` for the points ``X`` against the training inputs.

    Args:
        training_rows: ``N`` indices: the row of ``train_X`` that ``X[i]`` is, or -1; or None.
        X: ``N x d`` points.
        train_X: ``n x d`` training inputs.

    Returns:
        The indices as a long tensor, or None when none is given or none is known.

    Raises:
        InputDataError: Wrong length, an index out of range, or a row whose input is not the
            point.
    """
    if training_rows is None:
        return None
    rows = torch.as_tensor(training_rows, dtype=torch.long)
    n_rows = train_X.shape[0]
    if rows.shape != (X.shape[0],) or bool((rows < -1).any()) or bool((rows >= n_rows).any()):
        raise field_error(InputDataError, "training_rows", tuple(rows.shape),
                          f"{X.shape[0]} indices in [-1, {n_rows - 1}]")
    known = rows >= 0
    if not bool(known.any()):
        return None
    if not torch.equal(train_X[rows[known]], X[known]):
        raise field_error(InputDataError, "training_rows", "mismatch",
                          "indices of training rows whose inputs equal those points")
    return rows


def _pathwise_draws(
    posterior: MetricPosterior, X: Tensor, num_draws: int, seed: int, num_features: int,
    training_rows: Tensor | None = None,
) -> Tensor:
    """``num_draws x N`` pathwise draws of the latent f at ``X`` (see :class:`_MetricPaths`)."""
    return _MetricPaths(posterior, num_draws, seed, num_features).evaluate(X, training_rows)


@dataclass(frozen=True, eq=False)
class PosteriorSnapshot:
    r"""The posterior of every metric delta at one moment; treat as immutable.

    Build one with :meth:`Surrogate.update` (or :meth:`condition`). All methods are pure: they
    neither change the snapshot nor consume the global RNG.

    Attributes:
        version: The :attr:`Surrogate.version` that produced it (kept by :meth:`condition`).
        metrics: Metric names, in the column order of every ``... x m`` tensor.
        num_points: Number of training points ``n`` (fantasies added by :meth:`condition`
            included); 0 for the prior.
        models: One eval-mode GP per metric. For ``num_points == 0`` each is conditioned on a
            single pseudo-observation with noise ``1e12`` times the prior variance, so that its
            posterior is the prior (zero mean, sd ``prior_sd``) to 12 digits.
        train_X: ``n x d`` training inputs.
        train_Y: ``n x m`` training deltas.
        train_Yvar: ``n x m`` known noise variances of ``train_Y``.
        hyperparameters: One :data:`Hyperparameters` dict per metric, used by every model.
        prior_sd: Prior standard deviation of a delta.
        exact_limit: :meth:`sample` draws exactly up to this many points, pathwise above.
        num_features: Random Fourier features of pathwise draws.
        train_loadings: ``m x n x H`` loadings of the training points on ``H`` shared
            control errors (see :class:`_SharedControlNoise`), or None when the noise is
            independent.
    """

    version: int
    metrics: tuple[str, ...]
    num_points: int
    models: tuple[SingleTaskGP, ...]
    train_X: Tensor  # noqa: N815 (BoTorch's names)
    train_Y: Tensor  # noqa: N815 (BoTorch's names)
    train_Yvar: Tensor  # noqa: N815 (BoTorch's names)
    hyperparameters: tuple[Hyperparameters, ...]
    prior_sd: float = DEFAULT_PRIOR_SD
    exact_limit: int = EXACT_SAMPLE_LIMIT
    num_features: int = PATHWISE_NUM_FEATURES
    train_loadings: Tensor | None = None  # noqa: N815 (BoTorch's names)
    base: PosteriorSnapshot | None = None

    @cached_property
    def posteriors(self) -> tuple[MetricPosterior, ...]:
        """Each metric's exact posterior: a Cholesky factor, or the base's plus a border.

        Two metrics' factors share one matrix (:meth:`MetricPosterior.from_models`).
        """
        if self.base is not None:
            return tuple(p.extended(model)
                         for p, model in zip(self.base.posteriors, self.models, strict=True))
        return MetricPosterior.from_models(self.models)

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the unit cube."""
        return int(self.train_X.shape[-1])

    @classmethod
    def build(
        cls,
        X: Tensor,
        Y: Tensor,
        Yvar: Tensor,
        metrics: Sequence[str],
        hyperparameters: Sequence[Mapping[str, Tensor]],
        *,
        version: int = 0,
        prior_sd: float = DEFAULT_PRIOR_SD,
        loadings: Tensor | None = None,
    ) -> PosteriorSnapshot:
        r"""Condition one GP per metric on data under given hyperparameters (no fitting).

        Args:
            X: ``n x d`` inputs in the unit cube; ``n`` may be 0 (the prior).
            Y: ``n x m`` observed deltas.
            Yvar: ``n x m`` known noise variances.
            metrics: ``m`` metric names.
            hyperparameters: ``m`` hyperparameter dicts, one per metric.
            version: Version number to stamp on the snapshot.
            prior_sd: Prior standard deviation of a delta.
            loadings: ``m x n x H`` loadings on shared control errors (lift units), or None
                for independent noise (see :func:`check_loadings`).

        Returns:
            The snapshot.
        """
        metrics = tuple(metrics)
        dim = int(torch.as_tensor(X).shape[-1])
        X, Y, Yvar = _check_observations(X, Y, Yvar, dim, len(metrics))
        if len(hyperparameters) != len(metrics):
            raise field_error(InputDataError, "hyperparameters", len(hyperparameters),
                              f"one dict per metric ({len(metrics)})")
        hps = tuple(_check_hyperparameters(hp, dim) for hp in hyperparameters)
        loadings = check_loadings(loadings, X.shape[0], len(metrics), Yvar)
        models = []
        for j, hp in enumerate(hps):
            if X.shape[0] == 0:
                var = float(hp["outcome_transform._stdvs_sq"].reshape(()))
                x_ = torch.full((1, dim), 0.5, dtype=DTYPE)
                y_ = hp["outcome_transform.means"].reshape(1).clone()
                yvar_ = torch.full((1,), _PSEUDO_NOISE_REL * var, dtype=DTYPE)
            else:
                x_, y_, yvar_ = X, Y[:, j], Yvar[:, j]
            shared = None if loadings is None or X.shape[0] == 0 else loadings[j]
            model, _ = _fit_metric_gp(x_, y_, yvar_, hp, prior_sd, shared)
            models.append(model)
        return cls(version=int(version), metrics=metrics, num_points=int(X.shape[0]),
                   models=tuple(models), train_X=X, train_Y=Y, train_Yvar=Yvar,
                   hyperparameters=hps, prior_sd=prior_sd, train_loadings=loadings)

    def mean(self, X: Tensor, training_rows: Tensor | None = None) -> Tensor:
        r"""Posterior mean of the latent deltas alone: ``O(N n)``, no variance computed.

        Args:
            X: ``N x d`` points in the unit cube.
            training_rows: Optional ``N`` indices: the training row that ``X[i]`` is, or -1.
                At a training row the mean costs ``O(H)`` instead of ``O(n)`` (see
                :meth:`MetricPosterior.training_mean`).

        Returns:
            ``N x m`` posterior means (lift units), equal to :meth:`mean_and_var`'s.
        """
        X = _check_points("X", X, self.dim)
        rows = self._check_training_rows(training_rows, X)
        means = []
        for posterior in self.posteriors:
            centre, scale = _untransform(posterior.model)
            if rows is None:
                mean = posterior.mean(X)
            else:
                known = rows >= 0
                mean = torch.empty(X.shape[0], dtype=DTYPE)
                mean[known] = posterior.training_mean()[rows[known]]
                mean[~known] = posterior.mean(X[~known])
            means.append(centre + scale * mean)
        return torch.stack(means, dim=-1)

    def _check_training_rows(self, training_rows: Tensor | None, X: Tensor) -> Tensor | None:
        train_X = self.train_X if self.num_points > 0 else self.train_X[:0]
        return check_training_rows(training_rows, X, train_X)

    def mean_and_var(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""Posterior mean and variance of the latent deltas (observation noise excluded).

        Args:
            X: ``N x d`` points in the unit cube.

        Returns:
            ``(mean, var)``, each ``N x m`` (lift units and squared lift units).
        """
        X = _check_points("X", X, self.dim)
        means, variances = [], []
        for posterior in self.posteriors:
            centre, scale = _untransform(posterior.model)
            mean, var = posterior.mean_and_var(X, MEAN_VAR_CHUNK)
            means.append(centre + scale * mean)
            variances.append(scale**2 * var)
        return torch.stack(means, dim=-1), torch.stack(variances, dim=-1)

    def sample(
        self,
        X: Tensor,
        num_draws: int,
        seed: int,
        method: Literal["auto", "exact", "pathwise"] = "auto",
        training_rows: Tensor | None = None,
    ) -> Tensor:
        r"""Joint posterior draws of the latent deltas at ``X``, independent across metrics.

        Each draw is one function per metric evaluated jointly at all ``N`` points (a Thompson
        sample). ``"exact"`` factorises the ``N x N`` posterior covariance (Cholesky with
        jitter), ``O(N^3 + K N^2)``. ``"pathwise"`` evaluates Matheron-rule function draws
        whose prior uses ``num_features`` random Fourier features, ``O(K N F)``: the mean is
        exact, but the covariance carries the feature approximation's error, a few % of the
        *prior* variance, which is large relative to the posterior variance of well-observed
        points. ``"auto"`` uses exact draws for ``N <= exact_limit`` and pathwise above.

        Args:
            X: ``N x d`` points in the unit cube.
            num_draws: Number of draws ``K >= 1``.
            seed: Seed; the same seed, points and snapshot give the same draws.
            method: ``"auto"``, ``"exact"`` or ``"pathwise"``.
            training_rows: Optional ``N`` indices: the training row that ``X[i]`` is, or -1.
                Pathwise draws at training rows then skip the ``O(n)`` kernel products
                (the same values: at a training input ``f0 + K alpha = y - eps - Sigma
                alpha``).

        Returns:
            ``K x N x m`` draws (lift units).
        """
        X = _check_points("X", X, self.dim)
        if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
            raise field_error(ConfigError, "num_draws", num_draws, "an integer >= 1")
        if method not in ("auto", "exact", "pathwise"):
            raise field_error(ConfigError, "method", method, "'auto', 'exact' or 'pathwise'")
        n_points = X.shape[0]
        if n_points == 0:
            return torch.zeros(num_draws, 0, len(self.metrics), dtype=DTYPE)
        use_exact = method == "exact" or (method == "auto" and n_points <= self.exact_limit)
        rows = self._check_training_rows(training_rows, X)
        seeds = _derive_seeds(seed, len(self.models))
        draws = torch.empty(num_draws, n_points, len(self.models), dtype=DTYPE)
        for j, (posterior, s) in enumerate(zip(self.posteriors, seeds, strict=True)):
            draws[:, :, j] = (
                _exact_draws(posterior, X, num_draws, s) if use_exact
                else _pathwise_draws(posterior, X, num_draws, s, self.num_features, rows))
        return draws

    def paths(self, num_draws: int, seed: int, num_features: int | None = None) -> PosteriorPaths:
        r"""``K`` pathwise Thompson samples that can be evaluated at any points, any time.

        The same draws as ``sample(X, num_draws, seed, method="pathwise")`` at every ``X``
        (same seed, same random numbers), but as functions: a local search can evaluate one
        draw at new points and stay on the same sample.

        Args:
            num_draws: Number of draws ``K >= 1``.
            seed: Seed.
            num_features: Random Fourier features of the prior draws (default
                :attr:`num_features`); fewer are cheaper and approximate the prior less well.

        Returns:
            The draws.
        """
        if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
            raise field_error(ConfigError, "num_draws", num_draws, "an integer >= 1")
        features = self.num_features if num_features is None else num_features
        if isinstance(features, bool) or not isinstance(features, int) or features < 2:
            raise field_error(ConfigError, "num_features", features, "an integer >= 2")
        seeds = _derive_seeds(seed, len(self.models))
        return PosteriorPaths([_MetricPaths(posterior, num_draws, s, features)
                               for posterior, s in zip(self.posteriors, seeds, strict=True)],
                              self.dim)

    def condition(self, X_extra: Tensor, Y_extra: Tensor, Yvar_extra: Tensor) -> PosteriorSnapshot:
        r"""A new snapshot with extra training points under the same hyperparameters.

        Used for fantasy observations of live arms that have no data yet; nothing is refitted
        and this snapshot is unchanged.

        Args:
            X_extra: ``e x d`` extra inputs in the unit cube.
            Y_extra: ``e x m`` extra observed (or fantasised) deltas.
            Yvar_extra: ``e x m`` their noise variances.

        Returns:
            The conditioned snapshot (same ``version``; ``num_points`` grows by ``e``).
        """
        X_extra, Y_extra, Yvar_extra = _check_observations(
            X_extra, Y_extra, Yvar_extra, self.dim, len(self.metrics), prefix="extra_")
        if X_extra.shape[0] == 0:
            return self
        loadings = self.train_loadings
        if loadings is not None:  # the extra points share no control error
            pad = torch.zeros(loadings.shape[0], X_extra.shape[0], loadings.shape[2],
                              dtype=DTYPE)
            loadings = torch.cat([loadings, pad], dim=1)
        conditioned = PosteriorSnapshot.build(
            torch.cat([self.train_X, X_extra]),
            torch.cat([self.train_Y, Y_extra]),
            torch.cat([self.train_Yvar, Yvar_extra]),
            self.metrics,
            self.hyperparameters,
            version=self.version,
            prior_sd=self.prior_sd,
            loadings=loadings,
        )
        if self.num_points == 0:  # the prior's pseudo-observation is not a training row
            return conditioned
        # Extend this snapshot's factors by a border instead of refactorising (O(n^2 e)).
        return replace(conditioned, base=self if self.base is None else self.base)


# --------------------------------------------------------------------------------------------
# Refit policy and the stateful surrogate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefitPolicy:
    r"""When to refit GP hyperparameters by marginal likelihood.

    A refit is due when it is forced, when the GPs were never fitted, or when the data changed
    enough since the last fit:

    - the number of training points grew by at least
      ``max(min_new_points, growth * n_at_last_fit)`` (so refits get geometrically rarer), or
    - ``noise_shrink`` is set and, for some metric, the median noise variance of the training
      points fell by at least that factor since the last fit. Arms gain precision every hour
      without adding points; this trigger refits as the data sharpens (with the default 2.0,
      at roughly 2, 4, 8, ... hours of accumulated data), or
    - the number of points fell (the data set was replaced).

    Between refits the stored hyperparameters are reused (cheap conditioning).

    Attributes:
        min_new_points: Minimum number of new points that triggers a refit, >= 1.
        growth: Relative growth of the number of points that triggers a refit, >= 0.
        noise_shrink: Factor > 1 of median-noise-variance reduction that triggers a refit, or
            ``None`` to disable this trigger.
    """

    min_new_points: int = 4
    growth: float = 0.25
    noise_shrink: float | None = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.min_new_points, bool) or not isinstance(self.min_new_points, int) \
                or self.min_new_points < 1:
            raise field_error(ConfigError, "refit.min_new_points", self.min_new_points,
                              "an integer >= 1")
        if isinstance(self.growth, bool) or not isinstance(self.growth, (int, float)) \
                or not math.isfinite(self.growth) or self.growth < 0:
            raise field_error(ConfigError, "refit.growth", self.growth, "a finite number >= 0",
                              "E.g. 0.25 refits after the data grew by 25%.")
        if self.noise_shrink is not None and (
            isinstance(self.noise_shrink, bool)
            or not isinstance(self.noise_shrink, (int, float))
            or not math.isfinite(self.noise_shrink) or self.noise_shrink <= 1
        ):
            raise field_error(ConfigError, "refit.noise_shrink", self.noise_shrink,
                              "a finite number > 1, or None",
                              "E.g. 2.0 refits when the typical noise variance halved.")

    def due(self, num_points: int, num_points_at_last_fit: int | None,
            noise_shrink: float = 1.0) -> bool:
        """Whether a refit is due (forcing aside).

        Args:
            num_points: Number of training points now.
            num_points_at_last_fit: Number at the last fit, or None if never fitted.
            noise_shrink: Largest factor, over metrics, by which the median noise variance fell
                since the last fit (1.0 when unchanged).

        Returns:
            True when a refit is due. Never with ``num_points == 0`` (nothing to fit).
        """
        if num_points <= 0:
            return False
        if num_points_at_last_fit is None or num_points < num_points_at_last_fit:
            return True
        new = num_points - num_points_at_last_fit
        if new >= max(self.min_new_points, self.growth * num_points_at_last_fit):
            return True
        return self.noise_shrink is not None and noise_shrink >= self.noise_shrink


def _median_noise(Yvar: Tensor) -> list[float]:
    """Lower median of each column of an ``n x m`` variance tensor (``n >= 1``)."""
    return [float(v) for v in Yvar.median(dim=0).values]


def _shrink_factor(before: Sequence[float], now: Sequence[float]) -> float:
    factors = []
    for b, a in zip(before, now, strict=True):
        if b <= 0.0:
            factors.append(1.0)
        elif a <= 0.0:
            factors.append(math.inf)
        else:
            factors.append(b / a)
    return max(factors, default=1.0)


class Surrogate:
    r"""Per-metric GP hyperparameters and refit bookkeeping between rounds.

    Each :meth:`update` receives the full current training set (one row per arm with data),
    refits the hyperparameters when the :class:`RefitPolicy` says so and otherwise conditions
    on the data with the stored ones, and returns a new :class:`PosteriorSnapshot`.

    Args:
        metrics: Metric names, in the column order of ``Y``.
        dim: Dimension ``d`` of the unit cube.
        policy: When to refit; defaults to ``RefitPolicy()``.
        prior_sd: Prior standard deviation of a delta before any data (default 0.02, a 2% lift):
            with no points the snapshot is the GP prior ``N(0, prior_sd^2)`` at every point.

    Attributes:
        version: Number of updates so far; stamped on each snapshot.
        num_refits: Number of marginal-likelihood refits so far.
        num_fit_failures: Number of per-metric fits that fell back to the prior.
        last_fit_seconds: Wall time of the last refit (all metrics), or None.

    Example:
        >>> s = Surrogate(["views", "likes"], dim=3)
        >>> snap = s.update(torch.rand(10, 3, dtype=torch.float64),
        ...                 0.01 * torch.randn(10, 2, dtype=torch.float64),
        ...                 torch.full((10, 2), 1e-5, dtype=torch.float64))
        >>> draws = snap.sample(torch.rand(50, 3, dtype=torch.float64), num_draws=100, seed=0)
    """

    def __init__(
        self,
        metrics: Sequence[str],
        dim: int,
        policy: RefitPolicy | None = None,
        *,
        prior_sd: float = DEFAULT_PRIOR_SD,
    ) -> None:
        metrics = tuple(metrics)
        if not metrics or len(set(metrics)) != len(metrics) or not all(
            isinstance(name, str) and name for name in metrics
        ):
            raise field_error(ConfigError, "metrics", metrics,
                              "a non-empty sequence of distinct non-empty names")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise field_error(ConfigError, "dim", dim, "an integer >= 1")
        if policy is not None and not isinstance(policy, RefitPolicy):
            raise field_error(ConfigError, "policy", policy, "a RefitPolicy or None")
        self.metrics = metrics
        self.dim = dim
        self.policy = policy if policy is not None else RefitPolicy()
        self.prior_sd = _check_prior_sd(prior_sd)
        self.hyperparameters: dict[str, Hyperparameters] | None = None
        self.num_points_at_last_fit: int | None = None
        self.noise_at_last_fit: list[float] | None = None
        self.version = 0
        self.num_refits = 0
        self.num_fit_failures = 0
        self.last_fit_seconds: float | None = None

    def refit_due(self, Yvar: Tensor) -> bool:
        """Whether :meth:`update` with these noise variances (``n x m``) would refit."""
        n = int(Yvar.shape[0])
        shrink = 1.0
        if n > 0 and self.noise_at_last_fit is not None:
            shrink = _shrink_factor(self.noise_at_last_fit, _median_noise(Yvar))
        return self.policy.due(n, self.num_points_at_last_fit, shrink)

    def update(
        self, X: Tensor, Y: Tensor, Yvar: Tensor, force_refit: bool = False,
        loadings: Tensor | None = None,
    ) -> PosteriorSnapshot:
        r"""Condition on the current data, refitting hyperparameters when due.

        Args:
            X: ``n x d`` training inputs in the unit cube (``n`` may be 0).
            Y: ``n x m`` aggregated deltas, columns in the order of ``metrics``.
            Yvar: ``n x m`` their known variances.
            force_refit: Refit regardless of the policy (ignored when ``n == 0``).
            loadings: ``m x n x H`` loadings of the points on shared control errors, or
                None for independent noise (see :func:`check_loadings`).

        Returns:
            The new snapshot. With ``n == 0`` it is the prior (zero mean, sd ``prior_sd``, or
            the stored hyperparameters' prior if the surrogate was fitted before).
        """
        X, Y, Yvar = _check_observations(X, Y, Yvar, self.dim, len(self.metrics))
        loadings = check_loadings(loadings, X.shape[0], len(self.metrics), Yvar)
        n = X.shape[0]
        if n > 0 and (force_refit or self.refit_due(Yvar)):
            start = time.perf_counter()
            fitted: dict[str, Hyperparameters] = {}
            rows = fit_rows(n)  # above FIT_POINTS_LIMIT: a subset, warm-started, looser ftol
            for j, name in enumerate(self.metrics):
                Xf, yf, vf = X, Y[:, j], Yvar[:, j]
                lf = None if loadings is None else loadings[j]
                warm, ftol = None, None
                if rows is not None:
                    Xf, yf, vf = Xf[rows], yf[rows], vf[rows]
                    lf = None if lf is None else lf[rows]
                    warm = None if self.hyperparameters is None else self.hyperparameters[name]
                    ftol = SUBSET_FIT_FTOL
                model, ok = _fit_metric_gp(Xf, yf, vf, None, self.prior_sd, lf, warm, ftol)
                fitted[name] = _extract_hyperparameters(model)
                self.num_fit_failures += 0 if ok else 1
            self.hyperparameters = fitted
            self.num_points_at_last_fit = n
            self.noise_at_last_fit = _median_noise(Yvar)
            self.num_refits += 1
            self.last_fit_seconds = time.perf_counter() - start
        self.version += 1
        return PosteriorSnapshot.build(X, Y, Yvar, self.metrics, self._current_hyperparameters(),
                                       version=self.version, prior_sd=self.prior_sd,
                                       loadings=loadings)

    def _current_hyperparameters(self) -> list[Hyperparameters]:
        if self.hyperparameters is None:
            prior = prior_hyperparameters(self.dim, self.prior_sd)
            return [prior for _ in self.metrics]
        return [self.hyperparameters[name] for name in self.metrics]

    def state_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the hyperparameters and bookkeeping (tensors as nested lists)."""
        hps = None
        if self.hyperparameters is not None:
            hps = {name: {key: value.tolist() for key, value in hp.items()}
                   for name, hp in self.hyperparameters.items()}
        return {
            "schema_version": SCHEMA_VERSION,
            "metrics": list(self.metrics),
            "dim": self.dim,
            "prior_sd": self.prior_sd,
            "policy": asdict(self.policy),
            "hyperparameters": hps,
            "num_points_at_last_fit": self.num_points_at_last_fit,
            "noise_at_last_fit": self.noise_at_last_fit,
            "version": self.version,
            "num_refits": self.num_refits,
            "num_fit_failures": self.num_fit_failures,
            "last_fit_seconds": self.last_fit_seconds,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` output (the policy and ``prior_sd`` stay this object's).

        Raises:
            StateError: On a schema version, metric list or dimension that does not match.
        """
        version = state.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StateError(f"surrogate state has schema_version {version!r}; this build reads "
                             f"{SCHEMA_VERSION}.", "Refit from the event log instead.")
        if list(state.get("metrics", [])) != list(self.metrics) or state.get("dim") != self.dim:
            raise StateError(
                f"surrogate state is for metrics {state.get('metrics')!r} and dim "
                f"{state.get('dim')!r}; this surrogate has {list(self.metrics)!r} and {self.dim}.",
                "Load a checkpoint of the same tuning job.")
        hps = state.get("hyperparameters")
        loaded = None
        if hps is not None:
            if set(hps) != set(self.metrics):
                raise StateError(f"hyperparameters are for {sorted(hps)!r}.",
                                 "Load a checkpoint of the same tuning job.")
            loaded = {name: _check_hyperparameters(hps[name], self.dim) for name in self.metrics}
        noise = state.get("noise_at_last_fit")
        self.hyperparameters = loaded
        n_last = state.get("num_points_at_last_fit")
        self.num_points_at_last_fit = None if n_last is None else int(n_last)
        self.noise_at_last_fit = None if noise is None else [float(v) for v in noise]
        self.version = int(state.get("version", 0))
        self.num_refits = int(state.get("num_refits", 0))
        self.num_fit_failures = int(state.get("num_fit_failures", 0))
        last = state.get("last_fit_seconds")
        self.last_fit_seconds = None if last is None else float(last)
