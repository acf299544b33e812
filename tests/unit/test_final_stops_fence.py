"""A dead driver's central actor launches nothing once the final stops hold the folder.

Reported by CI (``test_ray_sigkill_then_hz_ray_stop_leaves_no_orphan``): after
a driver's SIGKILL its Ray actors live on for seconds. The central actor
refused 'launching' only while the run folder's lock was free, so once
``hz-ray stop`` took the lock a retrying worker was let through: the stop had
read the arm as only proposed ('never launched', no platform call) and the arm
went live after it, an orphan. These tests play that in process.
"""

from __future__ import annotations

import pytest

from hz_ray.errors import TransientError
from hz_ray.run_folder import LOCK_FILE, RunFolder, is_held_by
from hz_ray.service.backend_calls import CallPolicy
from hz_ray.service.posterior import PosteriorService
from hz_ray.service.reconcile import reconcile_folder
from hz_ray.storage import EventLog
from tests.support import two_metric_config
from tests.unit.test_arm_lifecycle import CountingBackend

NO_WAIT = CallPolicy(timeout_s=1.0, attempts=1, initial_backoff_s=0.0, max_backoff_s=0.0,
                     jitter_s=0.0)


def launching_steps(run_dir, arm_id):
    return [e for e in EventLog(run_dir / "log").read().to_pylist()
            if e["kind"] == "arm_state" and e["arm_id"] == arm_id and e["state"] == "launching"]


@pytest.fixture
def job(tmp_path):
    """A driver holding the folder, and its central service (as the Ray driver makes them)."""
    config = two_metric_config("fence", slots=3, max_hours=4)
    driver = RunFolder.open(tmp_path, config)
    svc = PosteriorService(config, tmp_path, job_id=driver.job_id, background=False,
                           driver_lock=tmp_path / LOCK_FILE, driver_holder=driver.holder)
    yield config, driver, svc
    svc.close()
    driver.close()


def test_is_held_by_tells_the_driver_from_the_next_holder(job, tmp_path):
    config, driver, _ = job
    assert is_held_by(tmp_path, driver.holder)
    driver.close()  # the driver dies: the OS frees the lock
    assert not is_held_by(tmp_path, driver.holder)
    with RunFolder.open(tmp_path, config, resume=True) as stops:
        assert is_held_by(tmp_path, stops.holder)
        assert not is_held_by(tmp_path, driver.holder)  # held, but not by the driver


def test_no_arm_is_handed_out_or_launched_while_the_final_stops_hold_the_folder(job, tmp_path):
    config, driver, svc = job
    first = svc.sample(0, 0, hour=0)
    assert svc.transition(0, first.arm_id, "launching", 0)
    sampled = svc.sample(1, 0, hour=0)  # handed out; its worker is slow to go on
    driver.close()
    with RunFolder.open(tmp_path, config, resume=True):  # hz-ray stop (or the supervisor)
        assert svc.sample(2, 0, hour=1) is None
        with pytest.raises(TransientError, match="driver is gone"):
            svc.transition(1, sampled.arm_id, "launching", 1)
    assert launching_steps(tmp_path, sampled.arm_id) == []


def test_launching_is_refused_when_the_final_stops_took_the_folder_while_it_was_logged(
        job, tmp_path):
    """The final stops may take the folder between the first check and the durable step:
    they may have read the log before it, so the arm must not reach the platform."""
    config, driver, svc = job
    arm = svc.sample(0, 0, hour=0)
    taken = []
    wait = svc._commits.wait

    def take_the_folder_meanwhile(*ticket):
        wait(*ticket)
        if not taken:
            driver.close()
            taken.append(RunFolder.open(tmp_path, config, resume=True))

    svc._commits.wait = take_the_folder_meanwhile
    try:
        with pytest.raises(TransientError, match="driver is gone"):
            svc.transition(0, arm.arm_id, "launching", 0)
    finally:
        svc._commits.wait = wait
        for folder in taken:
            folder.close()
    assert len(launching_steps(tmp_path, arm.arm_id)) == 1  # the stops see it as launching


class LateLaunchPlatform(CountingBackend):
    """A platform where the launch of ``late`` lands only after its first stop returned."""

    def __init__(self, late):
        super().__init__()
        self.late = late

    def in_flight_launch_lands(self, _seconds):
        if ("launch", self.late) not in self.calls and ("stop", self.late) in self.calls:
            self.launch(self.late, {})


def test_an_arm_found_launching_is_stopped_again_after_the_settle_wait(job, tmp_path):
    config, driver, svc = job
    launching = svc.sample(0, 0, hour=0).arm_id
    svc.transition(0, launching, "launching", 0)  # its launch call is still on its way
    live = svc.sample(1, 0, hour=0).arm_id
    svc.transition(1, live, "launching", 0)
    svc.transition(1, live, "live", 0)
    platform = LateLaunchPlatform(launching)
    platform.launch(live, {})
    svc.commit()
    svc.close()
    driver.close()
    with RunFolder.open(tmp_path, config, resume=True) as stops:
        report = reconcile_folder(tmp_path, stops.job_id, platform, hour=1, reason="reconciled",
                                  policy=NO_WAIT, settle_s=0.01,
                                  sleep=platform.in_flight_launch_lands)
    assert platform.live == set(), platform.calls
    assert report.stopped_again == (launching,) and report.ok
    assert platform.calls.count(("stop", live)) == 1  # a live arm's stop is final
    assert "1 stopped again" in report.summary()
