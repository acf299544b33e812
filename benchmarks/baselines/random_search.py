"""Random search: uniform points of the search cube, best observed arm as readout."""

from __future__ import annotations

import torch

from benchmarks.baselines.common import DTYPE, BatchedOptimizer
from hz_ray.records import Recommendation


class RandomSearchOptimizer(BatchedOptimizer):
    """Arms drawn uniformly (scrambled Sobol, seeded per batch) from the unit cube.

    Readout: the best *observed* arm, i.e. the largest observed gain among arms
    with at least ``recommend_min_hours`` hours whose observed deltas meet every
    constraint (point estimates, no model); the control when none gains.
    """

    readout_rule = "best observed: max observed gain, observed deltas meet the constraints"

    def _generate(self, k: int, live_arms: list[str], seed: int) -> torch.Tensor:
        engine = torch.quasirandom.SobolEngine(self.space.dim, scramble=True, seed=seed % 2**31)
        return engine.draw(k, dtype=DTYPE)

    def recommend(self) -> Recommendation:
        """Best observed feasible arm (see the class docstring)."""
        return self.recommend_best_observed()
