"""The arm slot loop, driven directly (no Ray cluster), and its import boundary."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest

from hz_ray.backends.recorded import RecordedBackend
from hz_ray.clock import AcceleratedClock
from hz_ray.records import arm_id_for
from hz_ray.service.posterior import PosteriorService
from hz_ray.service.slot import ArmSlotRunner, RunnerSettings
from hz_ray.testing import FlakyBackend, wait_for
from tests.support import canonical_publications, two_metric_config, with_arm_ids

JOB = "runner-0001"

FAST = RunnerSettings(poll_interval_hours=0.25, initial_backoff_s=0.001, max_backoff_s=0.01,
                      backend_attempts=3, fetch_failures_to_give_up=3)


def aid(seq: int) -> str:
    return arm_id_for(JOB, 0, seq)


def test_slot_and_worker_modules_import_no_torch():
    code = ("import sys, hz_ray.service.slot, hz_ray.testing, hz_ray.backends; "
            "import actors.arm_worker, actors.posterior, actors.driver, actors.testing; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"


@pytest.fixture
def setup(tmp_path):
    config = two_metric_config("runner", slots=1, max_hours=3)
    service = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    clock = AcceleratedClock(0.12, time.time() + 0.05)
    pubs = with_arm_ids(canonical_publications(1, 3, 12), lambda s, q: arm_id_for(JOB, s, q))
    yield config, service, clock, RecordedBackend(pubs, clock)
    service.close()


def test_backend_failures_are_retried_then_the_slot_moves_on(setup):
    config, service, clock, recorded = setup
    backend = FlakyBackend(recorded, {("launch", aid(0)): 2,          # retried, then fine
                                      ("fetch", aid(1)): math.inf})   # broken for good
    runner = ArmSlotRunner(0, service, backend, clock, config.arms, config.metrics, FAST)
    stats = runner.run(8)
    reasons = {arm: reason for arm, _, _, reason in stats.arms}
    assert reasons[aid(0)] == "max_hours"
    assert reasons[aid(1)] == "backend_error"  # stopped after 3 failed polls
    assert aid(2) in reasons  # the slot moved on
    assert stats.backend_errors >= 5
    assert service.slot_state(0).arms[1].stop_reason == "backend_error"
    assert service.status().num_records > 0


def test_a_restarted_worker_resumes_its_slot(setup):
    config, service, clock, recorded = setup
    first = ArmSlotRunner(0, service, recorded, clock, config.arms, config.metrics, FAST)
    thread = threading.Thread(target=first.run, args=(12,))
    thread.start()
    time.sleep(0.12 * 4.5)  # hour 4.5: the second arm is live
    first.request_stop()  # the worker process "dies"
    thread.join()
    live = service.slot_state(0).live
    assert live is not None and live.arm_id == aid(1)
    second = ArmSlotRunner(0, service, recorded, clock, config.arms, config.metrics, FAST)
    stats = second.run(12)
    assert stats.resumed
    arms = [a for a, *_ in stats.arms]
    assert arms[:2] == [aid(1), aid(2)]
    assert [a.arm_id for a in service.slot_state(0).arms] == [aid(i) for i in range(4)]
    # everything the platform published for the first two arms reached the ledger once
    published = {(r.arm_id, r.metric, r.hour) for r in recorded.fetch(aid(1), 0)
                 if r.metric in config.metrics}
    state = service.ledger_state()["records"]
    got = set(zip(state["arm_id"], state["metric"], state["hour"], strict=True))
    assert published <= got


@pytest.mark.parametrize("late_hours", [0, 3])
def test_stopped_arms_are_polled_for_late_data_for_late_data_hours(tmp_path, late_hours):
    """Every reading comes 2 hours late; a stopped arm's last hours arrive after its stop."""
    import dataclasses

    from hz_ray.backends.recorded import Publication
    from hz_ray.clock import SimClock
    from hz_ray.local import LocalScheduler
    from tests.support import reading

    base = two_metric_config("late", slots=1, max_hours=3)
    config = dataclasses.replace(base, arms=dataclasses.replace(
        base.arms, late_data_hours=late_hours, contender_stop_share=0.0))
    rng = __import__("random").Random(0)
    first = arm_id_for(JOB, 0, 0)
    pubs = [Publication(h + 3, reading(first, h, m, rng)) for h in range(3)
            for m in ("views", "likes")]
    clock = SimClock()
    service = PosteriorService(config, tmp_path, job_id=JOB, background=False,
                               plan_on_demand=True, durable_reports=False)
    try:
        runner = ArmSlotRunner(0, service, RecordedBackend(pubs, clock), clock, config.arms,
                               config.metrics, FAST)
        scheduler = LocalScheduler(service, [runner])
        scheduler.start()
        for hour in range(10):
            scheduler.step(hour)
            clock.advance(1.0)
        arm = {a.arm_id: a for a in service.arm_summaries()}[first]
        assert (arm.launched_hour, arm.stopped_hour) == (0, 3)
        # hour h is published at h + 3: hour 0 at 3 (the stop hour), hours 1-2 later
        assert arm.hours_observed == (3 if late_hours >= 2 else 1)
        assert first not in {a.arm_id for a in runner.draining}  # done with it either way
    finally:
        service.close()


