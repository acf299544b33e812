"""Parity: the same recorded readings through run_local and through the actors.

Both drivers run the same control plane with the same job id, so their arms
have the same ids and nothing is renamed.
"""

from __future__ import annotations

import math

import pytest

from actors import run_on_ray
from hz_ray.backends.recorded import RecordedBackend, RecordedFactory
from hz_ray.clock import SimClock
from hz_ray.ledger import Ledger
from hz_ray.local import run_local
from hz_ray.records import arm_id_for
from hz_ray.storage import EventLog, replay_into
from tests.support import canonical_publications, parity_config, with_arm_ids

HOURS = 12
SLOTS, MAX_HOURS = 2, 4


JOB = "parity-0001"


def arm_name(slot: int, seq: int) -> str:
    return arm_id_for(JOB, slot, seq)


def ledger_of(log_dir, metrics) -> dict:
    ledger = Ledger(metrics, var_floor=1e-4)
    replay_into(ledger, EventLog(log_dir))
    records = {}
    state = ledger.state_dict()
    cols = state["records"]
    for a, m, h, mu, v, n in zip(*(cols[k] for k in ("arm_id", "metric", "hour", "mean",
                                                      "var", "n")), strict=True):
        records[(a, m, h)] = (mu, v, n)
    arms = {a["arm_id"]: (a["registered_hour"], a["retired_reason"], a["params"])
            for a in state["arms"]}
    return {"records": records, "arms": arms}


@pytest.mark.ray
def test_recorded_readings_give_the_same_ledger_and_recommendation(ray_session, tmp_path):
    config = parity_config()
    canon = canonical_publications(SLOTS, MAX_HOURS, HOURS)

    recording = with_arm_ids(canon, arm_name)
    clock = SimClock()
    local = run_local(config, RecordedBackend(recording, clock), clock=clock, hours=HOURS,
                      run_dir=tmp_path / "local", job_id=JOB)
    ray_result = run_on_ray(config, RecordedFactory(recording), hours=HOURS,
                            run_dir=tmp_path / "ray", seconds_per_hour=0.5, job_id=JOB)

    a = ledger_of(local.log_path, config.metrics)
    b = ledger_of(ray_result.log_path, config.metrics)
    assert len(a["records"]) > 30
    assert a["records"] == b["records"]
    assert a["arms"].keys() == b["arms"].keys()
    for arm_id, (hour, reason, params) in a["arms"].items():
        hour_b, reason_b, params_b = b["arms"][arm_id]
        assert (hour, reason) == (hour_b, reason_b), arm_id
        assert params == pytest.approx(params_b, rel=1e-12)
    assert local.rejected == ray_result.rejected == 1  # the unknown metric, quarantined once

    # Same per-arm aggregates in the results.
    assert local.arms.keys() == ray_result.arms.keys()
    for arm_id, summary in local.arms.items():
        other = ray_result.arms[arm_id]
        assert summary.hours_observed == other.hours_observed
        assert summary.estimates == other.estimates

    # Same readout: same weights and posterior (arms share one point, so the
    # readout is a function of the ledger); the arm is the same or exactly tied.
    ra, rb = local.recommendation, ray_result.recommendation
    assert not ra.is_control and not rb.is_control
    assert dict(ra.params) == pytest.approx(dict(rb.params), rel=1e-12)
    for field in ("objective_mean", "objective_lcb", "p_feasible"):
        assert getattr(ra, field) == pytest.approx(getattr(rb, field), rel=1e-7, abs=1e-12)
    for metric in config.metrics:
        assert ra.metrics[metric].mean == pytest.approx(rb.metrics[metric].mean, rel=1e-7)
        assert ra.metrics[metric].sd == pytest.approx(rb.metrics[metric].sd, rel=1e-7)
    if ra.arm_id == rb.arm_id:
        assert ra.observed == rb.observed
    assert math.isclose(ra.objective_mean, rb.objective_mean, rel_tol=1e-7)
    assert len(ray_result.recommendations) >= HOURS - 2
