"""Dependency rule: the library never pulls in Ray; the arm-side modules not even torch."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imported(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return {name.split(".")[0] for name in out}


@pytest.mark.parametrize("module", ["hz_ray", "hz_ray.local", "hz_ray.optimizer",
                                    "hz_ray.backends", "hz_ray.telemetry", "hz_ray.storage"])
def test_hz_ray_modules_do_not_import_ray(module):
    code = f"import {module}\n"
    if module == "hz_ray":
        code += "from hz_ray import run_local, load_config, SimClock, TuningConfig\n"
    assert "ray" not in _imported(code)


def test_arm_side_modules_do_not_import_torch():
    modules = _imported("import hz_ray.arm_feed, hz_ray.delta, hz_ray.records, hz_ray.lifecycle")
    assert "torch" not in modules
    assert "ray" not in modules
