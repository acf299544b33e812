from __future__ import annotations

import torch

from hz_ray.config import load_config
from hz_ray.outcomes import Outcomes
from tests.conftest import small_config_mapping


def make_outcomes():
    raw = small_config_mapping(
        objective={"weights": {"views": 1.0, "watch_time": 0.5}},
        constraints=[{"metric": "likes", "min_delta": -0.005},
                     {"metric": "watch_time", "max_delta": 0.03}],
    )
    return Outcomes.from_config(load_config(raw))


def test_tensors_follow_metric_order():
    out = make_outcomes()
    assert out.metrics == ("views", "watch_time", "likes")
    assert out.objective_weights.tolist() == [1.0, 0.5, 0.0]
    assert out.constraint_matrix.tolist() == [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]
    assert out.constraint_bounds.tolist() == [-0.005, -0.03]


def test_violation_is_the_total_shortfall():
    out = make_outcomes()
    d = torch.tensor([[0.01, 0.05, -0.01], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(out.violation(d), torch.tensor([0.005 + 0.02, 0.0], dtype=torch.float64))


def test_p_feasible_and_gain_match_monte_carlo():
    out = make_outcomes()
    mean = torch.tensor([[0.02, 0.028, -0.004]], dtype=torch.float64)
    var = torch.tensor([[1e-4, 4e-6, 1e-6]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    draws = mean + var.sqrt() * torch.randn(400_000, 3, generator=gen, dtype=torch.float64)
    feasible = (out.violation(draws) == 0).double().mean()
    gain = out.gain(draws)
    p = out.p_feasible(mean, var)[0]
    gain_mean, gain_sd = out.gain_posterior(mean, var)
    assert abs(float(p) - float(feasible)) < 0.005
    assert abs(float(gain_mean[0]) - float(gain.mean())) < 1e-4
    assert abs(float(gain_sd[0]) - float(gain.std())) < 1e-4


def test_minimize_flips_the_gain():
    raw = small_config_mapping(objective={"metric": "views", "direction": "minimize"})
    out = Outcomes.from_config(load_config(raw))
    assert out.objective_weights[0] == -1.0
