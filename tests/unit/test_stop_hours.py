"""Stops made from outside the driver are logged at the job clock's hour (issue 13).

Seen in the 7-day chaos soak (seed 2, day 4): the Ray supervisor stopped 62 arms
8 s after the driver's SIGKILL, at job hour 84.4, but logged the stops at hour 80,
the driver's last heartbeat (no readout, so no heartbeat, came while the central
actor restarted). The platform had served the arms through hour 84, so the
resumed job quarantined their 1,130 readings of hours 81-84 as 'after_stop'.
"""

from __future__ import annotations

import time

from hz_ray.clock import AcceleratedClock, SimClock, current_hour
from hz_ray.reading_checks import screen_reading
from hz_ray.records import GroupStats, HourlyReading
from hz_ray.run_folder import LOCK_FILE, RunFolder
from hz_ray.service.endings import end_job, folder_clock, hour_of_stops
from hz_ray.service.job_state import JobState
from hz_ray.service.posterior import PosteriorService
from hz_ray.storage import EventLog
from tests.support import two_metric_config
from tests.unit.test_arm_lifecycle import CountingBackend

SECONDS_PER_HOUR = 10.0


def a_job_left_with_a_live_arm(tmp_path, clock):
    """A driver that launched one arm at hour 0 and died; returns ``(config, arm_id)``."""
    config = two_metric_config("stophours", slots=2, max_hours=100)
    driver = RunFolder.open(tmp_path, config)
    driver.save_clock(clock)
    svc = PosteriorService(config, tmp_path, job_id=driver.job_id, background=False,
                           driver_lock=tmp_path / LOCK_FILE, driver_holder=driver.holder)
    arm = svc.sample(0, 0, hour=0).arm_id
    svc.transition(0, arm, "launching", 0)
    svc.transition(0, arm, "live", 0)
    svc.commit()
    svc.close()
    driver.close()  # the driver dies: the OS frees the lock
    return config, arm


def logged_arm(tmp_path, arm_id):
    state = JobState(RunFolder.read(tmp_path).job_id)
    state.replay(EventLog(tmp_path / "log").read())
    return state.arms[arm_id]


def verdict(arm_id, hour, data_end):
    """What the check of a resumed job's late-data poll says of this arm's reading."""
    reading = HourlyReading(arm_id, hour, "views", GroupStats(1.1, 0.5, 1000),
                            GroupStats(1.0, 0.5, 1000))
    return screen_reading(reading, arm_id=arm_id, metrics=("views", "likes"), first_hour=0,
                          now_hour=9, data_end=data_end, oldest_hour=None).rule


def test_a_stop_is_logged_at_the_hour_it_returned_in_and_the_served_hours_stay_data(tmp_path):
    config, arm = a_job_left_with_a_live_arm(tmp_path, SimClock())
    platform = CountingBackend()
    platform.launch(arm, {})
    with RunFolder.open(tmp_path, config, resume=True) as stops:
        end_job(tmp_path, stops.job_id, config, platform, hour=2, completed=False,
                clock=SimClock(6.0))
    assert platform.live == set()
    record = logged_arm(tmp_path, arm)
    assert (record.state, record.stopped_hour, record.stop_reason) == ("stopped", 2,
                                                                     "interrupted")
    assert record.served_until == 7  # the platform served it through hour 6
    data_end = max(record.stopped_hour + 1, record.served_until)
    assert [verdict(arm, hour, data_end) for hour in (3, 6, 7)] == ["ok", "ok", "after_stop"]


def test_without_a_clock_the_stop_stays_at_the_callers_hour(tmp_path):
    config, arm = a_job_left_with_a_live_arm(tmp_path, SimClock())
    platform = CountingBackend()
    with RunFolder.open(tmp_path, config, resume=True) as stops:
        end_job(tmp_path, stops.job_id, config, platform, hour=2, completed=False)
    assert logged_arm(tmp_path, arm).served_until == 3


def test_the_supervisor_and_hz_ray_stop_take_the_folders_clock_not_a_new_one(tmp_path):
    """The supervisor built a clock with its epoch at the stop (hour 0) and logged the
    stops at the last heartbeat; both must come from the folder's clock."""
    epoch = time.time() - 84.4 * SECONDS_PER_HOUR
    _, _ = a_job_left_with_a_live_arm(tmp_path, AcceleratedClock(SECONDS_PER_HOUR, epoch))
    clock = folder_clock(tmp_path, known_hour=80, seconds_per_hour=SECONDS_PER_HOUR)
    assert isinstance(clock, AcceleratedClock) and clock.epoch_s == epoch
    assert current_hour(clock) == 84
    assert hour_of_stops(80, clock) == 84
    assert hour_of_stops(90, clock) == 90  # never before what the caller knows
    assert hour_of_stops(80, None) == 80


def test_a_folder_without_a_clock_stands_after_the_known_hour(tmp_path):
    clock = folder_clock(tmp_path, known_hour=80, seconds_per_hour=SECONDS_PER_HOUR)
    assert current_hour(clock) == 81
    assert clock.seconds_per_hour == SECONDS_PER_HOUR
