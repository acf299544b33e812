"""The Grafana dashboard: its shape, and every panel's PromQL against a real Prometheus.

The real test runs a short job on an accelerated clock (0.6 s per job hour)
while Prometheus scrapes it every second, then evaluates each panel target's
``expr`` through Prometheus's HTTP API over the job's time span, with Grafana's
variables replaced by concrete values: each query must be valid and return
finite data.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import hz_ray
from hz_ray.backends import SimulatedBackend, make_world
from hz_ray.clock import AcceleratedClock
from hz_ray.config import TuningConfig, config_from_mapping
from hz_ray.local import run_local
from hz_ray.records import GroupStats, HourlyReading, arm_id_for
from hz_ray.run_folder import config_fingerprint
from hz_ray.service.messages import HourProgress
from hz_ray.service.slot import RunnerSettings
from hz_ray.telemetry import Telemetry
from hz_ray.testing import FlakyBackend
from tests.unit.test_telemetry_prometheus import (
    free_port,
    needs_prometheus,
    prom_api,
    start_prometheus,
    wait_ready,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "cluster_configs" / "grafana" / \
    "hz-ray-dashboard.json"
JOB = "dash-0001"
HOURS = 14
SECONDS_PER_HOUR = 0.6
SELECTOR = re.compile(r"\b(hzray_\w+)(\{[^}]*\})?")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", ()))


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in _panels(_dashboard()["panels"])
            for target in panel.get("targets", ())]


def _substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's variables replaced; an unknown variable fails the test."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown dashboard variable ${name} in {expr!r}"
        return values[name]
    return VARIABLE.sub(value, expr)


# ------------------------------------------------------------------ shape
def test_the_dashboard_selects_a_job_and_a_prometheus_data_source():
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    job = variables["tuning_job"]
    assert job["type"] == "query"
    assert job["definition"] == "label_values(hzray_job_info, tuning_job)"
    assert job["query"]["query"] == job["definition"]
    assert job["datasource"]["uid"] == "${datasource}"
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_selector_is_scoped_to_the_job_and_every_metric_is_on_the_dashboard():
    exprs = [target["expr"] for _, target in _targets()]
    used = set()
    for expr in exprs:
        for name, labels in SELECTOR.findall(expr):
            assert 'tuning_job="$tuning_job"' in labels, f"{name} unscoped in {expr!r}"
            used.add(re.sub(r"_(bucket|count|sum|info)$", "", name).removesuffix("_total"))
    exported = {family.name for family in Telemetry("names").registry.collect()}
    assert exported - used == set()
    assert used - exported == set()  # no panel reads a metric that does not exist


# ------------------------------------------------------------------ real run
def _config(metrics_port: int) -> tuple[Any, TuningConfig]:
    world = make_world("smooth")
    raw = world.config_mapping()
    raw.update(name="dash", arms={"slots": 3, "min_hours": 2, "max_hours": 3},
               optimizer={"seed": 3, "bucket_size": 16, "thompson_draws": 64, "proposals": 64,
                          "hold_fixed": "w_click"},
               telemetry={"host": "127.0.0.1", "port": metrics_port})
    return world, config_from_mapping(raw)


class _OneBadReading:
    """A platform whose first fetch of one arm also returns a reading from the future."""

    def __init__(self, inner: Any, arm_id: str) -> None:
        self.inner = inner
        self.arm_id = arm_id
        self.metrics = inner.metrics
        self.sent = False

    def launch(self, arm_id: str, params: Any) -> None:
        self.inner.launch(arm_id, params)

    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading]:
        readings = list(self.inner.fetch(arm_id, since_hour))
        if arm_id == self.arm_id and readings and not self.sent:
            self.sent = True
            stats = GroupStats(1.0, 0.1, 100)
            readings.append(HourlyReading(arm_id, 10_000, readings[0].metric, stats, stats))
        return readings

    def stop(self, arm_id: str) -> None:
        self.inner.stop(arm_id)


def _finite_points(result: list[dict[str, Any]]) -> int:
    return sum(1 for series in result for _, value in series.get("values", [])
               if math.isfinite(float(value)))


@pytest.mark.prometheus
@needs_prometheus
def test_every_panel_query_returns_data_from_a_real_job(tmp_path):
    metrics_port = free_port(28000, 28999)
    prom_port = free_port(28000, 28999, avoid=(metrics_port,))
    world, config = _config(metrics_port)
    clock = AcceleratedClock(SECONDS_PER_HOUR, time.time() + 0.5)
    first = arm_id_for(JOB, 0, 0)
    backend = FlakyBackend(_OneBadReading(SimulatedBackend(world, clock, seed=0,
                                                           traffic_per_arm=50_000), first),
                           {("stop", first): 3})  # 2 tries per call: one failed stop
    backend.metrics = world.metrics
    settings = RunnerSettings(backend_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)
    proc = start_prometheus(tmp_path, metrics_port, prom_port)
    try:
        wait_ready(prom_port, proc)
        hour_times: list[float] = []
        scraped: list[str] = []

        def progress(record: HourProgress) -> None:
            hour_times.append(time.time())
            if record.hour == 4:
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                scraped.append(urllib.request.urlopen(url, timeout=5).read().decode())

        run_local(config, backend, clock=clock, hours=HOURS, run_dir=tmp_path / "run",
                  progress=progress, job_id=JOB, runner_settings=settings)
        start, end = hour_times[0], hour_times[-1]
        assert end - start > 5, "the job ran too fast for Prometheus to scrape it"

        # The scrape itself: identity, no _created twins, the new names only.
        body = scraped[0]
        assert "_created" not in body
        assert (f'hzray_job_info{{config_fingerprint="{config_fingerprint(config)}",'
                f'job_id="{JOB}",tuning_job="dash",version="{hz_ray.__version__}"}} 1.0') in body
        for name in ("hzray_recommended_gain", "hzray_recommended_gain_lcb",
                     "hzray_recommended_p_feasible", "hzray_slot_p_feasible",
                     "hzray_recommended_metric_delta"):
            assert re.search(rf"^{name}\{{", body, re.M) is None, name
            assert re.search(rf"^{name}_ratio\{{", body, re.M), name

        values = {"tuning_job": "dash", "__rate_interval": "4s", "__interval": "1s",
                  "__range": f"{math.ceil(end - start)}s", "datasource": "prometheus"}
        failures = []
        for title, target in _targets():
            expr = _substitute(target["expr"], values)
            answer = prom_api(prom_port, "query_range", query=expr, start=start, end=end, step=1)
            if answer.get("status") != "success":
                failures.append(f"{title}: {expr}: {answer.get('error')}")
                continue
            result = answer["data"]["result"]
            if not result or _finite_points(result) == 0:
                failures.append(f"{title}: {expr}: no data")
            if target.get("instant"):
                now = prom_api(prom_port, "query", query=expr, time=end)
                if now.get("status") != "success" or not now["data"]["result"]:
                    failures.append(f"{title}: {expr}: no data at the job's last hour")
        assert failures == []

        # What the injected faults must show.
        def last(expr: str) -> float:
            answer = prom_api(prom_port, "query", query=expr, time=end)
            assert answer["status"] == "success", answer
            assert answer["data"]["result"], expr
            return float(answer["data"]["result"][0]["value"][1])

        assert last('hzray_deltas_rejected_total{tuning_job="dash",reason="future_hour"}') >= 1
        assert last('hzray_arm_stop_failures_total{tuning_job="dash"}') >= 1
        assert last('sum(hzray_deltas_rejected_total{tuning_job="dash"})') == \
            last('hzray_deltas_total{tuning_job="dash",result="rejected"}')
        assert 0 <= last('hzray_recommended_p_feasible_ratio{tuning_job="dash"}') <= 1
        assert last('hzray_guardrail_bound_ratio{tuning_job="dash",metric="likes"}') == \
            pytest.approx(-0.005)
        info = prom_api(prom_port, "query", query='hzray_job_info{tuning_job="dash"}',
                        time=end)["data"]["result"][0]["metric"]
        assert (info["version"], info["config_fingerprint"], info["job_id"]) == \
            (hz_ray.__version__, config_fingerprint(config), JOB)
        jobs = prom_api(prom_port, "label/tuning_job/values",
                        **{"match[]": "hzray_job_info"})["data"]
        assert jobs == ["dash"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
