"""hz-ray's metrics: names, labels, rejection classes, and a real Prometheus scraping them."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import hz_ray
from hz_ray.arm_feed import ArmFeed
from hz_ray.config import ConstraintSpec
from hz_ray.ledger import Ledger
from hz_ray.reading_checks import screen_delta, screen_reading
from hz_ray.records import GroupStats, HourlyDelta, HourlyReading, MetricPosterior, Recommendation
from hz_ray.telemetry import REJECTION_CLASSES, Telemetry, rejection_class

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus package is not installed (make test installs it)")


def free_port(low: int = 27000, high: int = 27999, avoid: tuple[int, ...] = ()) -> int:
    """A free loopback port in ``[low, high]``, outside Ray's worker range (10002-19999)."""
    for port in range(low, high + 1):
        if port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def start_prometheus(folder: Path, target_port: int, prom_port: int,
                     scrape_interval: str = "1s") -> subprocess.Popen[bytes]:
    """Start Prometheus on ``127.0.0.1:prom_port`` scraping ``127.0.0.1:target_port``."""
    config = folder / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {scrape_interval}}}\n"
        "scrape_configs:\n"
        f"  - job_name: hzray\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    return subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def prom_api(prom_port: int, path: str, **params: Any) -> dict[str, Any]:
    """GET ``/api/v1/<path>`` of the Prometheus on ``prom_port``; the decoded JSON body.

    An HTTP error (e.g. 400 for a bad query) is returned as its JSON body too.
    """
    url = f"http://127.0.0.1:{prom_port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def wait_ready(prom_port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Wait until Prometheus answers ``/-/ready``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert proc.poll() is None, "prometheus exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("Prometheus did not get ready")


def _query(prom_port: int, expr: str):
    return prom_api(prom_port, "query", query=expr)["data"]["result"]


def _scrape(telemetry: Telemetry) -> str:
    endpoint = telemetry.serve(0)
    try:
        return urllib.request.urlopen(endpoint.url, timeout=5).read().decode()
    finally:
        telemetry.shutdown()


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


def test_the_info_metric_names_the_job_version_and_fingerprint_and_no_created_series():
    telemetry = Telemetry("info-job")
    telemetry.record_job("info-job-1a2b", "00ff00ff00ff00ff",
                         (ConstraintSpec("likes", min_delta=-0.005),
                          ConstraintSpec("cost", max_delta=0.01)))
    telemetry.record_ingest(accepted=1, duplicates=0, rejected=0)
    telemetry.record_refit(0.02, True, 3, 2)
    body = _scrape(telemetry)
    assert ('hzray_job_info{config_fingerprint="00ff00ff00ff00ff",job_id="info-job-1a2b",'
            f'tuning_job="info-job",version="{hz_ray.__version__}"}} 1.0') in body
    assert 'hzray_guardrail_bound_ratio{metric="likes",side="min",tuning_job="info-job"} ' \
           '-0.005' in body
    assert 'hzray_guardrail_bound_ratio{metric="cost",side="max",tuning_job="info-job"} ' \
           '0.01' in body
    assert "_created" not in body
    # Plotted series exist at 0 before anything happens.
    assert 'hzray_deltas_total{result="rejected",tuning_job="info-job"} 0.0' in body
    assert 'hzray_deltas_rejected_total{reason="other",tuning_job="info-job"} 0.0' in body
    assert 'hzray_arm_stop_failures_total{tuning_job="info-job"} 0.0' in body


def test_ratio_valued_metrics_end_in_ratio():
    telemetry = Telemetry("names")
    families = {m.name: m for m in telemetry.registry.collect()}
    ratio_words = ("relative", "P(", "probability")
    ratios = {name for name, m in families.items()
              if any(word in m.documentation for word in ratio_words)}
    assert ratios == {"hzray_recommended_gain_ratio", "hzray_recommended_gain_lcb_ratio",
                      "hzray_recommended_p_feasible_ratio", "hzray_slot_p_feasible_ratio",
                      "hzray_recommended_metric_delta_ratio", "hzray_guardrail_bound_ratio"}
    assert {name for name in families if name.endswith("_ratio")} == ratios
    assert all(families[name].type == "gauge" for name in ratios)


def _reading(hour: int = 1, arm: str = "a-1", metric: str = "views", test_mean: float = 1.1,
             control_mean: float = 1.0) -> HourlyReading:
    return HourlyReading(arm, hour, metric, GroupStats(test_mean, 0.1, 100),
                         GroupStats(control_mean, 0.1, 100))


def _reading_reason(reading: object, **kw: Any) -> str:
    settings = {"arm_id": "a-1", "metrics": ("views",), "first_hour": 1, "now_hour": 5,
                "data_end": None, "oldest_hour": None, **kw}
    reason = screen_reading(reading, **settings).reason
    assert reason is not None
    return reason


def _delta_reason(delta: object) -> str:
    reason = screen_delta(delta, known_arms={"a-1"}, metrics=("views",)).reason
    assert reason is not None
    return reason