@pytest.mark.parametrize(("stop_at", "hours_in"), [(2.0, 2), (2.5, 3)])
def test_a_stop_inside_an_hour_waits_for_that_hours_data(tmp_path, stop_at, hours_in):
    """Stopped at 2.5 the arm served half of hour 2, so the platform publishes hour 2 too."""
    from hz_ray.backends.recorded import Publication
    from hz_ray.clock import SimClock
    from tests.support import reading

    config = two_metric_config("partial", slots=1, max_hours=2)
    first = arm_id_for(JOB, 0, 0)
    rng = __import__("random").Random(1)
    last_hour = math.ceil(stop_at) - 1  # what the platform served
    pubs = [Publication(h + 1, reading(first, h, m, rng)) for h in range(last_hour + 1)
            for m in ("views", "likes")]
    clock = SimClock()
    service = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    try:
        runner = ArmSlotRunner(0, service, RecordedBackend(pubs, clock), clock, config.arms,
                               config.metrics, FAST)
        runner.start()
        runner.try_launch(0)
        clock.advance(stop_at)
        runner.poll(2)
        runner.send_reports(2, heartbeat=False)
        assert runner.decide(2, None) == "max_hours"
        runner.drop_drained(2)  # as the slot loop does after every poll
        for hour in (3, 4):
            clock.advance(float(hour) - clock.now_hours())
            runner.poll(hour)
            runner.send_reports(hour, heartbeat=False)
            runner.drop_drained(hour)
        assert first not in {a.arm_id for a in runner.draining}
        assert service.ledger_state()["arms"][0]["arm_id"] == first
        hours = {h for a, h in zip(service.ledger_state()["records"]["arm_id"],
                                   service.ledger_state()["records"]["hour"], strict=True)
                 if a == first}
        assert len(hours) == hours_in
    finally:
        service.close()


class _SlowAtTheEnd:
    """Fetches made once the job's hours are over take ``slow_s`` (the first ``times`` per arm)."""

    def __init__(self, inner, clock, end_hour: float, slow_s: float, times: float) -> None:
        self.inner, self.clock, self.end_hour = inner, clock, end_hour
        self.slow_s, self.times = slow_s, times
        self.slowed: dict[str, int] = {}

    def launch(self, arm_id, params):
        self.inner.launch(arm_id, params)

    def stop(self, arm_id):
        self.inner.stop(arm_id)

    def fetch(self, arm_id, since_hour):
        if self.clock.now_hours() >= self.end_hour - 1e-6 \
                and self.slowed.get(arm_id, 0) < self.times:
            self.slowed[arm_id] = self.slowed.get(arm_id, 0) + 1
            time.sleep(self.slow_s)
        return self.inner.fetch(arm_id, since_hour)


