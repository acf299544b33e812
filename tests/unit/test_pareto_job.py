"""A Pareto job end to end: run_local on a world with a real trade-off, then its readout."""

from __future__ import annotations

import torch

from hz_ray.backends import SimulatedBackend, make_world
from hz_ray.clock import SimClock
from hz_ray.config import config_from_mapping
from hz_ray.local import run_local
from hz_ray.readout.replay import replayed
from hz_ray.readout.report import build_report


def test_a_pareto_job_runs_and_its_readout_is_a_feasible_front_holding_the_pick(tmp_path):
    world = make_world("test_function:branin_currin")
    raw = world.config_mapping()
    assert set(raw["objective"]["pareto"]) == {"views", "watch_time"}
    raw["objective"]["preference"] = {"views": 0.6, "watch_time": 0.4}
    raw.update(name="pareto-job", arms={"slots": 4, "min_hours": 2, "max_hours": 6},
               optimizer={"seed": 1, "bucket_size": 32, "thompson_draws": 200,
                          "proposals": 256, "recommend_min_hours": 3})
    config = config_from_mapping(raw)
    clock = SimClock()
    backend = SimulatedBackend(world, clock, seed=0, traffic_per_arm=200_000)
    result = run_local(config, backend, clock=clock, hours=18, run_dir=tmp_path / "job")
    assert len(result.arms) > 8

    rebuilt = replayed(tmp_path / "job", use_checkpoint=True)
    readout = rebuilt.pareto
    assert readout is not None and readout.objectives == ("views", "watch_time")
    assert readout.preference == {"views": 0.6, "watch_time": 0.4}
    threshold = config.optimizer.feasibility_threshold
    assert all(r.p_feasible >= threshold for r in readout.qualified)
    assert len(readout.front) >= 2 and len(readout.qualified) >= len(readout.front)
    values = torch.tensor([[r.metrics["views"].mean, r.metrics["watch_time"].mean]
                           for r in readout.front], dtype=torch.float64)
    for i in range(values.shape[0]):  # no front arm dominates another
        better = (values >= values[i]).all(dim=1) & (values > values[i]).any(dim=1)
        assert not bool(better.any())
    assert list(values[:, 0]) == sorted(values[:, 0].tolist())
    assert readout.preferred.arm_id == rebuilt.recommendation.arm_id
    if not readout.preferred.is_control:
        assert readout.preferred.arm_id in {r.arm_id for r in readout.front}
        assert readout.preferred.objective_mean == max(r.objective_mean for r in readout.front)

    files = build_report(tmp_path / "job", tmp_path / "report")
    names = [png.name for png in files.pngs]
    assert "pareto.png" in names and (tmp_path / "report" / "pareto.png").stat().st_size > 0
    assert "Pareto trade-off of views (maximize) and watch_time (maximize)" in files.text
    html = files.html.read_text(encoding="utf-8")
    assert "Pareto front" in html
    for arm in readout.front:
        label = arm.arm_id.split(".", 1)[1]
        assert label in files.text and label in html
