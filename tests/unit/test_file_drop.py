"""The file-drop adapter: request files out, Parquet/CSV readings in, bad rows kept."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from hz_ray.backends.file_drop import FileDropBackend
from hz_ray.clock import SimClock
from hz_ray.config import load_config
from hz_ray.local import run_local
from hz_ray.records import HourlyReading, InvalidReading, arm_id_for
from tests.conftest import small_config_mapping


def drop_rows(folder, name, rows):
    pq.write_table(pa.Table.from_pylist(rows), folder / name)


def row(arm, hour, metric, test_mean, control_mean=2.0, test_var=4.0, n=5000):
    return {"arm_id": arm, "hour": hour, "metric": metric, "test_mean": test_mean,
            "test_var": test_var, "test_n": n, "control_mean": control_mean,
            "control_var": 4.0, "control_n": n}


def test_requests_are_written_atomically_as_json(tmp_path):
    backend = FileDropBackend(tmp_path)
    backend.launch("arm-1", {"w_like": 2.5})
    backend.stop("arm-1")
    launch = json.loads((tmp_path / "requests" / "arm-1.launch.json").read_text())
    assert launch["params"] == {"w_like": 2.5} and launch["action"] == "launch"
    assert (tmp_path / "requests" / "arm-1.stop.json").exists()
    assert not list((tmp_path / "requests").glob("*.tmp"))


def test_fetch_parses_good_rows_and_keeps_bad_ones_with_a_reason(tmp_path):
    backend = FileDropBackend(tmp_path)
    drop_rows(backend.readings, "h0.parquet", [
        row("arm-1", 0, "views", 2.1), row("arm-1", 1, "views", float("nan")),
        row("arm-1", 2, "views", 2.0, control_mean=0.0), row("arm-2", 0, "views", 1.9),
    ])
    (backend.readings / "h3.csv").write_text(
        "arm_id,hour,metric,test_mean,test_var,test_n,control_mean,control_var,control_n\n"
        "arm-1,3,views,2.2,,5000,2.0,,5000\n")
    got = backend.fetch("arm-1", since_hour=0)
    good = [r for r in got if isinstance(r, HourlyReading)]
    bad = [r for r in got if isinstance(r, InvalidReading)]
    assert sorted(r.hour for r in good) == [0, 3]
    assert next(r for r in good if r.hour == 3).test.var is None
    reasons = " | ".join(b.reason for b in bad)
    assert "'mean' must be a finite number" in reasons
    assert "'control.mean' must be non-zero" in reasons
    later = backend.fetch("arm-1", since_hour=3)
    assert [r.hour for r in later if isinstance(r, HourlyReading)] == [3]


def test_run_local_over_a_file_drop_logs_rejections_and_learns(tmp_path):
    raw = small_config_mapping()
    raw["arms"] = {"slots": 2, "min_hours": 2, "max_hours": 6}
    config = load_config(raw)
    backend = FileDropBackend(tmp_path / "platform")
    rows = []
    first, second = arm_id_for("fd-0001", 0, 0), arm_id_for("fd-0001", 1, 0)
    for arm, lift in ((first, 0.02), (second, -0.01)):
        for hour in range(4):
            rows.append(row(arm, hour, "views", 2.0 * (1 + lift)))
            rows.append(row(arm, hour, "likes", 1.0, control_mean=1.0))
    rows.append(row(first, 4, "views", float("inf")))
    drop_rows(backend.readings, "export.parquet", rows)
    result = run_local(config, backend, clock=SimClock(), hours=5, run_dir=tmp_path / "run",
                       job_id="fd-0001")
    assert result.arms[first].estimates["views"].mean > 0.015
    assert result.arms[second].estimates["views"].mean < -0.005
    assert result.rejected == 1
    log = pq.read_table(result.log_path).to_pylist()
    rejected = [e for e in log if e["kind"] == "delta_rejected"]
    assert len(rejected) == 1 and "finite" in rejected[0]["reason"]
