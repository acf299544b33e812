"""One job, one identity, one folder: creation, refusal, resume checks, the lock."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap

import pytest

from hz_ray.clock import AcceleratedClock, SimClock
from hz_ray.config import config_from_mapping
from hz_ray.errors import ConfigError, StateError
from hz_ray.local import run_local
from hz_ray.run_folder import (
    CONFIG_FILE,
    JOB_FILE,
    RunFolder,
    check_hours,
    config_differences,
    config_fingerprint,
)
from hz_ray.sim import SimulatedBackend, make_world
from tests.conftest import small_config_mapping


def test_a_new_folder_gets_an_id_the_config_and_its_fingerprint(small_config, tmp_path):
    with RunFolder.open(tmp_path / "run", small_config) as folder:
        assert re.fullmatch(r"test-job-[0-9a-f]{4}", folder.job_id)
        saved = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
        assert config_from_mapping(saved) == small_config
        job = json.loads((tmp_path / "run" / JOB_FILE).read_text())
        assert job["fingerprint"] == config_fingerprint(small_config)
    other = RunFolder.open(tmp_path / "other", small_config)
    assert other.job_id != folder.job_id  # a unique suffix per job
    other.close()
    odd = dataclasses.replace(small_config, name="feed vm/2")
    with RunFolder.open(tmp_path / "odd", odd) as folder:
        assert re.fullmatch(r"feed-vm-2-[0-9a-f]{4}", folder.job_id)


def test_a_folder_that_holds_a_job_is_never_reused_without_resume(small_config, tmp_path):
    RunFolder.open(tmp_path, small_config).close()
    with pytest.raises(StateError, match="'run_dir' must be a folder without a job") as info:
        RunFolder.open(tmp_path, small_config)
    assert "resume" in info.value.hint
    with pytest.raises(StateError, match="a job's folder"):
        RunFolder.open(tmp_path / "empty", small_config, resume=True)


def test_resume_with_another_config_names_the_differing_fields(small_config, tmp_path):
    RunFolder.open(tmp_path, small_config).close()
    changed = dataclasses.replace(
        small_config, arms=dataclasses.replace(small_config.arms, max_hours=20),
        optimizer=dataclasses.replace(small_config.optimizer, seed=7))
    with pytest.raises(StateError, match=r"arms\.max_hours, optimizer\.seed"):
        RunFolder.open(tmp_path, changed, resume=True)
    with RunFolder.open(tmp_path, small_config, resume=True) as folder:  # the same config
        assert folder.identity.name == "test-job"
    with pytest.raises(StateError, match="job_id"):
        RunFolder.open(tmp_path, small_config, resume=True, job_id="someone-else")


def test_config_differences_are_dotted_paths():
    old = {"arms": {"slots": 2, "max_hours": 4}, "name": "a"}
    new = {"arms": {"slots": 2, "max_hours": 5}, "name": "b", "extra": 1}
    assert config_differences(old, new) == ["arms.max_hours", "extra", "name"]


def test_the_lock_keeps_a_second_process_out(small_config, tmp_path):
    folder = RunFolder.open(tmp_path, small_config)
    code = textwrap.dedent(f"""
        from hz_ray.config import config_from_mapping
        from hz_ray.run_folder import RunFolder
        from hz_ray.errors import StateError
        import json
        config = config_from_mapping(json.loads(open({str(tmp_path / CONFIG_FILE)!r}).read()))
        try:
            RunFolder.open({str(tmp_path)!r}, config, resume=True)
        except StateError as exc:
            print("refused:", exc)
        else:
            print("opened")
    """)
    run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True,  # noqa: E731
                                 text=True, check=True, timeout=120).stdout
    try:
        assert "refused: 'run_dir' must be a folder no other process is running" in run()
    finally:
        folder.close()
    assert run().strip() == "opened"


def test_the_clock_is_kept_with_the_job(small_config, tmp_path):
    with RunFolder.open(tmp_path / "wall", small_config) as folder:
        folder.save_clock(AcceleratedClock(2.0, 1_000.0))
        folder.save_clock(AcceleratedClock(9.0, 5.0))  # recorded once: the first one stays
        clock = folder.saved_clock(next_hour=3)
        assert (clock.seconds_per_hour, clock.epoch_s) == (2.0, 1_000.0)
    with RunFolder.open(tmp_path / "sim", small_config) as folder:
        assert folder.saved_clock(3) is None
        folder.save_clock(SimClock())
        assert folder.saved_clock(3).now_hours() == 3.0
        paced = folder.saved_clock(3, seconds_per_hour=0.5)
        assert abs(paced.now_hours() - 3.0) < 0.1


def test_hours_out_of_range_is_the_same_error_on_every_driver():
    for bad in (0, -1, 2.5, True, "72"):
        with pytest.raises(ConfigError, match="'hours' must be an integer >= 1"):
            check_hours(bad)
    assert check_hours(72) == 72


def test_run_local_refuses_a_second_job_in_the_folder_and_resumes_the_first(tmp_path):
    world = make_world("smooth")
    raw = world.config_mapping()
    raw.update(small_config_mapping(), parameters=raw["parameters"],
               objective=raw["objective"], constraints=raw["constraints"],
               optimizer={"seed": 0, "bucket_size": 16, "thompson_draws": 64, "proposals": 64})
    config = config_from_mapping(raw)
    clock = SimClock()
    backend = SimulatedBackend(world, clock, seed=0)
    first = run_local(config, backend, clock=clock, hours=3, run_dir=tmp_path)
    with pytest.raises(StateError, match="without a job"):
        run_local(config, backend, clock=clock, hours=4, run_dir=tmp_path)
    again = run_local(config, backend, clock=clock, hours=5, run_dir=tmp_path, resume=True)
    assert [h for h, _ in again.recommendations] == [0, 1, 2, 3, 4]
    assert set(first.arms) <= set(again.arms)
