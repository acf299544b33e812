"""The quality benchmark's yardstick and calibration scores, against closed forms."""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from hz_ray.records import MetricPosterior, Recommendation
from hz_ray.sim import BenchmarkProblem
from hz_ray.sim.realism import RealismConfig

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quality_certify import (  # noqa: E402
    Z95_ONE_SIDED,
    attach_yardsticks,
    calibration_rows,
    calibration_table,
    coverage,
    fill_yardsticks,
    pick_posterior,
    yardstick_key,
)


@pytest.mark.parametrize("mu, sd", [(0.0, 1.0), (0.73, 1.21), (-0.5, 0.6)])
def test_coverage_matches_the_normal_closed_form(mu, sd):
    z = np.random.default_rng(0).normal(mu, sd, 40_000)
    got = coverage(z.tolist())
    phi = NormalDist(mu, sd).cdf
    assert got["covered"] == pytest.approx(phi(1.959964) - phi(-1.959964), abs=0.01)
    assert got["above"] == pytest.approx(1 - phi(1.959964), abs=0.01)
    assert got["z_mean"] == pytest.approx(mu, abs=0.02)
    assert got["z_sd"] == pytest.approx(sd, abs=0.02)
    assert coverage([])["covered"] is None


def test_a_pick_record_recovers_the_sd_and_scores_the_truth():
    problem = BenchmarkProblem({"views": 1.0, "watch": 0.5}, {"likes": -0.01}, {})
    rec = Recommendation("a", {"w": 1.0}, objective_mean=0.02,
                         objective_lcb=0.02 - Z95_ONE_SIDED * 0.004, p_feasible=0.97,
                         metrics={"views": MetricPosterior(0.01, 0.002),
                                  "watch": MetricPosterior(0.02, 0.003),
                                  "likes": MetricPosterior(-0.002, 0.001)})
    truth = {"views": 0.012, "watch": 0.03, "likes": -0.0035}
    out = pick_posterior(48, rec, truth, problem)
    mean, sd, true_obj = out["objective"]
    assert sd == pytest.approx(0.004) and true_obj == pytest.approx(0.027)
    assert set(out["metrics"]) == {"likes"}  # guardrails only
    rows = calibration_rows([{"world": "w", "method": "hz-ray", "calibration": [out]}])
    assert rows[0]["setting"] == "default" and rows[0]["hours"] == 48
    assert rows[0]["objective"]["z_mean"] == pytest.approx((0.027 - 0.02) / 0.004)
    assert rows[0]["guardrails"]["z_mean"] == pytest.approx(-1.5)
    assert rows[0]["shortfall"] == pytest.approx((0.027 - 0.02) / 0.027)  # reads 26% low
    assert "+25.9%" in calibration_table(rows)


def test_yardsticks_are_computed_once_per_scenario_and_cached(tmp_path):
    calls = []

    def compute(world, seed, hours, slots, optimum, traffic):
        calls.append((world, seed, hours, slots, traffic))
        return {"certifiable_gain_pct": 2.0 + seed}

    runs = [{"world": "w", "seed": s, "hours": 72, "slots": 8, "traffic": 50_000,
             "gain_pct": 1.5, "best_ran_pct": 3.0, "method": m} for s in (0, 1) for m in ("a", "b")]
    optima = {"w:0": {"objective": 0.03}, "w:1": {"objective": 0.04}}
    path = tmp_path / "y.json"
    cache = fill_yardsticks(runs, optima, path, compute)
    assert sorted(calls) == [("w", 0, 72, 8, 50_000), ("w", 1, 72, 8, 50_000)]
    assert fill_yardsticks(runs, optima, path, compute) == cache and len(calls) == 2
    attach_yardsticks(runs, cache)
    assert [r["frac_yardstick"] for r in runs] == [0.75, 0.75, 0.5, 0.5]
    assert [r["best_ran_frac_yardstick"] for r in runs] == [1.5, 1.5, 1.0, 1.0]
    assert yardstick_key("w", 0, 72, 8, 50_000) in cache


def test_the_realistic_setting_adds_issue_15s_effects_to_the_base():
    paper = RealismConfig.paper()
    real = RealismConfig.realistic(paper)
    assert real.weekly_amplitude == paper.weekly_amplitude == 0.0  # the base kept
    assert (real.ramp_hours, real.late_fraction, real.late_max_hours) == (2.0, 0.05, 2)
    assert (real.duplicate_fraction, real.straggler_fraction,
            real.straggler_delay_hours) == (0.03, 0.15, 12)
    assert RealismConfig.realistic().seasonality and RealismConfig.realistic().weekly_amplitude > 0


def test_realistic_readings_arrive_3_to_5_hours_late_or_12_more_for_stragglers():
    from hz_ray.clock import SimClock
    from hz_ray.sim import SimulatedBackend, make_world

    world = make_world("test_function:branin", seed=0)
    clock = SimClock()
    backend = SimulatedBackend(world, clock, seed=1, reporting_delay_hours=3,
                               realism=RealismConfig.realistic())
    arms = [f"arm-{i}" for i in range(40)]
    for a in arms:
        backend.launch(a, world.base_params)
    first_seen: dict[tuple[str, int, str], int] = {}
    for now in range(1, 60):
        clock.advance(1)
        for a in arms:
            for r in backend.fetch(a, 0):
                first_seen.setdefault((a, r.hour, r.metric), now)
    lag = {k: seen - (k[1] + 1) for k, seen in first_seen.items() if k[1] < 30}
    straggler = {k[0] for k, v in lag.items() if v >= 12}
    assert 2 <= len(straggler) <= 12                       # 15% of 40 arms: 6 expected
    normal = [v for k, v in lag.items() if k[0] not in straggler]
    late = [v for k, v in lag.items() if k[0] in straggler]
    assert set(normal) <= {3, 4, 5} and set(late) <= {15, 16, 17}
    share_late = sum(v > 3 for v in normal) / len(normal)  # 5% of hours out of order
    assert 0.02 <= share_late <= 0.09, share_late
    copies = [len([r for r in backend.fetch(a, 0) if r.metric == world.metrics[0]])
              - len({r.hour for r in backend.fetch(a, 0)}) for a in arms]
    assert 0.005 <= sum(copies) / (len(arms) * 58) <= 0.07  # 3% published twice


def test_paired_differences_pair_seeds_within_each_world_not_across_worlds(tmp_path, capsys):
    import json

    from benchmarks.quality import paired

    def run(world, seed, gain):
        return {"method": "m", "world": world, "seed": seed, "hours": 72,
                "setting": "realistic", "traffic": 50_000, "gain_pct": gain,
                "online_cost_pp": 0.1, "trace": [[71, gain]]}

    # world w1: B is 1 point below A on every seed; world w2: 3 points above
    a = [run("w1", s, 2.0 + s) for s in range(3)] + [run("w2", s, 1.0) for s in range(3)]
    b = [run("w1", s, 1.0 + s) for s in range(3)] + [run("w2", s, 4.0) for s in range(3)]
    for tag, runs in (("a", a), ("b", b)):
        (tmp_path / f"quality-{tag}.json").write_text(json.dumps({"runs": runs}))
    assert paired("a:m", "b:m", tmp_path) == 0
    text = capsys.readouterr().out
    w1, w2 = text.split("w2, 72 h")
    assert "w1, 72 h, realistic setting, 50,000 users" in w1
    assert "over 3 paired seeds: +1.000 points" in w1
    assert "over 3 paired seeds: -3.000 points" in w2
