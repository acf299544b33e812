"""A job on a wall-clock platform: started by run_local, stopped, resumed by run_on_ray.

The platform is a file drop played by a thread of this test process
(:class:`hz_ray.testing.FileDropPlatform`), on real time (one job hour = 1 s).
The second driver picks up the first one's folder: same job id, same clock,
nothing published lost or counted twice. The first driver's end stopped its arms
(every ending does), so the second launches fresh ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pyarrow.parquet as pq
import pytest

from actors import run_on_ray
from hz_ray.backends.file_drop import FileDropBackend
from hz_ray.clock import AcceleratedClock
from hz_ray.config import BackendSpec
from hz_ray.local import run_local
from hz_ray.records import parse_arm_id
from hz_ray.run_folder import RunFolder
from hz_ray.testing import FileDropPlatform, wait_for
from tests.support import two_metric_config

SECONDS_PER_HOUR = 1.0
LOCAL_HOURS, TOTAL_HOURS = 5, 24  # the Ray phase may start a few hours late on a busy box


def lift(params):
    w = math.log(params["w_like"])
    return {"views": 0.02 * w, "likes": -0.004 * abs(w)}


def _explain(missing, log, arms):
    """The log's events and the arms' hours behind keys published but not accepted."""
    names = {a for a, _, _ in missing}
    events = [(e["kind"], e["arm_id"], e["metric"], e["hour"], e["reason"], e["state"])
              for e in log if e["arm_id"] in names and e["kind"] != "delta_accepted"]
    spans = {a: (arms[a].launched_hour, arms[a].stopped_hour) for a in names if a in arms}
    return f"published, not accepted: {missing}; arms (launched, stopped): {spans}; " \
           f"their other events: {events}"


@pytest.mark.ray
def test_local_job_on_a_wall_clock_resumes_on_ray_with_nothing_lost(ray_session, tmp_path):
    root, run_dir = tmp_path / "platform", tmp_path / "run"
    base = two_metric_config("handover", slots=2, max_hours=4)
    config = dataclasses.replace(base, backend=BackendSpec(
        "hz_ray.backends.file_drop:FileDropBackend", {"root": str(root)}))
    clock = AcceleratedClock(SECONDS_PER_HOUR, time.time() + 0.2)
    platform = FileDropPlatform(root, clock, lift).start()
    try:
        first = run_local(config, FileDropBackend(root), clock=clock, hours=LOCAL_HOURS,
                          run_dir=run_dir)
        live_at_handover = {a for a, s in first.arms.items() if s.stopped_hour is None}
        assert live_at_handover, "the local phase ended with live arms"
        assert wait_for(lambda: not platform.live() & live_at_handover, timeout_s=10), \
            "run_local's end stops its arms on the platform"
        # The job is stopped here for longer than late_data_hours; the platform goes on
        # serving its arms, and publishes the last hours of the arms it stopped.
        time.sleep((config.arms.late_data_hours + 1) * SECONDS_PER_HOUR)
        second = run_on_ray(config, hours=TOTAL_HOURS, run_dir=run_dir, resume=True,
                            seconds_per_hour=SECONDS_PER_HOUR)
        # the platform (a thread of this test) serves the final stops before it closes
        assert wait_for(lambda: platform.live() == set(), timeout_s=10), platform.live()
    finally:
        platform.close()

    job_id = RunFolder.read(run_dir).job_id
    log = pq.read_table(second.log_path).to_pylist()
    starts = [json.loads(e["payload_json"]) for e in log if e["kind"] == "job_started"]
    assert [(s["driver"], s["restored"], s["job_id"]) for s in starts] == [
        ("local", False, job_id), ("ray", True, job_id)]

    # Nothing counted twice; everything published in time for the job reached the log.
    accepted = [(e["arm_id"], e["metric"], e["hour"]) for e in log
                if e["kind"] == "delta_accepted"]
    assert len(accepted) == len(set(accepted))
    last_hour = max(h for h, _ in second.recommendations)
    published = {k for k in platform.written if k[2] <= last_hour - 2}
    missing = sorted(published - set(accepted))
    assert published and not missing, _explain(missing, log, second.arms)

    # One set of arms, one id scheme: the Ray phase continued the live arms, and
    # no slot ever had two arms live at once.
    arms = second.arms
    assert set(first.arms) <= set(arms) and live_at_handover <= set(arms)
    assert all(parse_arm_id(a)[0] == job_id for a in arms)
    registered = [e["arm_id"] for e in log if e["kind"] == "arm_registered"]
    assert len(registered) == len(set(registered)) == len(arms)
    for slot in range(config.arms.slots):
        spans = sorted((s.launched_hour, s.stopped_hour if s.stopped_hour is not None
                        else math.inf) for a, s in arms.items() if parse_arm_id(a)[1] == slot)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))
    assert len(arms) > len(first.arms)  # the Ray phase launched new arms too
    hours = [h for h, _ in second.recommendations]
    local_hours = [h for h, _ in first.recommendations]
    assert local_hours[-1] == LOCAL_HOURS - 1 and hours[:len(local_hours)] == local_hours
    assert hours == sorted(set(hours)) and hours[-1] >= TOTAL_HOURS - 2
