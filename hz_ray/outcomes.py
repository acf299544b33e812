"""The objective and constraints of a job as tensors over its metric deltas.

With ``m`` metrics in ``config.metrics`` order, a vector ``d`` of deltas has

- gain ``w . d`` with ``w = sign * objective weights`` (higher is better,
  whatever the user's direction), and
- feasibility ``G d >= b``, one row per constraint: ``+d_j >= min_delta`` or
  ``-d_j >= -max_delta``.

Posteriors of the metric GPs are independent, so the gain's posterior mean is
``w . mu`` and its variance ``(w**2) . var``, and ``P(feasible)`` is the
product of the per-constraint normal probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hz_ray.config import TuningConfig

DTYPE = torch.float64
Z95_ONE_SIDED = 1.6448536269514722


@dataclass(frozen=True)
class Outcomes:
    """Objective weights and constraint rows of a job.

    Attributes:
        metrics: Metric names, the column order of every ``... x m`` tensor.
        objective_weights: ``m``-vector ``w``; the gain of deltas ``d`` is ``w . d``.
        constraint_matrix: ``c x m`` matrix ``G``.
        constraint_bounds: ``c``-vector ``b``; feasible iff ``G d >= b``.
    """

    metrics: tuple[str, ...]
    objective_weights: torch.Tensor
    constraint_matrix: torch.Tensor
    constraint_bounds: torch.Tensor

    @classmethod
    def from_config(cls, config: TuningConfig) -> Outcomes:
        """Build the tensors of a tuning config."""
        metrics = config.metrics
        index = {m: i for i, m in enumerate(metrics)}
        weights = torch.zeros(len(metrics), dtype=DTYPE)
        for metric, weight in config.objective.weights.items():
            weights[index[metric]] = config.objective.sign * float(weight)
        rows = torch.zeros(len(config.constraints), len(metrics), dtype=DTYPE)
        bounds = torch.zeros(len(config.constraints), dtype=DTYPE)
        for i, spec in enumerate(config.constraints):
            rows[i, index[spec.metric]] = spec.sense
            bounds[i] = spec.sense * spec.bound
        return cls(metrics, weights, rows, bounds)

    def gain(self, deltas: torch.Tensor) -> torch.Tensor:
        """Gain ``w . d`` of deltas ``... x m``; returns ``...``."""
        return deltas @ self.objective_weights

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
            ``(gain_mean, gain_sd)``, each an ``n``-vector.
        """
        gain_mean = mean @ self.objective_weights
        gain_var = var.clamp_min(0) @ (self.objective_weights**2)
        return gain_mean, gain_var.sqrt()

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
