"""report.html rendered in headless Chromium: a real page that names the recommended arm."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from hz_ray.backends import SimulatedBackend, make_world
from hz_ray.clock import SimClock
from hz_ray.config import config_from_mapping
from hz_ray.local import run_local
from hz_ray.readout import build_report, load_run
from hz_ray.readout.html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A short smooth-world job (~2 s) that ends on a real arm, and its report."""
    root = tmp_path_factory.mktemp("html")
    world = make_world("smooth")
    raw = world.config_mapping()
    raw.update(name="html-test", arms={"slots": 2, "min_hours": 2, "max_hours": 6},
               optimizer={"seed": 3, "bucket_size": 32, "thompson_draws": 300,
                          "proposals": 256, "hold_fixed": "w_click", "recommend_min_hours": 3})
    clock = SimClock()
    backend = SimulatedBackend(world, clock, seed=0, traffic_per_arm=200_000)
    result = run_local(config_from_mapping(raw), backend, clock=clock, hours=14,
                       run_dir=root / "run")
    assert not result.recommendation.is_control, "the job must end on a real arm"
    return result, build_report(root / "run", root / "out")


def chromium(*args, home):
    if CHROMIUM is None:
        pytest.skip("no headless browser: install Debian's 'chromium' (make system-tools)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={home / 'profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "HOME": str(home)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_is_self_contained(report):
    result, files = report
    page = files.html.read_text()
    assert re.search(r"(src|href)=\"(https?:)?//", page) is None  # no outside request
    assert page.count('src="data:image/png;base64,') == len(files.pngs) == 3
    assert f'id="recommended-arm">{result.recommendation.arm_id}<' in page
    for arm_id in result.arms:
        assert f"<code>{arm_id}</code>" in page


def test_every_string_is_escaped(report, tmp_path):
    result, files = report
    record = load_run(files.html.parent.parent / "run")
    hostile = dataclasses.replace(record, name='<script>alert("x")</script>&')
    page = render_html(hostile)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page


def test_chromium_renders_a_page_that_names_the_recommended_arm(report, tmp_path):
    result, files = report
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2000", files.html.as_uri(),
             home=tmp_path)
    import matplotlib.image as mpimg

    image = mpimg.imread(shot)[..., :3]
    assert image.shape[:2] == (2000, 1280)
    pixels = (image.reshape(-1, 3) * 255).astype(np.uint8)
    assert image.std() > 0.05, "blank screenshot"
    assert len(np.unique(pixels, axis=0)) > 200  # text, tables and charts, not a flat page
    not_white = (pixels.min(axis=1) < 230).mean()
    assert 0.03 < not_white < 0.9, not_white
    top = (image[:300] * 255).astype(np.uint8).reshape(-1, 3)  # the green pick box is on top
    green = (top[:, 1] > 230) & (top[:, 0] < 230) & (top[:, 2] < 235)
    assert green.mean() > 0.01
    dom = chromium("--dump-dom", files.html.as_uri(), home=tmp_path)
    arm = re.search(r'id="recommended-arm">([^<]+)<', dom)
    assert arm is not None and arm.group(1) == result.recommendation.arm_id
    assert dom.count("data:image/png;base64,") == 3
    assert "Hours and traffic used" in dom and f"{files.pngs[0].name}" not in dom
