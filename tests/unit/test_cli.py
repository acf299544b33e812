"""The ``hz-ray`` command line: help, version, errors, flags over the config, folder commands."""

from __future__ import annotations

import json

import pytest
import yaml

from hz_ray import __version__
from hz_ray.cli import cli, main
from hz_ray.cli.run_commands import with_overrides
from hz_ray.config import config_from_mapping
from hz_ray.errors import ConfigError
from tests.conftest import small_config_mapping
from tests.support import world_config

COMMANDS = sorted(cli.commands)


def test_version_and_help_of_every_command(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hz-ray {__version__}"
    assert set(COMMANDS) == {"run", "demo", "validate", "status", "stop", "report", "replay"}
    for command in COMMANDS:
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"Usage: hz-ray {command}"), out
        assert main([command, "-h"]) == 0
        capsys.readouterr()


@pytest.mark.parametrize("argv", [["bogus"], ["run"], ["run", "missing.yaml"],
                                  ["run", "--hours", "0", "x.yaml"], ["status"]])
def test_usage_errors_are_one_line_with_a_hint_and_exit_2(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("hz-ray: error: "), err
    assert "--help" in err and "Traceback" not in err


def test_command_line_flags_override_the_clock_and_telemetry_sections():
    config = config_from_mapping(small_config_mapping(
        clock="wall", telemetry={"host": "127.0.0.1", "port": 9464}))
    assert config.clock_mode() == "wall"
    paced = with_overrides(config, seconds_per_hour=5.0)  # implies accelerated
    assert paced.clock_mode() == "accelerated" and paced.clock.seconds_per_hour == 5.0
    assert with_overrides(config, clock="simulated").clock_mode() == "simulated"
    served = with_overrides(config, metrics_port=0)
    assert served.telemetry.port == 0 and served.telemetry.host == "127.0.0.1"
    assert with_overrides(config, no_metrics=True).telemetry.enabled is False
    with pytest.raises(ConfigError, match="clock.seconds_per_hour"):
        with_overrides(config, clock="accelerated")  # no pace anywhere
    with pytest.raises(ConfigError, match="telemetry.port"):
        with_overrides(config, metrics_port=15000)  # Ray's worker port range


def test_the_clock_defaults_to_wall_unless_the_backend_is_simulated():
    simulated = config_from_mapping(small_config_mapping())
    assert simulated.clock_mode() == "simulated"
    platform = config_from_mapping(small_config_mapping(
        backend={"target": "hz_ray.backends.file_drop:FileDropBackend",
                 "kwargs": {"root": "drop"}}))
    assert platform.clock_mode() == "wall"


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """A short job run by `hz-ray run` (simulated clock) in a run folder."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "job.yaml"
    raw = world_config("cli-job", slots=2, max_hours=3).to_mapping()
    raw["backend"] = {"target": "simulated:smooth"}
    config.write_text(yaml.safe_dump(raw))
    run_dir = root / "run"
    assert main(["run", str(config), "--hours", "6", "--run-dir", str(run_dir), "--quiet"]) == 0
    return config, run_dir


def test_run_prints_the_job_and_its_metrics_address_then_the_folder_commands_read_it(
        finished_job, capsys, tmp_path):
    _config, run_dir = finished_job
    telemetry = json.loads((run_dir / "telemetry.json").read_text())
    assert telemetry["url"].startswith("http://127.0.0.1:")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["hour"] == 5 and status["job_id"].startswith("cli-job-")

    assert main(["status", str(run_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["running"] is False and shown["unsettled"] == []
    assert shown["recommendation"]["arm_id"] == status["recommendation"]["arm_id"]
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "NOT running, after job hour 5" in out and "every arm the job launched is stopped" in out

    assert main(["report", str(run_dir), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").exists()
    assert main(["replay", str(run_dir)]) == 0
    assert "(the same pick)" in capsys.readouterr().out
    assert main(["stop", str(run_dir)]) == 0  # nothing left to stop
    assert "0 arm(s) stopped" in capsys.readouterr().out


def test_resume_with_another_clock_keeps_the_folders_and_says_so(finished_job, capsys):
    config, run_dir = finished_job
    code = main(["run", str(config), "--hours", "7", "--run-dir", str(run_dir), "--resume",
                 "--clock", "accelerated", "--seconds-per-hour", "0.05", "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert "keeps the clock it started with (simulated)" in err, err
    assert json.loads((run_dir / "clock.json").read_text())["kind"] == "simulated"


def test_run_checks_the_config_against_its_backend_before_launching(tmp_path, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(small_config_mapping(backend={"target": "simulated:smooth"})))
    assert main(["run", str(config), "--hours", "2", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "w_watch" in err, err
    assert not (tmp_path / "run").exists()  # refused before the job's folder was made


def test_status_and_stop_of_a_folder_without_a_job_are_one_line_errors(tmp_path, capsys):
    for command in ("status", "stop", "report"):
        assert main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "hz-ray: error:" in err, err
