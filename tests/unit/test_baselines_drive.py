"""Baselines run through the same control plane: their batches are what gets launched."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hz_ray.clock import SimClock
from hz_ray.local import run_local
from hz_ray.sim import SimulatedBackend
from tests.unit.test_local import smooth_job

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.baselines.common import BatchedOptimizer  # noqa: E402


class GridBaseline(BatchedOptimizer):
    """Batches of points on a known grid, so every launch can be traced to a batch."""

    batches: list[torch.Tensor] = []

    def _generate(self, k, live_arms, seed):
        start = sum(len(b) for b in GridBaseline.batches)
        points = torch.stack([torch.full((self.space.dim,), ((start + i) % 97 + 1) / 99.0,
                                         dtype=torch.float64) for i in range(k)])
        GridBaseline.batches.append(points)
        return points


def test_a_batch_baselines_points_are_the_arms_the_driver_launches(tmp_path):
    GridBaseline.batches = []
    world, config = smooth_job()
    clock = SimClock()
    result = run_local(config, SimulatedBackend(world, clock, seed=0), clock=clock, hours=10,
                       run_dir=tmp_path, optimizer_factory=GridBaseline)
    generated = torch.cat(GridBaseline.batches)
    space = GridBaseline(config).space
    launched = [space.encode(a.params) for a in result.arms.values()]
    assert len(launched) > config.arms.slots  # the slots were refilled
    for x in launched:  # every arm is a generated point (decoding clamps nothing here)
        assert float((generated - x).abs().max(dim=1).values.min()) < 1e-9
    # one batch for the slots free at hour 0, each of its points launched once
    first = GridBaseline.batches[0]
    assert len(first) == config.arms.slots
    at_zero = [x for x, a in zip(launched, result.arms.values(), strict=True)
               if a.launched_hour == 0]
    assert len(at_zero) == config.arms.slots
    for point in first:
        assert sum(float((point - x).abs().max()) < 1e-9 for x in at_zero) == 1
