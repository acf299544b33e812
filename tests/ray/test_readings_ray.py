"""Random mixes of valid and invalid readings through a whole job on Ray (run_on_ray).

The twin of tests/unit/test_readings_drivers.py, with the same oracle: the
first valid value of every key stands on this driver too, however many polls
of an hour re-fetch the same batch, and every distinct invalid reading is
logged once with its reason.
"""

from __future__ import annotations

import pickle

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings

from actors import run_on_ray
from hz_ray.service.slot import RunnerSettings
from tests.mix_platform import MixFactory
from tests.unit.test_readings_drivers import HOURS, check_job_against_the_oracle, mix_config
from tests.unit.test_readings_property import ARM, FIRST_HOUR, reading_mixes

QUIET = RunnerSettings(backend_attempts=1, initial_backoff_s=0.0, max_backoff_s=0.0,
                       poll_interval_hours=0.5)


def picklable(mix) -> bool:
    try:
        pickle.loads(pickle.dumps(mix))
    except Exception:  # noqa: BLE001 - objects whose every method raises
        return False
    return True


@pytest.mark.ray
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mix=reading_mixes())
def test_run_on_ray_ingests_exactly_the_first_valid_readings(ray_session, tmp_path_factory, mix):
    assume(mix.data_end is None and picklable(mix))
    run_dir = tmp_path_factory.mktemp("mix-ray")
    result = run_on_ray(mix_config(), MixFactory(mix, ARM, FIRST_HOUR), hours=HOURS,
                        run_dir=run_dir, seconds_per_hour=0.4, job_id="mix",
                        runner_settings=QUIET)
    rows = pq.read_table(run_dir / "log").to_pylist()
    live = [e["arm_id"] for e in rows if e["kind"] == "arm_state" and e["state"] == "live"]
    assert len(live) == 1
    check_job_against_the_oracle(mix, rows, live[0], result.recommendation)