@pytest.mark.parametrize(("times", "lost"), [(1, False), (math.inf, True)])
def test_a_final_fetch_that_times_out_is_tried_again_before_the_job_ends(tmp_path, times, lost):
    """The soak's defect: readings published in the last hour came back in a fetch that
    outlasted the call timeout at the job's end, and the job ended without fetching again."""
    import random

    from hz_ray.backends.recorded import Publication
    from tests.support import reading

    hours = 4
    config = two_metric_config("final-fetch", slots=1, max_hours=2)
    rng = random.Random(0)
    # Every hour is published 0.9 h after it ends: hour 3's readings only at the end's poll.
    pubs = [Publication(h + 1.9 if h == hours - 1 else h + 1.0,
                        reading(aid(h // 2), h, m, rng))
            for h in range(hours) for m in ("views", "likes")]
    service = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    try:
        clock = AcceleratedClock(0.15, time.time() + 0.05)
        backend = _SlowAtTheEnd(RecordedBackend(pubs, clock), clock, hours, 0.4, times)
        settings = RunnerSettings(poll_interval_hours=0.25, initial_backoff_s=0.001,
                                  max_backoff_s=0.01, backend_attempts=3,
                                  fetch_failures_to_give_up=10, call_timeout_s=0.1)
        runner = ArmSlotRunner(0, service, backend, clock, config.arms, config.metrics,
                               settings)
        started = time.perf_counter()
        stats = runner.run(hours)
        took = time.perf_counter() - started
        keys = {(a.arm_id, a.hours_observed) for a in service.arm_summaries()}
    finally:
        service.close()
    assert backend.slowed  # the end's fetch was slow
    if lost:  # a platform that never answers in time: bounded, counted, not hidden
        assert stats.final_fetch_failures == len(backend.slowed) == 2  # the draining arm too
        assert (aid(1), 1) in keys
        assert took < hours * 0.15 + 3 * (0.4 + 0.1) + 2.0
    else:
        assert (aid(1), 2) in keys  # hour 3 was fetched by the retry
        assert stats.final_fetch_failures == 0


class _FailsAtHour:
    """Fetches of one arm fail while the job clock is in ``[hour, hour + 1)`` (once each)."""

    def __init__(self, inner, clock, arm_id: str, hour: float) -> None:
        self.inner, self.clock, self.arm_id, self.hour = inner, clock, arm_id, hour
        self.failed = 0

    def launch(self, arm_id, params):
        self.inner.launch(arm_id, params)

    def stop(self, arm_id):
        self.inner.stop(arm_id)

    def fetch(self, arm_id, since_hour):
        if arm_id == self.arm_id and self.hour <= self.clock.now_hours() < self.hour + 1:
            self.failed += 1
            raise ConnectionError("platform down for this poll")
        return self.inner.fetch(arm_id, since_hour)


def test_a_failed_last_poll_of_a_stopped_arm_is_tried_again_after_its_window(tmp_path):
    """The week-long soak's lost key: the last poll inside a stopped arm's late-data window
    failed, and the arm was dropped at the window's end without another fetch."""
    import dataclasses
    import random

    from hz_ray.backends.recorded import Publication
    from hz_ray.clock import SimClock
    from hz_ray.local import LocalScheduler
    from tests.support import reading

    base = two_metric_config("late-retry", slots=1, max_hours=3)
    config = dataclasses.replace(base, arms=dataclasses.replace(
        base.arms, late_data_hours=2, contender_stop_share=0.0))
    rng = random.Random(0)
    first = arm_id_for(JOB, 0, 0)
    # stopped at 3, window to hour 5; hour 2 is published at 5, the window's last poll
    pubs = [Publication(5.0 if h == 2 else h + 1.0, reading(first, h, m, rng))
            for h in range(3) for m in ("views", "likes")]
    clock = SimClock()
    service = PosteriorService(config, tmp_path, job_id=JOB, background=False,
                               plan_on_demand=True, durable_reports=False)
    try:
        backend = _FailsAtHour(RecordedBackend(pubs, clock), clock, first, 5.0)
        runner = ArmSlotRunner(0, service, backend, clock, config.arms, config.metrics, FAST)
        scheduler = LocalScheduler(service, [runner])
        scheduler.start()
        for hour in range(9):
            scheduler.step(hour)
            clock.advance(1.0)
        arm = {a.arm_id: a for a in service.arm_summaries()}[first]
        assert backend.failed == 1
        assert (arm.launched_hour, arm.stopped_hour) == (0, 3)
        assert arm.hours_observed == 3  # hour 2 came with the retry at hour 6
        assert first not in {a.arm_id for a in runner.draining}  # and then it was dropped
    finally:
        service.close()


class _UnreachableAfterRetire:
    """The central service as a slot sees it: it goes dark at the first ``retire``."""

    def __init__(self, service: PosteriorService) -> None:
        self.service = service
        self.down = False

    def __getattr__(self, name: str):
        call = getattr(self.service, name)

        def guarded(*args, **kwargs):
            if name == "retire":
                self.down = True
            if self.down:
                raise ConnectionError("the central service cannot be reached")
            return call(*args, **kwargs)
        return guarded


def test_a_stop_whose_retirement_was_lost_is_not_served_again_on_resume(setup):
    """Reported by the soak: the stop reached the platform, the retirement not the log.

    The worker then died; its successor read the arm as live and launched it again
    (the platform refused; one that accepts relaunches would have served it again).
    The platform's refusal (ArmStoppedError) now retires the arm instead.
    """
    config, service, clock, recorded = setup
    port = _UnreachableAfterRetire(service)
    before = FlakyBackend(recorded, {})
    first = ArmSlotRunner(0, port, before, clock, config.arms, config.metrics, FAST)
    thread = threading.Thread(target=first.run, args=(12,))
    thread.start()
    assert wait_for(lambda: ("stop", aid(0)) in before.calls, 30)
    time.sleep(0.05)  # let the stop call return
    first.request_stop()  # the worker dies before the central service is back
    thread.join()
    assert port.down and ("stop", aid(0)) in before.calls  # the stop reached the platform
    record = service.slot_state(0).arms[0]
    assert record.arm_id == aid(0) and record.live         # ... and the log still says live
    after = FlakyBackend(recorded, {})
    second = ArmSlotRunner(0, service, after, clock, config.arms, config.metrics, FAST)
    stats = second.run(8)
    assert stats.resumed and stats.found_stopped == 1
    state = service.slot_state(0)
    assert state.arms[0].stop_reason == "found_stopped" and not state.arms[0].live
    assert state.arms[0].settled
    launched = [arm for what, arm in after.calls if what == "launch"]
    assert launched[:1] == [aid(0)] and aid(0) not in launched[1:]  # one refused launch
    assert [a.arm_id for a in state.arms][:2] == [aid(0), aid(1)]


def test_an_arm_is_registered_in_the_hour_it_is_launched_not_the_hour_its_loop_began(tmp_path):
    """Regression (7-day soak): after a node kill a slot's central calls took about 4 job
    hours; the hourly step then launched its next arm with the hour read before them, so the
    arm's data window began 4 hours before the platform served it, and an injected reading
    for one of those hours was accepted."""
    from hz_ray.clock import SimClock
    from hz_ray.storage import EventLog

    config = two_metric_config("stale", slots=1, max_hours=2)
    clock = SimClock()
    service = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    try:
        runner = ArmSlotRunner(0, service, RecordedBackend([], clock), clock, config.arms,
                               config.metrics, FAST)
        runner.start()
        clock.advance(4.3)  # the loop read hour 0, then its calls took 4.3 hours
        runner.try_launch(0)
        arm = runner.current
        assert arm is not None and arm.launched_hour == 4
        rows = EventLog(tmp_path / "log").read().to_pylist()
        assert [e["hour"] for e in rows if e["kind"] == "arm_registered"] == [4]
        assert [e["hour"] for e in rows if e["kind"] == "arm_state"
                and e["arm_id"] == arm.arm_id] == [4, 4]  # launching, live
    finally:
        service.close()


def test_a_resumed_slot_polls_a_stopped_arm_for_the_data_published_while_the_job_was_down(
        tmp_path):
    """Regression (Ray tier, on a busy box): after a resume the driver's hourly readout, or
    another slot, reported a later hour before this slot's worker came up. The slot took
    that hour as the hour the job had paused, found its stopped arm past its late-data
    window, and never fetched the hour the platform published during the pause."""
    import dataclasses

    from hz_ray.backends.recorded import Publication
    from hz_ray.clock import SimClock
    from hz_ray.local import LocalScheduler
    from tests.support import reading

    base = two_metric_config("pause", slots=1, max_hours=3)
    config = dataclasses.replace(base, arms=dataclasses.replace(
        base.arms, late_data_hours=3, contender_stop_share=0.0))
    rng = __import__("random").Random(0)
    first = arm_id_for(JOB, 0, 0)
    # hours 0-1 come at once; hour 2 (the last one served) is published at hour 5,
    # while the job is down
    pubs = [Publication(h + 1 if h < 2 else 5, reading(first, h, m, rng))
            for h in range(3) for m in ("views", "likes")]
    clock = SimClock()
    backend = RecordedBackend(pubs, clock)

    def life(restore: bool, hours: range, readout_first: int | None = None) -> None:
        service = PosteriorService(config, tmp_path, job_id=JOB, restore=restore,
                                   background=False, plan_on_demand=True)
        try:
            if readout_first is not None:  # the driver's readout ran before the slot's start
                service.hour_progress(readout_first)
            runner = ArmSlotRunner(0, service, backend, clock, config.arms, config.metrics,
                                   FAST)
            scheduler = LocalScheduler(service, [runner])
            scheduler.start()
            for hour in hours:
                if hour > clock.now_hours():
                    clock.advance(hour - clock.now_hours())
                scheduler.step(hour)
        finally:
            service.close()

    life(False, range(0, 4))          # the arm serves hours 0-2 and stops at 3
    clock.advance(5.0)                # down for 5 hours; hour 2 is published at 5
    life(True, range(8, 10), readout_first=8)
    state = PosteriorService(config, tmp_path, job_id=JOB, restore=True, background=False)
    try:
        arm = {a.arm_id: a for a in state.arm_summaries()}[first]
        assert (arm.launched_hour, arm.stopped_hour) == (0, 3)
        assert arm.hours_observed == 3  # hour 2 included
    finally:
        state.close()


def test_a_launch_held_back_until_the_next_hour_goes_ahead_when_that_hour_has_come(tmp_path):
    """A failed launch holds the slot's next launch until the next hour; a caller whose
    hour was read before its calls ran into that hour must not be held back by it."""
    from hz_ray.clock import SimClock

    config = two_metric_config("held", slots=1, max_hours=2)
    clock = SimClock()
    backend = FlakyBackend(RecordedBackend([], clock), {("launch", aid(0)): 3})
    service = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    try:
        runner = ArmSlotRunner(0, service, backend, clock, config.arms, config.metrics, FAST)
        runner.start()
        runner.try_launch(0)  # all 3 attempts fail: stopped, and held until hour 1
        assert runner.current is None or not runner.current.launched
        runner.retry_stops(0)
        runner.send_lifecycle(0)
        assert not runner.stopping and not runner._outbox
        clock.advance(1.2)    # the caller read hour 0; it is hour 1 now
        runner.try_launch(0)
        assert runner.current is not None and runner.current.arm_id == aid(1)
        assert runner.current.launched_hour == 1
    finally:
        service.close()
