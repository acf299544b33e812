"""BoTorch Bayesian optimisation baselines: qLogNEI, unconstrained / penalized / constrained.

Inputs are exactly hz-ray's: the per-arm delta aggregates of the ledger (one row
per arm with data on every metric, mean and delta-method variance), plus the
control as a row with delta 0 and a tiny variance. Every GP is a BoTorch
``SingleTaskGP`` with *fixed* per-point noise (``train_Yvar``) and BoTorch's
default kernel and priors, refit by marginal likelihood for every batch.
Batches come from ``optimize_acqf`` with joint optimisation of the q points
(sequential greedy cost about 3x the CPU in a quick timing), with the live arms
that have no data yet as ``X_pending``.

- :class:`UnconstrainedBO` (the paper's "unconstrained BO"): qLogNEI on the
  objective only. Readout: best posterior mean of the objective among arms with
  enough hours, constraints ignored.
- :class:`PenalizedBO` (the paper's "penalized BO"): qLogNEI on
  ``objective - penalty * sum_i max(0, c_i - g_i)`` computed per arm from the
  aggregate means (variance: objective's + ``penalty^2`` x constraint metrics').
  Readout: best posterior mean of the same penalised score.
- :class:`ConstrainedBO` (Letham et al. 2019, the Ax/BoTorch practice): one GP
  for the objective and one per constraint slack, qLogNEI with the slacks as
  outcome constraints. Readout: best posterior mean gain among arms with
  P(feasible) >= ``feasibility_threshold`` (the same rule hz-ray started with).
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from benchmarks.baselines.common import DTYPE, BatchedOptimizer
from hz_ray.records import Recommendation

NUM_RESTARTS = 4
RAW_SAMPLES = 256
MC_SAMPLES = 128
DEFAULT_PENALTY = 10.0


def _fit_gp(X: torch.Tensor, y: torch.Tensor, yvar: torch.Tensor):
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model = SingleTaskGP(X, y.unsqueeze(-1), yvar.clamp_min(1e-10).unsqueeze(-1),
                         outcome_transform=Standardize(m=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A failed fit keeps the prior-mode hyperparameters.
        with contextlib.suppress(Exception):
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


class _BoTorchBO(BatchedOptimizer):
    """Shared qLogNEI machinery; subclasses pick the model and the constraints."""

    def _models(self, X: torch.Tensor, Y: torch.Tensor, Yvar: torch.Tensor):
        """Return ``(model, objective or None, constraints or None)``."""
        raise NotImplementedError

    def _generate(self, k: int, live_arms: list[str], seed: int) -> torch.Tensor:
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.optim import optimize_acqf
        from botorch.sampling import SobolQMCNormalSampler

        view = self.view()
        pending = self.pending_points(live_arms)
        dim = self.space.dim
        bounds = torch.stack([torch.zeros(dim, dtype=DTYPE), torch.ones(dim, dtype=DTYPE)])
        with torch.random.fork_rng():
            torch.manual_seed(seed % 2**31)
            model, objective, constraints = self._models(view.X, view.Y, view.Yvar)
            acq = qLogNoisyExpectedImprovement(
                model, X_baseline=view.X, objective=objective, constraints=constraints,
                X_pending=pending, prune_baseline=True,
                sampler=SobolQMCNormalSampler(torch.Size([MC_SAMPLES]), seed=seed % 2**31))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cand, _ = optimize_acqf(acq, bounds=bounds, q=k, num_restarts=NUM_RESTARTS,
                                        raw_samples=RAW_SAMPLES, sequential=False,
                                        options={"maxiter": 100})
        return cand.detach().reshape(-1, dim)


class UnconstrainedBO(_BoTorchBO):
    """qLogNEI on the objective only (constraints ignored in search and readout)."""

    readout_rule = "best posterior mean of the objective, constraints ignored"

    def _models(self, X, Y, Yvar):
        w = self.outcomes.objective_weights
        return _fit_gp(X, Y @ w, Yvar @ (w * w)), None, None

    def recommend(self) -> Recommendation:
        """Best posterior mean of the objective among arms with enough hours."""
        return self.recommend_posterior(constrained="none")


class PenalizedBO(_BoTorchBO):
    """qLogNEI on ``objective - penalty * violation`` of each arm's aggregate means."""

    penalty = DEFAULT_PENALTY
    readout_rule = f"best posterior mean of gain - {DEFAULT_PENALTY:g} x violation"

    def _models(self, X, Y, Yvar):
        w = self.outcomes.objective_weights
        G, b = self.outcomes.constraint_matrix, self.outcomes.constraint_bounds
        score = Y @ w - self.penalty * (b - Y @ G.T).clamp_min(0).sum(-1)
        var = Yvar @ (w * w) + self.penalty ** 2 * (Yvar @ (G * G).T).sum(-1)
        return _fit_gp(X, score, var), None, None

    def recommend(self) -> Recommendation:
        """Best posterior mean of the penalised score among arms with enough hours."""
        return self.recommend_posterior(constrained="none", penalty=self.penalty)


class ConstrainedBO(_BoTorchBO):
    """qLogNEI with outcome constraints: GPs for the objective and each constraint slack."""

    readout_rule = "best posterior mean gain with P(feasible) >= 0.95"

    def _models(self, X, Y, Yvar):
        from botorch.acquisition.objective import GenericMCObjective
        from botorch.models import ModelListGP

        w = self.outcomes.objective_weights
        G, b = self.outcomes.constraint_matrix, self.outcomes.constraint_bounds
        models = [_fit_gp(X, Y @ w, Yvar @ (w * w))]
        for i in range(G.shape[0]):
            models.append(_fit_gp(X, Y @ G[i] - b[i], Yvar @ (G[i] * G[i])))
        if len(models) == 1:
            return models[0], None, None
        objective = GenericMCObjective(lambda Z, X=None: Z[..., 0])
        # BoTorch's convention: a constraint is satisfied when its callable is <= 0.
        constraints = [lambda Z, i=i: -Z[..., i + 1] for i in range(G.shape[0])]
        return ModelListGP(*models), objective, constraints

    def recommend(self) -> Recommendation:
        """Best posterior mean gain among arms with P(feasible) >= the threshold."""
        return self.recommend_posterior(constrained="probability")
