"""The shipped examples load and run."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from hz_ray.cli import demo_config, main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["quickstart.yaml", "file_drop_platform.yaml"])
def test_example_configs_validate(name, capsys):
    assert main(["validate", str(EXAMPLES / name)]) == 0
    assert "valid" in capsys.readouterr().out


def test_demo_config_is_the_value_model_world():
    config = demo_config()
    assert config.backend.target == "simulated:value_model"
    assert config.arms.slots == 8


def test_cli_runs_a_short_local_job_and_prints_a_readout(tmp_path, capsys):
    code = main(["run", str(EXAMPLES / "quickstart.yaml"), "--hours", "3",
                 "--run-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("hour ") >= 3 and "=== hz-ray readout ===" in out
    assert (tmp_path / "checkpoint.json").exists()


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: []\nobjective: {metric: views}\n")
    assert main(["validate", str(bad)]) == 2
    assert "'parameters' must be a non-empty list" in capsys.readouterr().err


def test_custom_backend_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "custom_backend.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "=== hz-ray readout ===" in out
