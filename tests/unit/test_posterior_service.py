"""The posterior service (the central actor's logic), driven directly: no Ray."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from hz_ray.errors import InputDataError, StateError
from hz_ray.records import HourlyDelta, arm_id_for
from hz_ray.service.messages import FeedRejectionRecord, Report
from hz_ray.service.posterior import PosteriorService
from hz_ray.storage import EventLog
from tests.support import two_metric_config

JOB = "svc-0001"


def aid(slot: int, seq: int) -> str:
    return arm_id_for(JOB, slot, seq)


@pytest.fixture
def config():
    return two_metric_config("svc", slots=2, max_hours=4)


@pytest.fixture
def service(config, tmp_path):
    svc = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    yield svc
    svc.close()


def deltas(arm_id: str, hours: range, value: float = 0.01) -> tuple[HourlyDelta, ...]:
    return tuple(HourlyDelta(arm_id, m, h, value, 1e-4, 1000)
                 for h in hours for m in ("views", "likes"))


def test_report_is_idempotent_and_durable_when_acknowledged(service, tmp_path):
    arm = service.sample(0, 0, hour=0)
    batch = Report(0, 3, arm.arm_id, deltas(arm.arm_id, range(3)))
    ack = service.report(batch)
    assert (ack.accepted, ack.duplicates, ack.rejected) == (6, 0, 0)
    assert service.log.pending == 0  # acknowledged means committed to a part file
    again = service.report(batch)
    assert (again.accepted, again.duplicates) == (0, 6)
    accepted = EventLog(tmp_path / "log").read().to_pylist()
    assert sum(e["kind"] == "delta_accepted" for e in accepted) == 6


def test_conflicts_and_bad_records_are_quarantined_once(service):
    arm = service.sample(0, 0, hour=0).arm_id
    service.report(Report(0, 1, arm, deltas(arm, range(1))))
    conflict = HourlyDelta(arm, "views", 0, 0.5, 1e-4, 1000)
    nan = HourlyDelta(arm, "views", 1, 0.01, 1e-4, 1000)
    object.__setattr__(nan, "mean", float("nan"))  # what a buggy client could pickle
    raw = FeedRejectionRecord({"arm_id": arm, "hour": 2, "metric": "clicks"}, "unknown metric")
    good = HourlyDelta(arm, "likes", 1, 0.0, 1e-4, 1000)
    batch = Report(0, 2, arm, (conflict, nan, good), (raw,))
    ack = service.report(batch)
    assert (ack.accepted, ack.rejected) == (1, 3)
    service.report(batch)  # a retry: nothing is quarantined twice
    assert service.rejected == 3


def test_sample_is_idempotent_per_slot_and_seq(service):
    first = service.sample(1, 0, hour=0)
    assert first.arm_id == aid(1, 0)
    assert service.sample(1, 0, hour=5) == first  # a retried request returns the same arm
    with pytest.raises(StateError, match="one arm per slot"):
        service.sample(1, 1, hour=1)  # the slot's arm is still live
    assert service.retire(1, first.arm_id, "max_hours", 4) is True
    assert service.retire(1, first.arm_id, "max_hours", 4) is False
    with pytest.raises(StateError, match="'stopping'"):
        service.sample(1, 1, hour=4)  # retired, but its platform stop has not returned yet
    assert service.transition(1, first.arm_id, "stopped", 4) is True
    with pytest.raises(StateError, match="seq"):
        service.sample(1, 3, hour=4)
    second = service.sample(1, 1, hour=4)
    assert second.arm_id == aid(1, 1)
    state = service.slot_state(1)
    assert state.next_seq == 2 and state.live.arm_id == second.arm_id
    with pytest.raises(InputDataError):
        service.sample(2, 0, hour=0)  # only 2 slots


def test_samples_never_wait_for_a_refit(service):
    service.sample(0, 0, hour=0)
    release = threading.Event()

    def slow_refit():  # what the refresh thread holds while it refits
        with service._gp_lock:
            release.wait(10)

    holder = threading.Thread(target=slow_refit)
    holder.start()
    time.sleep(0.05)
    try:
        started = time.perf_counter()
        service.report(Report(0, 1, aid(0, 0), deltas(aid(0, 0), range(2))))
        service.retire(0, aid(0, 0), "max_hours", 1)
        service.transition(0, aid(0, 0), "stopped", 1)
        reply = service.sample(0, 1, hour=1)
        elapsed = time.perf_counter() - started
    finally:
        release.set()
        holder.join()
    assert reply.arm_id == aid(0, 1)
    assert elapsed < 1.0


def test_restart_rebuilds_from_checkpoint_and_log(config, tmp_path):
    svc = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    a = svc.sample(0, 0, hour=0)
    b = svc.sample(1, 0, hour=0)
    svc.report(Report(0, 2, a.arm_id, deltas(a.arm_id, range(2))))
    svc.refresh_now()
    assert svc.checkpoint_now()
    # after the checkpoint: more data, a retirement, a rejection, a new arm
    svc.report(Report(1, 3, b.arm_id, deltas(b.arm_id, range(3), 0.02),
                      (FeedRejectionRecord({"why": "bad"}, "bad reading"),)))
    svc.retire(0, a.arm_id, "max_hours", 4)
    svc.transition(0, a.arm_id, "stopped", 4)
    c = svc.sample(0, 1, hour=4)
    before = svc.ledger_state()
    svc.close()  # (a crash loses only unacknowledged work; everything above was acked)

    with pytest.raises(StateError, match="resume"):
        PosteriorService(config, tmp_path, job_id=JOB, background=False)
    again = PosteriorService(config, tmp_path, job_id=JOB, restore=True, background=False)
    try:
        assert again.restored
        assert again.ledger_state() == before
        assert again.rejected == 1
        assert again.slot_state(0).live.arm_id == c.arm_id
        assert again.slot_state(0).next_seq == 2
        assert again.sample(0, 1, hour=9).params == c.params  # the retried request
        ack = again.report(Report(1, 3, b.arm_id, deltas(b.arm_id, range(3), 0.02),
                                  (FeedRejectionRecord({"why": "bad"}, "bad reading"),)))
        assert (ack.accepted, ack.duplicates) == (0, 6)
        assert again.rejected == 1
        est = {s.arm_id: s for s in again.arm_summaries()}
        assert est[b.arm_id].estimates["views"].mean == pytest.approx(0.02)
        assert est[a.arm_id].stop_reason == "max_hours" and est[a.arm_id].stopped_hour == 4
    finally:
        again.close()


def test_status_and_readout_before_data(service):
    status = service.status()
    assert status.posterior_version == 0 and status.refreshes == 1
    assert service.recommend().is_control
    summary = service.hour_progress(0)
    assert summary.live_arms == 0 and summary.recommendation.is_control
    assert dataclasses.asdict(status)["extra"]["rss_bytes"] > 0


def test_ack_carries_the_live_arms_pick_share_when_contender_stops_are_on(config, tmp_path):
    on = dataclasses.replace(
        config, arms=dataclasses.replace(config.arms, contender_stop_share=0.01),
        optimizer=dataclasses.replace(config.optimizer, recommend_min_hours=4))
    svc = PosteriorService(on, tmp_path, background=False)
    try:
        good = svc.sample(0, 0, hour=0).arm_id
        bad = svc.sample(1, 0, hour=0).arm_id
        svc.report(Report(0, 4, good, deltas(good, range(4), value=0.01)))
        svc.report(Report(1, 4, bad, deltas(bad, range(4), value=-0.05)))
        svc.refresh_now()
        ack_good = svc.report(Report(0, 4, good, ()))
        ack_bad = svc.report(Report(1, 4, bad, ()))
        assert ack_good.pick_share is not None and ack_bad.pick_share is not None
        assert 0.0 <= ack_bad.pick_share < ack_good.pick_share <= 1.0
        assert ack_bad.pick_share == 0.0  # worse than the control and infeasible
    finally:
        svc.close()
    off = PosteriorService(config, tmp_path / "off", background=False)
    try:
        arm = off.sample(0, 0, hour=0).arm_id
        off.report(Report(0, 2, arm, deltas(arm, range(2))))
        off.refresh_now()
        assert off.report(Report(0, 2, arm, ())).pick_share is None
    finally:
        off.close()


def test_synchronous_batches_wait_until_every_arm_of_the_batch_stopped(config, tmp_path):
    sync = dataclasses.replace(config, arms=dataclasses.replace(config.arms, synchronous=True))
    svc = PosteriorService(sync, tmp_path, job_id=JOB, background=False)
    try:
        a = svc.sample(0, 0, hour=0)
        b = svc.sample(1, 0, hour=0)  # the same batch: launched in the same hour
        assert a is not None and b is not None
        svc.retire(0, a.arm_id, "guardrail", 2)
        svc.transition(0, a.arm_id, "stopped", 2)
        assert svc.sample(0, 1, hour=2) is None  # b, of the earlier batch, is still live
        assert svc.slot_state(0).next_seq == 1  # nothing was handed out
        svc.retire(1, b.arm_id, "max_hours", 4)
        svc.transition(1, b.arm_id, "stopped", 4)
        c = svc.sample(0, 1, hour=4)
        d = svc.sample(1, 1, hour=4)
        assert c is not None and d is not None and c.arm_id != d.arm_id
    finally:
        svc.close()
    asynchronous = PosteriorService(config, tmp_path / "async", job_id=JOB, background=False)
    try:
        a = asynchronous.sample(0, 0, hour=0)
        asynchronous.sample(1, 0, hour=0)
        asynchronous.retire(0, a.arm_id, "guardrail", 2)
        asynchronous.transition(0, a.arm_id, "stopped", 2)
        assert asynchronous.sample(0, 1, hour=2) is not None
    finally:
        asynchronous.close()


def test_on_demand_plans_know_the_arms_launched_before(config, tmp_path):
    """In process, each sample after a launch is drawn from a new plan."""
    svc = PosteriorService(config, tmp_path, job_id=JOB, background=False, plan_on_demand=True)
    try:
        assert svc._published.plan is None  # no plan before the first sample needs one
        first = svc.sample(0, 0, hour=0)
        plan_after_first = svc._published.plan
        second = svc.sample(1, 0, hour=0)
        assert svc._published.plan is not plan_after_first  # planned again, arm 1 live
        assert dict(first.params) != dict(second.params)  # never a live arm's weights
        assert svc.sample(1, 0, hour=0) == second  # a retry plans nothing new
    finally:
        svc.close()
    with pytest.raises(InputDataError, match="plan_on_demand"):
        PosteriorService(config, tmp_path / "x", background=True, plan_on_demand=True)


def test_every_start_is_logged_and_arms_of_another_job_are_not_this_jobs(config, tmp_path):
    svc = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    arm = svc.sample(0, 0, hour=0)
    svc.report(Report(0, 1, arm.arm_id, (), launched=((arm.arm_id, 0),)))
    svc.report(Report(0, 1, arm.arm_id, (), launched=((arm.arm_id, 0),)))  # a retry
    svc.hour_progress(0)
    svc.hour_progress(0)  # asked twice (a driver retry): logged once
    svc.close()
    again = PosteriorService(config, tmp_path, job_id=JOB, restore=True, background=False)
    try:
        assert again.recommendations()[0][0] == 0 and again.last_hour() == 0
        assert again.slot_state(0).live.arm_id == arm.arm_id
    finally:
        again.close()
    events = EventLog(tmp_path / "log").read().to_pylist()
    starts = [e for e in events if e["kind"] == "job_started"]
    assert [e["arm_id"] for e in starts] == [JOB, JOB]
    assert sum(e["kind"] == "arm_state" and e["state"] == "live" for e in events) == 1
    assert sum(e["kind"] == "recommendation" for e in events) == 1
    # A log that holds another job's arm: the arm is kept, but belongs to no slot of this job.
    other = PosteriorService(config, tmp_path, job_id="other-0002", restore=True,
                             background=False)
    try:
        assert other.slot_state(0).arms == () and other.slot_state(0).next_seq == 0
        assert other.sample(0, 0, hour=1).arm_id == "other-0002.s00-0000"
    finally:
        other.close()
