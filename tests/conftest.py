"""Shared fixtures: a small, valid tuning config."""

from __future__ import annotations

import pytest

from hz_ray.config import config_from_mapping


def small_config_mapping(**overrides):
    raw = {
        "name": "test-job",
        "parameters": [
            {"name": "w_click", "low": 1 / 3, "high": 3.0, "scale": "log", "base": 1.0},
            {"name": "w_like", "low": 1 / 3, "high": 3.0, "scale": "log", "base": 1.0},
            {"name": "w_share", "low": 0.0, "high": 2.0, "scale": "linear", "base": 1.0},
        ],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": -0.005}],
        "arms": {"slots": 4, "min_hours": 3, "max_hours": 12},
        "optimizer": {"seed": 0, "bucket_size": 32, "thompson_draws": 200, "proposals": 256},
    }
    raw.update(overrides)
    return raw


@pytest.fixture
def small_config():
    return config_from_mapping(small_config_mapping())


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_torch():
    """GP fits are small; on 2 busy cores one intra-op thread is much faster."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
