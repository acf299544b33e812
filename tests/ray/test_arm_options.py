"""Arm options on the Ray driver: the same control plane as run_local, so the same rules."""

from __future__ import annotations

import dataclasses

import pytest

from actors import run_on_ray
from hz_ray.sim import SimulatedFactory
from tests.support import world_config


@pytest.mark.ray
def test_synchronous_batches_on_ray(ray_session, tmp_path):
    base = world_config("sync-ray", slots=3, max_hours=4)
    config = dataclasses.replace(base, arms=dataclasses.replace(
        base.arms, synchronous=True, guardrail_stop_probability=0.45))
    result = run_on_ray(config, SimulatedFactory("smooth", seed=1), hours=12,
                        run_dir=tmp_path, seconds_per_hour=0.5)
    arms = list(result.arms.values())
    # Some arm ended early: asynchronous slots would have refilled at once.
    assert any(a.stop_reason == "guardrail" for a in arms)
    batches = sorted({a.launched_hour for a in arms})
    assert len(batches) >= 3  # 12 hours of batches of at most 4 hours, each waiting
    for earlier in arms:
        for later in arms:
            if earlier.launched_hour < later.launched_hour:
                assert earlier.stopped_hour is not None
                assert earlier.stopped_hour <= later.launched_hour, (earlier, later)
    assert all(sum(a.launched_hour == h for a in arms) == 3 for h in batches)


@pytest.mark.ray
def test_contender_stops_on_ray(ray_session, tmp_path):
    base = world_config("contender-ray", slots=3, max_hours=8, recommend_min_hours=2)
    config = dataclasses.replace(base, arms=dataclasses.replace(
        base.arms, contender_stop_share=0.2))
    result = run_on_ray(config, SimulatedFactory("smooth", seed=2), hours=12,
                        run_dir=tmp_path, seconds_per_hour=0.5)
    stopped = [a for a in result.arms.values() if a.stop_reason == "not_contender"]
    assert stopped  # arms that could not win were ended before max_hours
    for arm in stopped:
        assert arm.stopped_hour - arm.launched_hour < config.arms.max_hours
        assert arm.hours_observed >= config.optimizer.recommend_min_hours
