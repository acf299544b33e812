"""The Pareto readout's views: pareto.png, the text table, arm_gain and the HTML section.

Every :class:`ParetoReadout` here is built by hand, so no job or GP fit runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hz_ray.config import config_from_mapping
from hz_ray.readout.folder import ArmRow, RunRecord, RunTotals
from hz_ray.readout.html import render_html, write_html
from hz_ray.readout.pareto_plot import _staircase, plot_pareto
from hz_ray.readout.plots import PARETO_PNG, write_pngs
from hz_ray.readout.text import arm_gain, metric_rows, objective_text, pareto_lines
from hz_ray.records import (
    CONTROL_ARM_ID,
    ArmEstimate,
    MetricPosterior,
    ParetoReadout,
    Recommendation,
)
from tests.conftest import small_config_mapping

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JOB = "pareto-job"


def pareto_config(names=("views", "watch_time"), preference=None, direction="maximize"):
    objective = {"pareto": list(names), "direction": direction}
    if preference is not None:
        objective["preference"] = preference
    return config_from_mapping(small_config_mapping(objective=objective))


def chebyshev(deltas, signs, shares):
    k = len(deltas)
    return min(signs[m] * d / (k * shares[m]) for m, d in deltas.items())


def rec(arm_id, deltas, signs, shares, sd=0.002, p=0.99):
    value = chebyshev(deltas, signs, shares) if arm_id != CONTROL_ARM_ID else 0.0
    return Recommendation(arm_id, {"w_click": 1.1}, value, value - 1.645 * sd, p,
                          metrics={m: MetricPosterior(d, sd) for m, d in deltas.items()})


def readout(names, signs, shares, front, others=(), preferred=None):
    """A readout of ``front`` (lists of deltas in ``names`` order) and dominated ``others``."""
    def make(i, values):
        return rec(f"{JOB}.s00-{i:04d}", dict(zip(names, values, strict=True)), signs, shares)

    front_recs = tuple(make(i, v) for i, v in enumerate(front))
    other_recs = tuple(make(100 + i, v) for i, v in enumerate(others))
    if preferred is None:
        best = max(front_recs, key=lambda r: r.objective_mean, default=None)
        preferred = best if best is not None and best.objective_mean > 0 else \
            rec(CONTROL_ARM_ID, dict.fromkeys(names, 0.0), signs, shares)
    return ParetoReadout(tuple(names), signs, shares, front_recs, front_recs + other_recs,
                         preferred)


@pytest.fixture
def two():
    names = ("views", "watch_time")
    signs = {"views": 1.0, "watch_time": 1.0}
    shares = {"views": 0.7, "watch_time": 0.3}
    return readout(names, signs, shares,
                   front=[(0.002, 0.020), (0.010, 0.012), (0.018, 0.004)],
                   others=[(0.001, 0.005), (0.008, 0.002), (-0.003, 0.001)])


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_two_objectives_give_a_png(two, tmp_path):
    path = plot_pareto(two, tmp_path / "p.png", JOB)
    assert path == tmp_path / "p.png" and is_png(path)


def test_three_objectives_with_a_minimised_one_give_a_grid_png(tmp_path):
    names = ("views", "watch_time", "latency")
    signs = {"views": 1.0, "watch_time": 1.0, "latency": -1.0}
    shares = {"views": 0.5, "watch_time": 0.3, "latency": 0.2}
    ro = readout(names, signs, shares,
                 front=[(0.01, 0.002, -0.001), (0.004, 0.01, -0.002), (0.006, 0.006, -0.004)],
                 others=[(0.002, 0.001, 0.001)])
    assert ro.preferred.arm_id != CONTROL_ARM_ID
    import matplotlib.image as mpimg

    one = mpimg.imread(plot_pareto(ro, tmp_path / "three.png", JOB))
    two_d = readout(names[:2], {m: signs[m] for m in names[:2]},
                    {"views": 0.6, "watch_time": 0.4}, front=[(0.01, 0.002), (0.004, 0.01)])
    other = mpimg.imread(plot_pareto(two_d, tmp_path / "two.png", JOB))
    assert is_png(tmp_path / "three.png")
    assert one.shape[1] > other.shape[1]  # three panels side by side


def test_an_empty_front_gives_a_png_that_says_so(tmp_path):
    signs = {"views": 1.0, "watch_time": -1.0}
    shares = {"views": 0.5, "watch_time": 0.5}
    ro = readout(("views", "watch_time"), signs, shares, front=[])
    assert ro.preferred.is_control
    assert is_png(plot_pareto(ro, tmp_path / "empty.png"))


def test_a_front_without_a_positive_chebyshev_value_prefers_the_control(tmp_path):
    signs = {"views": 1.0, "watch_time": 1.0}
    shares = {"views": 0.5, "watch_time": 0.5}
    ro = readout(("views", "watch_time"), signs, shares, front=[(0.01, -0.002), (-0.001, 0.01)])
    assert ro.preferred.is_control
    assert is_png(plot_pareto(ro, tmp_path / "ctl.png", JOB))
    lines = pareto_lines(pareto_config(preference=shares), ro, JOB)
    marked = [line for line in lines if line.startswith("*")]
    assert len(marked) == 1 and "control" in marked[0]
    assert "control" in lines[-1]


def test_the_staircase_turns_at_the_inner_corners():
    xs, ys = _staircase([(3.0, 1.0), (1.0, 3.0), (2.0, 2.0), (0.5, 0.5)], 1.0, 1.0)
    assert list(zip(xs, ys, strict=True)) == [(1.0, 3.0), (1.0, 2.0), (2.0, 2.0), (2.0, 1.0),
                                              (3.0, 1.0)]
    # a minimised y: lower is better, so (1, -3) is the best y
    xs, ys = _staircase([(3.0, -1.0), (1.0, -3.0)], 1.0, -1.0)
    assert list(zip(xs, ys, strict=True)) == [(1.0, -3.0), (1.0, -1.0), (3.0, -1.0)]


def test_pareto_lines_mark_the_preferred_arm_and_show_each_objective(two):
    config = pareto_config(preference={"views": 0.7, "watch_time": 0.3})
    lines = pareto_lines(config, two, JOB)
    text = "\n".join(lines)
    assert "views (higher is better)" in text and "watch_time (higher is better)" in text
    marked = [line for line in lines if line.startswith("*")]
    assert len(marked) == 1
    label = two.preferred.arm_id.removeprefix(f"{JOB}.")
    assert label in marked[0]
    assert two.preferred.arm_id == f"{JOB}.s00-0001"  # (1.0%, 1.2%) at 0.7 / 0.3
    # the row shows each objective's delta +- its 95% interval, P(feasible), the value
    assert "+1.00% +- 0.39%" in marked[0] and "+1.20% +- 0.39%" in marked[0]
    assert "0.990" in marked[0]
    assert f"{100 * two.preferred.objective_mean:+.2f}%" in marked[0]
    assert sum(1 for line in lines if "s00-0" in line and line[2:].startswith("s00")) == 3


def test_an_empty_front_in_text():
    config = pareto_config()
    ro = readout(("views", "watch_time"), config.objective.signs,
                 config.objective.preference_shares, front=[])
    text = "\n".join(pareto_lines(config, ro))
    assert "No arm qualifies" in text and "control" in text


def test_objective_text_and_metric_roles_of_a_pareto_config(two):
    config = pareto_config(preference={"views": 0.7, "watch_time": 0.3})
    assert objective_text(config) == ("Pareto trade-off of views (maximize) and watch_time "
                                      "(maximize), preference views 70% / watch_time 30%")
    three = pareto_config(("views", "watch_time", "likes"),
                          direction={"views": "maximize", "watch_time": "maximize",
                                     "likes": "minimize"})
    assert objective_text(three) == ("Pareto trade-off of views (maximize), watch_time "
                                     "(maximize) and likes (minimize), equal preference")
    roles = {r.metric: r.role for r in metric_rows(config, two.preferred)}
    assert roles["views"] == roles["watch_time"] == "objective"


def test_arm_gain_of_a_pareto_config_is_the_chebyshev_value_of_the_arms_own_data():
    config = pareto_config(("views", "watch_time"), preference={"views": 0.7, "watch_time": 0.3},
                           direction={"views": "maximize", "watch_time": "minimize"})
    est = {"views": ArmEstimate(0.014, 0.002, 1000, 5),
           "watch_time": ArmEstimate(-0.003, 0.004, 1000, 5), "likes": ArmEstimate(0, 1, 1, 1)}
    mean, sem = arm_gain(config, est)
    # views: 0.014 / (2 * 0.7) = 0.01; watch_time: 0.003 / (2 * 0.3) = 0.005 (the min)
    assert mean == pytest.approx(0.005)
    assert sem == pytest.approx(0.004 / 0.6)
    est["watch_time"] = ArmEstimate(-0.03, 0.004, 1000, 5)  # now views is the min
    mean, sem = arm_gain(config, est)
    assert mean == pytest.approx(0.01) and sem == pytest.approx(0.002 / 1.4)
    del est["watch_time"]
    assert arm_gain(config, est) is None
    # a weighted-sum config is unchanged
    plain = config_from_mapping(small_config_mapping())
    assert arm_gain(plain, est) == (pytest.approx(0.014), pytest.approx(0.002))


def record_of(config, tmp_path: Path) -> RunRecord:
    arm = ArmRow(f"{JOB}.s00-0001", 0, {"w_click": 1.1}, 0, "stopped", 8, "max_hours", 8,
                 10_000, {"views": ArmEstimate(0.01, 0.002, 10_000, 8),
                          "watch_time": ArmEstimate(0.012, 0.002, 10_000, 8)})
    rec = Recommendation(arm.arm_id, arm.params, 0.0086, 0.005, 0.99,
                         {"views": MetricPosterior(0.01, 0.002),
                          "watch_time": MetricPosterior(0.012, 0.002),
                          "likes": MetricPosterior(0.0, 0.001)})
    totals = RunTotals(0, 9, 10, 1, 0, 10_000, 20, 0)
    return RunRecord(tmp_path / "run", JOB, "pareto-test", 0.0, config, {}, ((9, rec),),
                     (arm,), totals)


def test_html_has_the_pareto_section_and_figure(two, tmp_path):
    config = pareto_config(preference={"views": 0.7, "watch_time": 0.3})
    record = record_of(config, tmp_path)
    pngs = write_pngs(record, tmp_path / "out", pareto=two)
    names = [p.name for p in pngs]
    assert PARETO_PNG in names and names[-1] == "arms.png"
    assert is_png(tmp_path / "out" / PARETO_PNG)
    page = write_html(record, tmp_path / "out", pngs, pareto=two).read_text()
    assert '<h2 id="pareto-front">Pareto front</h2>' in page
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert 'alt="The Pareto front:' in page
    for front_rec in two.front:
        assert f"<code>{front_rec.arm_id.removeprefix(JOB + '.')}</code>" in page
    assert '<tr class="picked"><td class="l">&#9733; <code>s00-0001</code>' in page
    assert "Pareto trade-off of views (maximize)" in page
    assert "+1.20% &plusmn; 0.39%" in page
    # the arms table's objective column is the Chebyshev value of the arm's own data
    gain = min(0.01 / 1.4, 0.012 / 0.6)
    assert f"{100 * gain:+.2f}% &plusmn;" in page and math.isfinite(gain)


def test_without_a_pareto_readout_nothing_changes(two, tmp_path):
    config = pareto_config()
    record = record_of(config, tmp_path)
    pngs = write_pngs(record, tmp_path / "out")
    assert PARETO_PNG not in [p.name for p in pngs]
    page = render_html(record, pngs)
    assert "Pareto front</h2>" not in page
    empty = readout(("views", "watch_time"), config.objective.signs,
                    config.objective.preference_shares, front=[])
    page = render_html(record, (), pareto=empty)
    assert 'id="pareto-empty"' in page and 'id="pareto-preferred"' not in page
