"""Killing the central actor's process and a worker's mid-run loses and double counts nothing."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

import pytest
import ray

from actors.arm_worker import RunnerSettings
from actors.driver import RayDriver
from actors.testing import SharedPlatformFactory, start_platform
from hz_ray.delta import aggregate, reading_to_delta
from hz_ray.sim import SimulatedFactory
from hz_ray.storage import EventLog
from hz_ray.testing import wait_for
from tests.support import world_config

HOURS = 22
SECONDS_PER_HOUR = 0.8


@pytest.mark.ray
def test_kill_central_actor_and_a_worker_mid_run(ray_session, tmp_path):
    config = world_config("chaos", slots=3, max_hours=5)
    # One shared platform (like a real one): a restarted worker finds its arms there.
    platform = start_platform(SimulatedFactory("smooth", seed=3,
                                               realism={"late_fraction": 0.2,
                                                        "duplicate_fraction": 0.2}))
    # A short per-call timeout: while the central actor restarts, workers keep polling.
    driver = RayDriver(config, SharedPlatformFactory(platform), tmp_path,
                       seconds_per_hour=SECONDS_PER_HOUR,
                       runner_settings=RunnerSettings(port_timeout_s=1.0))
    kills: dict[str, int] = {}

    def chaos() -> None:
        wait_for(lambda: driver.clock is not None and driver.clock.now_hours() > 4, 120)
        pid = ray.get(driver.posterior.get_pid.remote())
        os.kill(pid, signal.SIGKILL)
        kills["posterior"] = pid
        wait_for(lambda: driver.clock.now_hours() > 13, 120)
        pid = ray.get(driver.workers[1].get_pid.remote(), timeout=60)
        os.kill(pid, signal.SIGKILL)
        kills["worker"] = pid

    try:
        driver.start()
        killer = threading.Thread(target=chaos, daemon=True)
        killer.start()
        run = driver.run(HOURS)
        killer.join(timeout=5)
        metrics = config.metrics
        assert set(kills) == {"posterior", "worker"}
        assert run.status.restored and run.status.pid != kills["posterior"]
        assert run.workers[1].resumed and run.workers[1].pid != kills["worker"]
        assert run.status.refresh_errors == 0
        reasons = {a_id: a.stop_reason for a_id, a in run.result.arms.items()}
        assert set(reasons.values()) <= {None, "max_hours"}, reasons

        # Every reading the platform published by the end (and, for a stopped arm, within
        # its late-data window) is in the log exactly once, with the platform's values;
        # nothing else is.
        must_have, may_have = {}, {}
        late = config.arms.late_data_hours
        for arm_id, summary in run.result.arms.items():
            cutoff = HOURS - 0.5
            if summary.stopped_hour is not None:
                cutoff = min(cutoff, summary.stopped_hour + late + 0.5)
            for pub in ray.get(platform.publications.remote(arm_id, HOURS + 2.0)):
                r = pub.reading
                if r.metric in metrics:
                    key = (arm_id, r.metric, r.hour)
                    may_have[key] = reading_to_delta(r)
                    if pub.publish_hour <= cutoff:
                        must_have[key] = may_have[key]
        events = EventLog(run.result.log_path).read().to_pylist()
        accepted = {}
        counts = Counter()
        for e in events:
            if e["kind"] == "delta_accepted":
                key = (e["arm_id"], e["metric"], e["hour"])
                counts[key] += 1
                accepted[key] = (e["mean"], e["var"], e["n"])
        assert counts and max(counts.values()) == 1  # nothing counted twice
        missing = set(must_have) - set(accepted)
        assert not missing, sorted(missing)[:5]  # nothing lost
        for key, values in accepted.items():
            ref = may_have.get(key)
            assert ref is not None, key  # no phantom data
            assert values == (ref.mean, ref.var, ref.n), key
        for arm_id, summary in run.result.arms.items():
            for metric in metrics:
                mine = [may_have[k] for k in sorted(accepted) if k[:2] == (arm_id, metric)]
                if mine:
                    ref = aggregate(mine, config.optimizer.var_floor, 3)
                    assert summary.estimates[metric] == ref, (arm_id, metric)
        # The job finished and every slot ran arms. (How many arms a slot fits into the
        # accelerated hours depends on the machine's load, so it is not asserted here; the
        # straggler test covers the cycle time.)
        for stats in run.workers:
            assert stats.arms
    finally:
        driver.shutdown()
        ray.kill(platform)
