"""Random mixes of valid and invalid readings through a whole job (run_local).

The oracle is the feed-level one (``expected_outcome``): after the job, the log
holds exactly the first valid value of every key, every distinct invalid
reading is quarantined in the log with a reason, each once, and the job still
recommends. The Ray driver's twin is tests/ray/test_readings_ray.py.
"""

from __future__ import annotations

import pyarrow.parquet as pq
from hypothesis import HealthCheck, assume, given, settings

from hz_ray.clock import SimClock
from hz_ray.config import config_from_mapping
from hz_ray.delta import reading_to_delta
from hz_ray.local import run_local
from hz_ray.service.slot import RunnerSettings
from tests.conftest import small_config_mapping
from tests.mix_platform import MixPlatform
from tests.unit.test_readings_property import (
    ARM,
    FIRST_HOUR,
    LAST_POLL,
    expected_outcome,
    reading_mixes,
)

HOURS = LAST_POLL + 1
QUIET = RunnerSettings(backend_attempts=1, initial_backoff_s=0.0, max_backoff_s=0.0)


def mix_config():
    raw = small_config_mapping(
        arms={"slots": 1, "min_hours": 1, "max_hours": 48, "guardrail_stop_probability": 0,
              "contender_stop_share": 0, "metric_silence_hours": 0},
        optimizer={"seed": 0, "bucket_size": 16, "thompson_draws": 64, "proposals": 64})
    return config_from_mapping(raw)


def check_job_against_the_oracle(mix, log_rows, live_arm, recommendation):
    kept, due = expected_outcome(mix)
    accepted = {(e["metric"], e["hour"]): (e["mean"], e["var"], e["n"]) for e in log_rows
                if e["kind"] == "delta_accepted" and e["arm_id"] == live_arm}
    keys = [(e["metric"], e["hour"]) for e in log_rows
            if e["kind"] == "delta_accepted" and e["arm_id"] == live_arm]
    assert len(keys) == len(set(keys)), "a key was accepted twice"
    expected = {}
    for key, reading in kept.items():
        d = reading_to_delta(reading)
        expected[key] = (d.mean, d.var, d.n)
    assert accepted == expected, "the log must hold exactly the first valid value of each key"
    rejected = [e for e in log_rows if e["kind"] == "delta_rejected"]
    assert all(e["reason"] for e in rejected)
    assert len(rejected) == sum(due.values()), "each distinct invalid reading logged once"
    assert recommendation is not None


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mix=reading_mixes())
def test_run_local_ingests_exactly_the_first_valid_readings(tmp_path_factory, mix):
    assume(mix.data_end is None)  # the job decides when its arm stops
    clock = SimClock()
    platform = MixPlatform(mix, clock, ARM, FIRST_HOUR)
    run_dir = tmp_path_factory.mktemp("mix")
    result = run_local(mix_config(), platform, clock=clock, hours=HOURS, run_dir=run_dir,
                       job_id="mix", runner_settings=QUIET)
    assert platform.live is not None and platform.launches[0][1] == FIRST_HOUR
    rows = pq.read_table(run_dir / "log").to_pylist()
    check_job_against_the_oracle(mix, rows, platform.live, result.recommendation)