def _odd_delta(**fields: Any) -> HourlyDelta:
    """A delta that skipped its own checks, as an unpickled one may."""
    delta = object.__new__(HourlyDelta)
    values = {"arm_id": "a-1", "metric": "views", "hour": 1, "mean": 0.1, "var": 0.01, "n": 10,
              "control_var": None, **fields}
    for name, value in values.items():
        object.__setattr__(delta, name, value)
    return delta


def test_rejection_class_maps_every_real_reason_text_to_its_bounded_class():
    ledger = Ledger(("views",), var_floor=1e-9)
    ledger.register_arm("a-1", {"w": 1.0})
    ledger.ingest([HourlyDelta("a-1", "views", 1, 0.1, 0.01, 10)])
    conflict = ledger.ingest([HourlyDelta("a-1", "views", 1, 0.2, 0.01, 10)]).rejected[0].reason
    feed = ArmFeed("a-1", ("views",), first_hour=0)
    feed.absorb([_reading(hour=1)], now_hour=3)
    _, rejected = feed.absorb([_reading(hour=1, test_mean=1.3)], now_hour=3)
    _, not_iterable = feed.absorb(None, now_hour=3)
    cases = {
        "conflicting_duplicate": [conflict, rejected[0].reason],
        "fetch_error": [not_iterable[0].reason],
        "unknown_arm": [_delta_reason(HourlyDelta("b-2", "views", 1, 0.1, 0.01, 10))],
        "wrong_arm": [_reading_reason(_reading(arm="b-2"))],
        "unknown_metric": [_delta_reason(HourlyDelta("a-1", "likes", 1, 0.1, 0.01, 10)),
                           _reading_reason(_reading(metric="likes"))],
        "future_hour": [_reading_reason(_reading(hour=9))],
        "after_stop": [_reading_reason(_reading(hour=3), data_end=2)],
        "too_old": [_reading_reason(_reading(hour=2), oldest_hour=3)],
        "bad_hour": [_reading_reason(_reading(hour=0)), _delta_reason(_odd_delta(hour=-1))],
        "invalid_value": [_reading_reason(_reading(control_mean=-1.0)),
                          _reading_reason(_reading(test_mean=-1.0)),
                          _delta_reason(_odd_delta(mean=float("nan"))),
                          _delta_reason(_odd_delta(var=-1.0)),
                          _delta_reason(_odd_delta(n=0))],
        "malformed": [_reading_reason("not a reading"), _delta_reason({"arm_id": "a-1"}),
                      _delta_reason(_odd_delta(metric=""))],
        "other": ["the platform flagged this row", None, 42],
    }
    assert set(cases) <= set(REJECTION_CLASSES)
    for expected, reasons in cases.items():
        for reason in reasons:
            assert rejection_class(reason) == expected, reason


def test_rejections_are_counted_by_class_and_the_rest_as_other():
    telemetry = Telemetry("reasons")
    telemetry.record_ingest(0, 0, 3, ["arm_id 'x' is not registered; register_arm() it first.",
                                      "'hour' must be an integer hour index >= 0; got -1."])
    value = telemetry.registry.get_sample_value
    assert value("hzray_deltas_rejected_total", {"tuning_job": "reasons",
                                                 "reason": "unknown_arm"}) == 1
    assert value("hzray_deltas_rejected_total", {"tuning_job": "reasons",
                                                 "reason": "bad_hour"}) == 1
    assert value("hzray_deltas_rejected_total", {"tuning_job": "reasons",
                                                 "reason": "other"}) == 1
    assert value("hzray_deltas_total", {"tuning_job": "reasons", "result": "rejected"}) == 3


@pytest.mark.prometheus
@needs_prometheus
def test_real_prometheus_scrapes_the_tuner(tmp_path):
    telemetry = Telemetry("scrape-job")
    endpoint = telemetry.serve(free_port())
    rec = Recommendation("arm-0003", {"w": 1.5}, 0.031, 0.012, 0.97,
                         {"views": MetricPosterior(0.031, 0.01)})
    telemetry.record_recommendation(rec, data_version=42, hour=17)
    telemetry.record_sample(0.004)
    prom_port = free_port(avoid=(endpoint.port,))
    proc = start_prometheus(tmp_path, endpoint.port, prom_port)
    try:
        deadline = time.time() + 30
        result = []
        while time.time() < deadline:
            try:
                result = _query(prom_port, 'hzray_recommended_gain_ratio{tuning_job="scrape-job"}')
            except OSError:
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus never scraped hzray_recommended_gain_ratio"
        assert float(result[0]["value"][1]) == pytest.approx(0.031)
        assert result[0]["metric"]["job"] == "hzray"
        hour = _query(prom_port, "hzray_job_hour")
        assert float(hour[0]["value"][1]) == 17
        count = _query(prom_port, "hzray_sample_seconds_count")
        assert float(count[0]["value"][1]) == 1
        assert _query(prom_port, '{__name__=~"hzray_.*_created"}') == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        telemetry.shutdown()
