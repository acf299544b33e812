"""A real Prometheus server scrapes hz-ray's metrics endpoint on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from hz_ray.records import MetricPosterior, Recommendation
from hz_ray.telemetry import Telemetry

pytestmark = pytest.mark.prometheus


def _free_port() -> int:
    # Outside Ray's worker port range (10002-19999).
    for port in range(27000, 27999):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _query(prom_port: int, expr: str):
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={urllib.request.quote(expr)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


def test_telemetry_serves_loopback_only_and_scrapes_locally():
    telemetry = Telemetry("unit-job")
    endpoint = telemetry.serve(0)
    try:
        assert endpoint.address == "127.0.0.1"
        telemetry.record_ingest(accepted=5, duplicates=2, rejected=1)
        body = urllib.request.urlopen(endpoint.url, timeout=5).read().decode()
        assert 'hzray_deltas_total{result="accepted",tuning_job="unit-job"} 5.0' in body
        assert 'hzray_deltas_total{result="rejected",tuning_job="unit-job"} 1.0' in body
    finally:
        telemetry.shutdown()


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="Debian's prometheus package is not installed (make test installs it)")
def test_real_prometheus_scrapes_the_tuner(tmp_path):
    telemetry = Telemetry("scrape-job")
    endpoint = telemetry.serve(_free_port())
    rec = Recommendation("arm-0003", {"w": 1.5}, 0.031, 0.012, 0.97,
                         {"views": MetricPosterior(0.031, 0.01)})
    telemetry.record_recommendation(rec, data_version=42, hour=17)
    telemetry.record_sample(0.004)
    prom_port = _free_port() + 1
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: hzray\n    static_configs: [{{targets: ['127.0.0.1:{endpoint.port}']}}]\n"
    )
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        result = []
        while time.time() < deadline:
            try:
                result = _query(prom_port, 'hzray_recommended_gain{tuning_job="scrape-job"}')
            except OSError:
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus never scraped hzray_recommended_gain"
        assert float(result[0]["value"][1]) == pytest.approx(0.031)
        assert result[0]["metric"]["job"] == "hzray"
        hour = _query(prom_port, "hzray_job_hour")
        assert float(hour[0]["value"][1]) == 17
        count = _query(prom_port, "hzray_sample_seconds_count")
        assert float(count[0]["value"][1]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        telemetry.shutdown()
