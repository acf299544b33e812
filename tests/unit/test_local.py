"""run_local end to end on a simulated world: determinism, learning, resume, readout."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest

from hz_ray.backends import SimulatedBackend, make_world
from hz_ray.clock import SimClock
from hz_ray.config import config_from_mapping
from hz_ray.local import run_local
from hz_ray.records import arm_key_in_job

HOURS = 16


def smooth_job(**arms):
    world = make_world("smooth")
    raw = world.config_mapping()
    raw.update(name="local-test",
               arms={"slots": 4, "min_hours": 3, "max_hours": 6, **arms},
               optimizer={"seed": 3, "bucket_size": 32, "thompson_draws": 300, "proposals": 256,
                          "hold_fixed": "w_click"})
    return world, config_from_mapping(raw)


def run(tmp_path, name, hours=HOURS, resume=False, clock=None, backend=None, seed=0):
    world, config = smooth_job()
    clock = clock or SimClock()
    backend = backend or SimulatedBackend(world, clock, seed=seed, traffic_per_arm=50_000)
    result = run_local(config, backend, clock=clock, hours=hours, run_dir=tmp_path / name,
                       resume=resume)
    return result, backend, clock


def comparable(result):
    """The run without its job id (arm ids differ only by it from run to run)."""
    return ([(h, arm_key_in_job(r.arm_id), r.objective_mean) for h, r in result.recommendations],
            {arm_key_in_job(a): (dict(s.params), s.launched_hour, s.stopped_hour, s.stop_reason)
             for a, s in result.arms.items()})


def test_same_seed_same_result_and_the_log_holds_every_record(tmp_path):
    first, backend, _ = run(tmp_path, "a")
    second, _, _ = run(tmp_path, "b")
    assert comparable(first) == comparable(second)
    assert len(first.recommendations) == HOURS
    log = pq.read_table(first.log_path).to_pylist()
    kinds = {e["kind"] for e in log}
    assert {"arm_registered", "delta_accepted", "suggestion"} <= kinds
    accepted = [e for e in log if e["kind"] == "delta_accepted"]
    assert len(accepted) == len({(e["arm_id"], e["metric"], e["hour"]) for e in accepted})
    registered = {e["arm_id"] for e in log if e["kind"] == "arm_registered"}
    assert registered == set(first.arms)


def test_learns_a_feasible_lift_on_the_smooth_world(tmp_path):
    result, backend, _ = run(tmp_path, "learn", hours=30)
    truth = backend.true_deltas(result.recommendation.params)
    assert not result.recommendation.is_control
    assert truth["views"] > 0.003
    assert truth["likes"] >= -0.005 - 1e-9


def test_a_job_that_ended_stops_its_arms_and_resumes_with_fresh_ones(tmp_path):
    """An ended job left nothing live; extending it later launches new arms from its posterior.

    (Resuming after a SIGKILL, which re-adopts the arms still live, is checked
    in a child process by tests/unit/test_kill_points.py.)
    """
    clock = SimClock()
    world, _ = smooth_job()
    backend = SimulatedBackend(world, clock, seed=0, traffic_per_arm=50_000)
    first, _, _ = run(tmp_path, "ended", hours=9, clock=clock, backend=backend)
    live_at_end = [a for a, s in first.arms.items() if s.stopped_hour is None]
    assert live_at_end, "the job had live arms at its end"
    log = pq.read_table(first.log_path).to_pylist()
    last_state = {e["arm_id"]: e["state"] for e in log if e["kind"] == "arm_state"}
    assert set(last_state.values()) == {"stopped"}
    assert all(backend.stopped_at(a) is not None for a in live_at_end)
    resumed, _, _ = run(tmp_path, "ended", hours=HOURS, resume=True, clock=clock,
                        backend=backend)
    assert len(resumed.recommendations) == HOURS
    assert {a.launched_hour for a in resumed.arms.values()} >= {9}
    log = pq.read_table(resumed.log_path).to_pylist()
    accepted = [(e["arm_id"], e["metric"], e["hour"]) for e in log if e["kind"] == "delta_accepted"]
    assert len(accepted) == len(set(accepted)), "a record was counted twice across the restart"
    last_state = {e["arm_id"]: e["state"] for e in log if e["kind"] == "arm_state"}
    assert set(last_state.values()) == {"stopped"} and set(last_state) == set(resumed.arms)


def test_synchronous_mode_waits_for_the_whole_batch(tmp_path):
    world, config = smooth_job(synchronous=True)
    config = dataclasses.replace(config)
    clock = SimClock()
    backend = SimulatedBackend(world, clock, seed=0)
    result = run_local(config, backend, clock=clock, hours=14, run_dir=tmp_path / "sync")
    launches = sorted({a.launched_hour for a in result.arms.values()})
    assert launches[0] == 0
    first_batch_end = max(a.stopped_hour for a in result.arms.values() if a.launched_hour == 0)
    assert launches[1] >= first_batch_end


def test_bad_hours_is_a_typed_error(tmp_path):
    world, config = smooth_job()
    clock = SimClock()
    with pytest.raises(Exception, match="'hours' must be an integer >= 1"):
        run_local(config, SimulatedBackend(world, clock, seed=0), clock=clock, hours=0)


def test_contender_stops_end_arms_that_cannot_win_after_min_hours(tmp_path):
    world, config = smooth_job(contender_stop_share=0.05)
    config = dataclasses.replace(
        config, optimizer=dataclasses.replace(config.optimizer, recommend_min_hours=4))
    off = dataclasses.replace(
        config, arms=dataclasses.replace(config.arms, contender_stop_share=0.0))
    arms_on = arms_off = 0
    for seed in range(3):
        clock = SimClock()
        backend = SimulatedBackend(world, clock, seed=seed, traffic_per_arm=50_000)
        result = run_local(config, backend, clock=clock, hours=HOURS, seed=seed,
                           run_dir=tmp_path / f"c{seed}")
        reasons = [a.stop_reason for a in result.arms.values()]
        assert "not_contender" in reasons
        for arm in result.arms.values():
            if arm.stop_reason == "not_contender":
                assert arm.stopped_hour - arm.launched_hour >= config.arms.min_hours
                assert arm.hours_observed >= config.optimizer.recommend_min_hours
        clock_off = SimClock()
        backend_off = SimulatedBackend(world, clock_off, seed=seed, traffic_per_arm=50_000)
        baseline = run_local(off, backend_off, clock=clock_off, hours=HOURS, seed=seed,
                             run_dir=tmp_path / f"off{seed}")
        assert "not_contender" not in {a.stop_reason for a in baseline.arms.values()}
        arms_on, arms_off = arms_on + len(result.arms), arms_off + len(baseline.arms)
    # Freed slots take fresh samples: more arms run in the same hours (summed over seeds).
    assert arms_on > arms_off
