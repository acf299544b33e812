"""The readout from a run folder alone, checked against the RunResult of the job that wrote it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.dataset as ds
import pytest
from filelock import FileLock, Timeout

from hz_ray.backends import SimulatedBackend, make_world
from hz_ray.clock import SimClock
from hz_ray.config import config_from_mapping
from hz_ray.errors import HzRayError, StateError
from hz_ray.local import run_local
from hz_ray.readout import build_report, load_run, readout_text, replay_run, write_pngs
from hz_ray.readout.replay import replay_readout, replayed
from hz_ray.readout.text import metric_rows
from hz_ray.run_folder import JOB_FILE, LOCK_FILE

HOURS = 14


def readout_job(name: str):
    """A small smooth-world job that finds a feasible lift within 14 hours (~2 s)."""
    world = make_world("smooth")
    raw = world.config_mapping()
    raw.update(name=name, arms={"slots": 2, "min_hours": 2, "max_hours": 6},
               optimizer={"seed": 3, "bucket_size": 32, "thompson_draws": 300,
                          "proposals": 256, "hold_fixed": "w_click", "recommend_min_hours": 3})
    clock = SimClock()
    return config_from_mapping(raw), SimulatedBackend(world, clock, seed=0,
                                                      traffic_per_arm=200_000), clock


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("readout") / "run"
    config, backend, clock = readout_job("readout-test")
    result = run_local(config, backend, clock=clock, hours=HOURS, run_dir=run_dir)
    assert not result.recommendation.is_control, "the job must end on a real arm"
    assert result.recommendations[0][1].is_control
    return run_dir, result, config


@pytest.fixture(scope="module")
def record(job):
    return load_run(job[0])


@contextlib.contextmanager
def holding_the_lock(run_dir):
    """Another process holds the folder's job lock for the block (a running job does)."""
    code = ("import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
            "lock.acquire(timeout=10); print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir / LOCK_FILE)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            FileLock(str(run_dir / LOCK_FILE)).acquire(timeout=0)
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def folder_files(path):
    return {p.relative_to(path): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*"))}


def test_recommendations_match_the_run(job, record):
    run_dir, result, _ = job
    assert [h for h, _ in record.recommendations] == [h for h, _ in result.recommendations]
    for (_, got), (_, want) in zip(record.recommendations, result.recommendations, strict=True):
        assert got.arm_id == want.arm_id
        assert got.params == pytest.approx(dict(want.params))
        assert got.objective_mean == pytest.approx(want.objective_mean, abs=1e-12)
        assert got.p_feasible == pytest.approx(want.p_feasible, abs=1e-12)
        assert {m: p.mean for m, p in got.metrics.items()} == pytest.approx(
            {m: p.mean for m, p in want.metrics.items()}, abs=1e-12)
    assert record.recommendation.arm_id == result.recommendation.arm_id
    assert json.loads((run_dir / JOB_FILE).read_text())["job_id"] == record.job_id
    assert all(arm_id.startswith(f"{record.job_id}.") for arm_id in result.arms)
    assert record.name == "readout-test"
    assert record.clock == {"kind": "simulated"}


def test_arms_and_totals_match_the_run(job, record):
    _, result, config = job
    assert [a.arm_id for a in record.arms] == list(result.arms)
    objective = next(iter(config.objective.weights))
    for row in record.arms:
        want = result.arms[row.arm_id]
        assert dict(row.params) == pytest.approx(dict(want.params))
        assert row.launched_hour == want.launched_hour
        assert row.hours_observed == want.hours_observed
        assert row.slot == int(row.arm_id.split(".s")[1][:2])
        if want.stop_reason is None:  # stopped after the result was made, at the job's end
            assert (row.stop_reason, row.stopped_hour) == ("job_end", HOURS - 1)
        else:
            assert (row.stop_reason, row.stopped_hour) == (want.stop_reason, want.stopped_hour)
        assert row.state == "stopped"
        # Units from the log's per-hour counts; the run's from its ledger aggregate.
        assert row.units == want.estimates[objective].n
        for metric, est in want.estimates.items():
            assert row.estimates[metric].mean == pytest.approx(est.mean, abs=1e-12)
            assert row.estimates[metric].hours == est.hours
    reasons = {a.stop_reason for a in record.arms}
    assert len(reasons) >= 2, reasons
    totals = record.totals
    assert (totals.first_hour, totals.last_hour, totals.hours_run) == (0, HOURS - 1, HOURS)
    assert totals.arms_launched == len(result.arms) and totals.arms_live == 0
    assert totals.units == sum(a.estimates[objective].n for a in result.arms.values())
    assert totals.deltas_accepted == sum(e.hours for a in result.arms.values()
                                         for e in a.estimates.values())
    assert totals.deltas_rejected == result.rejected


def test_text_names_the_pick_its_weights_and_every_metric(job, record):
    _, result, config = job
    text = readout_text(record)
    rec = result.recommendation
    assert f"Recommended arm: {rec.arm_id}" in text
    for name, value in rec.params.items():
        assert any(name in line and f"{value:.4g}" in line for line in text.splitlines())
    for metric in config.metrics:
        assert any(line.startswith(metric) for line in text.splitlines()), metric
    assert ">= -0.50%" in text
    assert f"{record.totals.units:,} test units over {len(result.arms)} arms" in text
    rows = {r.metric: r for r in metric_rows(config, rec)}
    likes = rows["likes"]  # the guardrail: interval is mean +- 1.96 sd, P from the bound
    assert likes.low < likes.mean < likes.high
    assert likes.high - likes.low == pytest.approx(2 * 1.959964 * rec.metrics["likes"].sd)
    assert 0.0 < likes.p_feasible <= 1.0
    assert likes.p_feasible >= rec.p_feasible - 1e-12  # one guardrail: equal to the joint P
    assert rows["objective"].low < rec.objective_lcb < rec.objective_mean
    control = result.recommendations[0][1]
    assert "keep the production weights" in readout_text(record, control)


def test_replay_rebuilds_the_final_recommendation_without_writing(job):
    run_dir, result, _ = job
    before = folder_files(run_dir)
    with holding_the_lock(run_dir):  # as if the job were still running
        rec = replay_run(run_dir)
        again = replayed(run_dir, use_checkpoint=True)
        text = replay_readout(run_dir)
        load_run(run_dir)
    assert folder_files(run_dir) == before
    want = result.recommendation
    assert rec.arm_id == want.arm_id
    assert rec.objective_mean == pytest.approx(want.objective_mean, abs=0.1 * want.objective_mean)
    assert again.from_checkpoint
    assert again.recommendation.arm_id == want.arm_id
    assert again.recommendation.objective_mean == pytest.approx(want.objective_mean, abs=1e-6)
    assert f"Recommended arm: {want.arm_id}" in text and "(the same pick)" in text


def test_pngs_are_real_images_with_content(record, tmp_path):
    pngs = write_pngs(record, tmp_path / "png")
    assert [p.name for p in pngs] == ["objective.png", "guardrails.png", "arms.png"]
    import matplotlib.image as mpimg

    for path in pngs:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = mpimg.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 400
        rgb = image[..., :3].reshape(-1, 3)
        assert rgb.std() > 0.05
        assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 50
    tall = mpimg.imread(pngs[2]).shape[0]
    few = dataclasses.replace(record, arms=record.arms[:2])
    assert mpimg.imread(write_pngs(few, tmp_path / "few")[-1]).shape[0] < tall


def test_build_report_writes_into_the_folder_by_default(job, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(job[0], copy)
    files = build_report(copy)
    assert files.html == copy / "report" / "report.html"
    assert [p.parent for p in files.pngs] == [copy / "report"] * 3
    assert files.text_file.read_text().strip() == files.text.strip()
    assert job[1].recommendation.arm_id in files.html.read_text()
    assert load_run(copy).totals == load_run(job[0]).totals  # the report is not a job file


def test_a_folder_without_a_job_is_a_typed_error(tmp_path):
    with pytest.raises(StateError) as missing:
        load_run(tmp_path / "nowhere")
    assert "run_dir" in missing.value.message and missing.value.hint
    empty = tmp_path / "empty"
    empty.mkdir()
    for call in (load_run, replay_run, build_report):
        with pytest.raises(StateError) as exc:
            call(empty)
        assert isinstance(exc.value, HzRayError) and "job.json" in str(exc.value)
    assert list(empty.iterdir()) == []  # nothing was created there


def test_a_job_without_its_config_reads_it_from_the_log(job, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(job[0], copy)
    (copy / "config.json").unlink()
    assert load_run(copy).config == job[2]
    started = ds.dataset(copy / "log").to_table().filter(
        ds.field("kind") != "job_started")
    shutil.rmtree(copy / "log")
    (copy / "log").mkdir()
    import pyarrow.parquet as pq

    pq.write_table(started, copy / "log" / "part-000000000000.parquet")
    with pytest.raises(StateError, match="config"):
        load_run(copy)
