"""The arm lifecycle on the platform: logged steps, one arm per slot, timeouts, reconcile."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections import Counter

import pytest

from hz_ray.backends import SimulatedBackend, make_world
from hz_ray.clock import SimClock
from hz_ray.config import config_from_mapping
from hz_ray.errors import ArmStoppedError, ConfigError, StateError
from hz_ray.local import run_local
from hz_ray.records import GroupStats, HourlyReading, arm_id_for
from hz_ray.service.arm_states import can_move
from hz_ray.service.backend_calls import BackendCaller, BackendCallError, CallPolicy
from hz_ray.service.endings import JobInterrupted, interrupts_raise
from hz_ray.service.job_state import JobState
from hz_ray.service.posterior import PosteriorService
from hz_ray.service.reconcile import reconcile_folder
from hz_ray.storage import EventLog
from hz_ray.testing import FlakyBackend
from tests.conftest import small_config_mapping
from tests.support import two_metric_config

JOB = "life-0001"


def aid(slot, seq):
    return arm_id_for(JOB, slot, seq)


def states(run_dir):
    """Per arm, its logged lifecycle states in order (and the reasons)."""
    out: dict[str, list[str]] = {}
    for e in EventLog(run_dir / "log").read().to_pylist():
        if e["kind"] == "arm_state":
            out.setdefault(e["arm_id"], []).append(e["state"])
    return out


class CountingBackend:
    """A platform that records what is live; stops fail ``fail_stops`` times per arm."""

    def __init__(self, fail_stops: int = 0) -> None:
        self.live: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.fail_stops = fail_stops
        self.failed: dict[str, int] = {}

    def launch(self, arm_id, params):
        self.calls.append(("launch", arm_id))
        self.live.add(arm_id)

    def fetch(self, arm_id, since_hour):
        return []

    def stop(self, arm_id):
        self.calls.append(("stop", arm_id))
        if self.failed.get(arm_id, 0) < self.fail_stops:
            self.failed[arm_id] = self.failed.get(arm_id, 0) + 1
            raise ConnectionError("platform busy")
        self.live.discard(arm_id)


# ------------------------------------------------------------------- state machine
def test_the_lifecycle_allows_only_its_steps():
    assert can_move("proposed", "launching") and can_move("launching", "live")
    assert can_move("live", "stopping") and can_move("stopping", "stop_failed")
    assert can_move("stop_failed", "stop_failed") and can_move("stop_failed", "stopped")
    assert can_move("proposed", "stopped")  # never reached the platform
    assert not can_move("stopped", "live") and not can_move("live", "stopped")
    assert not can_move("handed_off", "stopping") and not can_move("proposed", "live")


def test_the_service_logs_each_step_and_refuses_a_second_arm_until_stopped(tmp_path):
    config = two_metric_config("life", slots=2, max_hours=4)
    svc = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    try:
        first = svc.sample(0, 0, hour=0)
        assert svc.transition(0, first.arm_id, "launching", 0)
        assert svc.transition(0, first.arm_id, "live", 0)
        assert not svc.transition(0, first.arm_id, "live", 0)  # a retried step: no-op
        with pytest.raises(StateError, match="launching"):
            svc.transition(0, first.arm_id, "launching", 1)  # live cannot go back
        with pytest.raises(StateError, match="an arm of slot 1"):
            svc.transition(1, first.arm_id, "stopping", 1)
        svc.retire(0, first.arm_id, "max_hours", 4)
        for _ in range(2):
            svc.transition(0, first.arm_id, "stop_failed", 4, "ConnectionError: busy")
        assert svc.hour_progress(4).stuck_stops == 1
        metric = svc.telemetry.registry.get_sample_value
        assert metric("hzray_arm_stop_failures_total", {"tuning_job": config.name}) == 2
        assert metric("hzray_arms_stuck_stopping", {"tuning_job": config.name}) == 1
        with pytest.raises(StateError, match="one arm per slot.*'stop_failed'"):
            svc.sample(0, 1, hour=4)  # the platform still serves the first arm
        svc.transition(0, first.arm_id, "stopped", 5)
        assert metric("hzray_arms_stuck_stopping", {"tuning_job": config.name}) == 0
        assert svc.sample(0, 1, hour=5).arm_id == aid(0, 1)
        svc.commit()
    finally:
        svc.close()
    assert states(tmp_path)[first.arm_id] == [
        "launching", "live", "stopping", "stop_failed", "stop_failed", "stopped"]
    again = PosteriorService(config, tmp_path, job_id=JOB, restore=True, background=False)
    try:  # the states survive a restart
        arms = {a.arm_id: a for a in again.slot_state(0).arms}
        assert arms[first.arm_id].state == "stopped" and arms[first.arm_id].stop_failures == 2
        assert arms[aid(0, 1)].state == "proposed"
    finally:
        again.close()


# ------------------------------------------------------------------- backend calls
def test_a_hung_call_times_out_and_is_not_called_again_while_it_hangs():
    release = threading.Event()
    calls = []

    def hang():
        calls.append(1)
        release.wait(30)

    caller = BackendCaller(CallPolicy(timeout_s=0.2, attempts=3, initial_backoff_s=0.0,
                                      max_backoff_s=0.0, jitter_s=0.0), time.sleep)
    started = time.monotonic()
    with pytest.raises(BackendCallError, match="longer than|still running"):
        caller.call("fetch", "a", hang)
    assert time.monotonic() - started < 2.0
    assert len(calls) == 1  # the retries saw the first call still running: no new thread
    release.set()


def test_errors_are_retried_with_backoff_then_reported():
    errors = []
    caller = BackendCaller(CallPolicy(timeout_s=1.0, attempts=3, initial_backoff_s=0.01,
                                      max_backoff_s=0.02, jitter_s=0.0), time.sleep,
                           lambda *a: errors.append(a[2]))
    outcomes = iter([ConnectionError("a"), ConnectionError("b"), "ok"])

    def flaky():
        value = next(outcomes)
        if isinstance(value, Exception):
            raise value
        return value

    assert caller.call("stop", "x", flaky) == "ok" and errors == [1, 2]
    with pytest.raises(BackendCallError, match="failed 3 time"):
        caller.call("stop", "x", lambda: 1 / 0)


def _no_backoff_caller(timeout_s, attempts):
    """A caller that retries at once (no backoff, no jitter)."""
    return BackendCaller(CallPolicy(timeout_s=timeout_s, attempts=attempts, initial_backoff_s=0.0,
                                    max_backoff_s=0.0, jitter_s=0.0), time.sleep)


def test_a_refused_launch_of_a_stopped_arm_is_a_definite_answer_not_retried():
    calls = []
    caller = _no_backoff_caller(timeout_s=1.0, attempts=4)

    def refuse():
        calls.append(1)
        raise ArmStoppedError("arm 'a' was stopped", "ids are single-use")

    with pytest.raises(ArmStoppedError):
        caller.call("launch", "a", refuse)
    assert len(calls) == 1


def test_a_signal_during_a_platform_call_ends_the_call_and_is_never_retried():
    # SIGTERM's JobInterrupted is raised in the main thread while it waits for the call's
    # thread; a retry loop that swallowed it would carry on with the job (the reported
    # hang of test_endings' SIGTERM child).
    calls = []
    caller = _no_backoff_caller(timeout_s=5.0, attempts=4)

    def slow():
        calls.append(1)
        time.sleep(0.5)

    with interrupts_raise():
        previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(),
                                                                    signal.SIGTERM))
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        try:
            with pytest.raises(JobInterrupted, match="SIGTERM"):
                caller.call("fetch", "a", slow)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    assert len(calls) == 1


# ------------------------------------------------------------------- the slot, in a job
def test_a_stop_that_fails_is_retried_and_the_slot_never_serves_two_arms(tmp_path):
    from hz_ray.service.slot import RunnerSettings

    raw = small_config_mapping(arms={"slots": 2, "min_hours": 1, "max_hours": 2,
                                     "metric_silence_hours": 0})
    config = config_from_mapping(raw)
    platform = CountingBackend(fail_stops=2)
    peak = []

    def watch(progress):
        peak.append(len(platform.live))

    run_local(config, platform, clock=SimClock(), hours=8, run_dir=tmp_path, job_id=JOB,
              progress=watch,
              runner_settings=RunnerSettings(backend_attempts=1, initial_backoff_s=0.0,
                                             max_backoff_s=0.0))
    assert max(peak) <= config.arms.slots
    assert platform.live == set(), "the job's end stopped every arm"
    logged = states(tmp_path)
    for arm_id, steps in logged.items():
        assert steps[-1] == "stopped", arm_id
    # arms stopped inside the job failed twice, were retried at later polls, then stopped
    assert any(s.count("stop_failed") == 2 for s in logged.values())
    # no slot launched an arm while its previous one was still on the platform
    served: dict[str, set[str]] = {}
    for call, arm_id in platform.calls:
        slot = arm_id.rsplit(".", 1)[1][:3]
        live = served.setdefault(slot, set())
        if call == "launch":
            assert not live, f"slot {slot} launched {arm_id} while {live} was served"
            live.add(arm_id)
        elif call == "stop" and platform.failed.get(arm_id, 0) >= 2:
            live.discard(arm_id)


class SlowStopPlatform:
    """Serves each arm from its launch until its ``stop`` returns, ``delay`` job hours later
    (the clock moves on during the call, as a slow platform's does); once an hour is over it
    publishes every metric of each arm that served in it, the partly served last hour too."""

    def __init__(self, clock: SimClock, metrics, delay: float) -> None:
        self.clock, self.metrics, self.delay = clock, tuple(metrics), delay
        self.served: dict[str, list[float]] = {}  # arm -> [start, end or inf]

    def launch(self, arm_id, params):
        self.served.setdefault(arm_id, [self.clock.now_hours(), math.inf])

    def stop(self, arm_id):
        self.clock.advance(self.delay)
        span = self.served[arm_id]
        span[1] = min(span[1], self.clock.now_hours())

    def published(self, arm_id):
        start, end = self.served[arm_id]
        last = math.floor(self.clock.now_hours())  # hours that are over
        if end < math.inf:
            last = min(last, math.ceil(end))
        return list(range(math.floor(start), last))

    def fetch(self, arm_id, since_hour):
        return [HourlyReading(arm_id, h, m, GroupStats(1.01, 1.0, 10_000),
                              GroupStats(1.0, 1.0, 10_000))
                for h in self.published(arm_id) if h >= since_hour for m in self.metrics]


def test_data_of_the_hours_an_arm_served_until_its_slow_stop_returned_are_kept(tmp_path):
    """A stop that returns after the hour it was decided in leaves the arm served for part
    of that hour: the platform publishes that hour, and it must be accepted, not refused as
    'after the stop'. The log's 'stopped' step carries the hour the stop returned in."""
    raw = small_config_mapping(arms={"slots": 1, "min_hours": 1, "max_hours": 2,
                                     "metric_silence_hours": 0})
    config = config_from_mapping(raw)
    clock = SimClock()
    platform = SlowStopPlatform(clock, config.metrics, delay=0.6)
    run_local(config, platform, clock=clock, hours=8, run_dir=tmp_path, job_id=JOB)
    rows = EventLog(tmp_path / "log").read().to_pylist()
    accepted = Counter((e["arm_id"], e["metric"], e["hour"]) for e in rows
                       if e["kind"] == "delta_accepted")
    refused = [e["reason"] for e in rows if e["kind"] == "delta_rejected"]
    stopped_early = [a for a, (_, end) in platform.served.items() if end < 7]
    assert len(stopped_early) >= 2  # arms stopped inside the job, each 0.6 h into an hour
    for arm_id in stopped_early:
        end = platform.served[arm_id][1]
        hours = platform.published(arm_id)
        assert hours[-1] == math.floor(end)  # the partly served hour was published
        for hour in hours:
            for metric in config.metrics:
                assert accepted[(arm_id, metric, hour)] == 1, (arm_id, metric, hour, refused)
        step = [e for e in rows if e["kind"] == "arm_state" and e["arm_id"] == arm_id
                and e["state"] == "stopped"]
        assert [e["hour"] for e in step] == [math.floor(end)]
    assert not refused
    # A resume reads when each arm stopped serving from the log, not from its retirement.
    state = JobState(JOB)
    state.replay(EventLog(tmp_path / "log").read())
    for arm_id in stopped_early:
        assert state.arms[arm_id].served_until == math.floor(platform.served[arm_id][1]) + 1


# ------------------------------------------------------------------- reconcile
def test_reconcile_stops_what_may_be_served_and_retries_stuck_stops(tmp_path):
    config = two_metric_config("life", slots=3, max_hours=4)
    svc = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    proposed = svc.sample(0, 0, hour=0).arm_id            # never sent to the platform
    launching = svc.sample(1, 0, hour=0).arm_id
    svc.transition(1, launching, "launching", 0)           # killed inside launch()
    live = svc.sample(2, 0, hour=0).arm_id
    svc.transition(2, live, "launching", 0)
    svc.transition(2, live, "live", 0)
    svc.commit()
    svc.close()
    stuck = CountingBackend(fail_stops=10**6)
    policy = CallPolicy(timeout_s=1.0, attempts=1, initial_backoff_s=0.0, max_backoff_s=0.0,
                        jitter_s=0.0)
    first = reconcile_folder(tmp_path, JOB, stuck, hour=1, reason="reconciled", policy=policy,
                             deadline_s=0.2, sleep=lambda s: None)
    assert first.never_launched == (proposed,)
    assert {a for a, _ in first.stuck} == {launching, live} and not first.ok
    assert ("stop", proposed) not in stuck.calls
    ok = CountingBackend()
    second = reconcile_folder(tmp_path, JOB, ok, hour=2, reason="reconciled", policy=policy)
    assert set(second.stopped) == {launching, live} and second.ok
    third = reconcile_folder(tmp_path, JOB, ok, hour=2, reason="reconciled", policy=policy)
    assert third.stopped == () and third.already_settled == 3
    logged = states(tmp_path)
    assert logged[proposed] == ["stopped"]
    assert logged[live][0:3] == ["launching", "live", "stopping"]
    assert logged[live][-1] == "stopped" and "stop_failed" in logged[live]


def test_reconcile_hands_off_and_readopts_only_live_arms(tmp_path):
    config = two_metric_config("life", slots=2, max_hours=4)
    svc = PosteriorService(config, tmp_path, job_id=JOB, background=False)
    arms = []
    for slot in range(2):
        arm = svc.sample(slot, 0, hour=0).arm_id
        svc.transition(slot, arm, "launching", 0)
        svc.transition(slot, arm, "live", 0)
        arms.append(arm)
    svc.commit()
    svc.close()
    backend = CountingBackend()
    report = reconcile_folder(tmp_path, JOB, backend, hour=3, reason="job_end",
                              handoff=[arms[0]], readopt=lambda a: False)
    assert report.handed_off == (arms[0],) and report.stopped == (arms[1],)
    assert states(tmp_path)[arms[0]][-1] == "handed_off"
    assert ("stop", arms[0]) not in backend.calls


# ------------------------------------------------------------------- misspelled metrics
def guardrail_on(metric):
    world = make_world("smooth")
    raw = world.config_mapping()
    raw["constraints"] = [{"metric": metric, "min_delta": -0.005}]
    raw.update(name="typo", arms={"slots": 2, "min_hours": 2, "max_hours": 4,
                                  "metric_silence_hours": 3},
               optimizer={"seed": 0, "bucket_size": 16, "thompson_draws": 64, "proposals": 64})
    return world, config_from_mapping(raw)


def test_a_misspelled_guardrail_is_refused_before_anything_launches(tmp_path):
    world, config = guardrail_on("likez")
    clock = SimClock()
    backend = SimulatedBackend(world, clock, seed=0)
    with pytest.raises(ConfigError, match="likez.*Did you mean 'likes'"):
        run_local(config, backend, clock=clock, hours=6, run_dir=tmp_path)
    assert backend.arm_ids == ()


def test_a_metric_no_arm_reports_raises_the_alarm_and_stops_the_job(tmp_path):
    world, config = guardrail_on("likez")
    clock = SimClock()
    inner = SimulatedBackend(world, clock, seed=0)
    backend = FlakyBackend(inner, {})  # a wrapper that declares no metrics
    with pytest.raises(ConfigError, match="likez.*no accepted reading"):
        run_local(config, backend, clock=clock, hours=24, run_dir=tmp_path)
    events = EventLog(tmp_path / "log").read().to_pylist()
    alarms = [e for e in events if e["kind"] == "job_alarm"]
    assert len(alarms) == 1 and alarms[0]["hour"] == 3
    assert not any(e["kind"] == "arm_registered" and e["hour"] > 3 for e in events)
    assert all(inner.stopped_at(a) is not None for a in inner.arm_ids), "arms were stopped"
