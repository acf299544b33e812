"""The objective and constraints of a job as tensors over its metric deltas.

With ``m`` metrics in ``config.metrics`` order, a vector ``d`` of deltas has

- gain ``w . d`` with ``w = sign * objective weights`` (higher is better,
  whatever the user's direction) for a weighted-sum objective, or, for a
  Pareto objective over ``k`` metrics with signs ``s`` and preference shares
  ``lam`` (summing to 1), the weighted Chebyshev value around the control

      cheb(d) = min_i s_i d_i / (k lam_i),

  whose maximiser on a Pareto front is where the ray from the control
  (``d = 0``) along ``s * lam`` meets the front. Unlike a weighted sum it
  reaches every point of a non-convex front. (It is the augmentation-free
  ``-max_i (1 / (k lam_i)) (z_i - s_i d_i)`` with the reference ``z`` at the
  control; at an equal split it is the smallest improvement of any metric.)
  Thompson sampling draws a preference per posterior draw
  (:class:`ChebyshevDraws`): near the user's, or uniform over the simplex
  when none is given, so that the picks spread along the front.
- feasibility ``G d >= b``, one row per constraint: ``+d_j >= min_delta`` or
  ``-d_j >= -max_delta``.

Posteriors of the metric GPs are independent, so the gain's posterior mean is
``w . mu`` and its variance ``(w**2) . var``, and ``P(feasible)`` is the
product of the per-constraint normal probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hz_ray.config import TuningConfig

DTYPE = torch.float64
Z95_ONE_SIDED = 1.6448536269514722
#: Total Dirichlet concentration of the per-draw preferences around a given preference, per
#: Pareto metric (``alpha = PREFERENCE_CONCENTRATION * k * lam``): the share of a metric
#: preferred at 0.7 of two has a per-draw sd of about 0.05.
PREFERENCE_CONCENTRATION = 40.0


def nondominated(values: torch.Tensor) -> torch.Tensor:
    """Which rows no other row dominates (every objective maximised; BoTorch's test).

    Row ``a`` dominates row ``b`` when ``a >= b`` everywhere and ``a > b`` somewhere;
    exact duplicates do not dominate each other.

    Args:
        values: ``n x k`` objective values.

    Returns:
        ``n`` bool mask of the non-dominated rows.
    """
    from botorch.utils.multi_objective.pareto import is_non_dominated

    if values.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    return is_non_dominated(values, deduplicate=False)


@dataclass(frozen=True, eq=False)
class ChebyshevDraws:
    """The weighted Chebyshev scalarisation with one preference per posterior draw.

    Called on ``K x ... x m`` draws it scores draw ``k`` with preference row ``k``; the
    preferences of ``K`` draws depend only on ``(seed, K)``, so every call on the same draws
    (picks, local refinement, re-scoring) uses the same preferences.

    Attributes:
        index: ``k`` long tensor: the Pareto metrics' columns among the ``m``.
        signs: ``k`` signs (+1 maximised, -1 minimised).
        preference: ``k`` shares summing to 1, or None for uniform over the simplex.
        seed: Seed of the per-draw preferences.
        num_metrics: ``m``, the draws' last dimension.
    """

    index: torch.Tensor
    signs: torch.Tensor
    preference: torch.Tensor | None
    seed: int
    num_metrics: int
    _cache: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def preferences(self, num_draws: int) -> torch.Tensor:
        """``num_draws x k`` preference shares, each row on the simplex."""
        if num_draws not in self._cache:
            k = int(self.index.numel())
            alpha = (np.ones(k) if self.preference is None
                     else PREFERENCE_CONCENTRATION * k * self.preference.numpy())
            gamma = np.random.default_rng(self.seed).gamma(alpha, size=(num_draws, k))
            shares = torch.as_tensor(gamma / gamma.sum(axis=1, keepdims=True), dtype=DTYPE)
            self._cache[num_draws] = shares.clamp_min(1e-12)
        return self._cache[num_draws]

    def __call__(self, draws: torch.Tensor) -> torch.Tensor:
        """Scalarise ``K x ... x m`` draws to ``K x ...``."""
        lam = self.preferences(draws.shape[0])
        scale = self.signs / (lam * lam.shape[-1])  # K x k
        shape = (draws.shape[0],) + (1,) * (draws.dim() - 2) + (scale.shape[-1],)
        return (draws[..., self.index] * scale.reshape(shape)).amin(dim=-1)


@dataclass(frozen=True)
class Outcomes:
    """Objective weights and constraint rows of a job.

    Attributes:
        metrics: Metric names, the column order of every ``... x m`` tensor.
        objective_weights: ``m``-vector ``w``; the gain of deltas ``d`` is ``w . d``
            (weighted sum); for a Pareto objective the signs over ``k`` (a weighted sum
            that only the baselines' single-objective fallbacks use).
        constraint_matrix: ``c x m`` matrix ``G``.
        constraint_bounds: ``c``-vector ``b``; feasible iff ``G d >= b``.
        pareto_index: ``k`` long tensor of the Pareto metrics' columns; empty for a
            weighted sum.
        pareto_signs: ``k`` signs of the Pareto metrics.
        preference: ``k`` shares of the user's preference (equal when unset).
        preference_given: Whether the user gave a preference.
    """

    metrics: tuple[str, ...]
    objective_weights: torch.Tensor
    constraint_matrix: torch.Tensor
    constraint_bounds: torch.Tensor
    pareto_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    pareto_signs: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=DTYPE))
    preference: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=DTYPE))
    preference_given: bool = False

    @classmethod
    def from_config(cls, config: TuningConfig) -> Outcomes:
        """Build the tensors of a tuning config."""
        metrics = config.metrics
        index = {m: i for i, m in enumerate(metrics)}
        objective = config.objective
        weights = torch.zeros(len(metrics), dtype=DTYPE)
        if objective.is_pareto:
            for metric, sign in objective.signs.items():
                weights[index[metric]] = sign
        else:
            for metric, weight in objective.weights.items():
                weights[index[metric]] = objective.sign * float(weight)
        rows = torch.zeros(len(config.constraints), len(metrics), dtype=DTYPE)
        bounds = torch.zeros(len(config.constraints), dtype=DTYPE)
        for i, spec in enumerate(config.constraints):
            rows[i, index[spec.metric]] = spec.sense
            bounds[i] = spec.sense * spec.bound
        if not objective.is_pareto:
            return cls(metrics, weights, rows, bounds)
        shares = objective.preference_shares
        return cls(metrics, weights, rows, bounds,
                   pareto_index=torch.tensor([index[m] for m in objective.pareto]),
                   pareto_signs=torch.tensor([objective.signs[m] for m in objective.pareto],
                                             dtype=DTYPE),
                   preference=torch.tensor([shares[m] for m in objective.pareto], dtype=DTYPE),
                   preference_given=objective.preference is not None)

    @property
    def is_pareto(self) -> bool:
        """True for a Pareto objective."""
        return self.pareto_index.numel() > 0

    def _chebyshev_scale(self) -> torch.Tensor:
        """``k`` factors ``s_i / (k lam_i)`` of the user's preference."""
        return self.pareto_signs / (self.preference * self.preference.numel())

    def gain(self, deltas: torch.Tensor) -> torch.Tensor:
        """Gain of deltas ``... x m``; returns ``...``.

        ``w . d`` for a weighted sum; the weighted Chebyshev value at the user's
        preference (equal shares when none) for a Pareto objective.
        """
        if not self.is_pareto:
            return deltas @ self.objective_weights
        return (deltas[..., self.pareto_index] * self._chebyshev_scale()).amin(dim=-1)

    def thompson_objective(self, seed: int) -> torch.Tensor | ChebyshevDraws:
        """The objective Thompson sampling scores draws with.

        Args:
            seed: Seed of the per-draw preferences (Pareto objectives).

        Returns:
            The weights ``w`` of a weighted sum, or a :class:`ChebyshevDraws` whose
            per-draw preferences lie near the user's (uniform over the simplex when none
            was given).
        """
        if not self.is_pareto:
            return self.objective_weights
        return ChebyshevDraws(self.pareto_index, self.pareto_signs,
                              self.preference if self.preference_given else None,
                              int(seed), len(self.metrics))

    def violation(self, deltas: torch.Tensor) -> torch.Tensor:
        """Total constraint shortfall ``sum max(0, b - G d)`` of deltas ``... x m``."""
        if self.constraint_matrix.shape[0] == 0:
            return torch.zeros(deltas.shape[:-1], dtype=deltas.dtype)
        slack = deltas @ self.constraint_matrix.T - self.constraint_bounds
        return torch.clamp(-slack, min=0).sum(dim=-1)

    def gain_posterior(
        self, mean: torch.Tensor, var: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and sd of the gain from per-metric means and variances.

        Args:
            mean: ``n x m`` posterior means of the metric deltas.
            var: ``n x m`` posterior variances (independent metrics).

        Returns:
            ``(gain_mean, gain_sd)``, each an ``n``-vector. For a Pareto objective the
            mean is the Chebyshev value of the mean deltas and the sd is that of its
            binding (smallest) term, ``sd_i |s_i| / (k lam_i)`` (the delta method).
        """
        if not self.is_pareto:
            gain_mean = mean @ self.objective_weights
            gain_var = var.clamp_min(0) @ (self.objective_weights**2)
            return gain_mean, gain_var.sqrt()
        scale = self._chebyshev_scale()
        terms = mean[:, self.pareto_index] * scale
        gain_mean, binding = terms.min(dim=-1)
        sd = var[:, self.pareto_index].clamp_min(0).sqrt() * scale.abs()
        return gain_mean, sd.gather(1, binding.unsqueeze(1)).squeeze(1)

    def p_feasible(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """Posterior probability that every constraint holds.

        Args:
            mean: ``n x m`` posterior means.
            var: ``n x m`` posterior variances.

        Returns:
            An ``n``-vector of probabilities (1 when there are no constraints).
        """
        if self.constraint_matrix.shape[0] == 0:
            return torch.ones(mean.shape[0], dtype=mean.dtype)
        slack_mean = mean @ self.constraint_matrix.T - self.constraint_bounds
        slack_sd = (var.clamp_min(0) @ (self.constraint_matrix**2).T).sqrt().clamp_min(1e-12)
        normal = torch.distributions.Normal(torch.zeros((), dtype=mean.dtype),
                                            torch.ones((), dtype=mean.dtype))
        return normal.cdf(slack_mean / slack_sd).prod(dim=-1)
