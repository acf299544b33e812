"""The file-drop adapter: request files out, Parquet/CSV readings in, bad rows kept, no links."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hz_ray.backends.file_drop import FileDropBackend
from hz_ray.clock import AcceleratedClock, SimClock
from hz_ray.config import load_config
from hz_ray.errors import ConfigError, InputDataError, StateError
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
    log = pq.read_table(result.log_path).to_pylist()
    rejected = [e for e in log if e["kind"] == "delta_rejected"]
    assert result.rejected == len(rejected)
    # The export holds hours 0-3 from the start: rows of hours not yet lived are refused
    # as future (each distinct row once); the inf row is refused for its value.
    future = [e for e in rejected if "future" in e["reason"]]
    other = [e for e in rejected if "future" not in e["reason"]]
    assert len(other) == 1 and "finite" in other[0]["reason"]
    assert future and len(future) + 1 == len(rejected)
    accepted = {(e["arm_id"], e["metric"], e["hour"]) for e in log
                if e["kind"] == "delta_accepted"}
    assert accepted == {(a, m, h) for a in (first, second) for m in ("views", "likes")
                        for h in range(4)}, "every valid row was accepted once its hour passed"


# ------------------------------------------------------------------ safety
SECRET = b"precious bytes outside the drop folder\n"


def outside_file(tmp_path, name="secret.txt"):
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    target = folder / name
    target.write_bytes(SECRET)
    return target


def test_a_link_planted_at_the_old_temp_name_is_never_written_through(tmp_path):
    # Chosen behaviour: the request is written correctly and the stray link is left alone.
    secret = outside_file(tmp_path)
    backend = FileDropBackend(tmp_path / "drop")
    for action in ("launch", "stop"):
        (backend.requests / f"arm-1.{action}.json.tmp").symlink_to(secret)
    backend.launch("arm-1", {"w_like": 2.5})
    backend.stop("arm-1")
    assert secret.read_bytes() == SECRET
    launch_path = backend.requests / "arm-1.launch.json"
    assert not launch_path.is_symlink()
    launch = json.loads(launch_path.read_text())
    assert launch == {"arm_id": "arm-1", "action": "launch", "params": {"w_like": 2.5},
                      "written_s": launch["written_s"]}
    stop = json.loads((backend.requests / "arm-1.stop.json").read_text())
    assert stop["action"] == "stop" and stop["arm_id"] == "arm-1"
    assert (backend.requests / "arm-1.launch.json.tmp").is_symlink()
    assert not list(backend.requests.glob(".hz-*"))


@pytest.mark.parametrize("action", ["launch", "stop"])
def test_a_link_at_the_final_request_name_is_refused(tmp_path, action):
    secret = outside_file(tmp_path)
    backend = FileDropBackend(tmp_path / "drop")
    link = backend.requests / f"arm-1.{action}.json"
    link.symlink_to(secret)
    call = (lambda: backend.launch("arm-1", {"w_like": 2.0})) if action == "launch" \
        else (lambda: backend.stop("arm-1"))
    with pytest.raises(StateError, match="symbolic link"):
        call()
    assert secret.read_bytes() == SECRET
    assert link.is_symlink() and link.resolve() == secret.resolve()
    assert not list(backend.requests.glob(".hz-*"))


def test_a_requests_folder_that_is_a_link_is_refused_before_and_after_building(tmp_path):
    outside = outside_file(tmp_path, "arm-1.launch.json").parent
    root = tmp_path / "drop"
    root.mkdir()
    (root / "requests").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="backend.kwargs.root"):
        FileDropBackend(root)
    (root / "requests").unlink()
    backend = FileDropBackend(root)
    (root / "requests").rmdir()
    (root / "requests").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StateError, match="symbolic link"):
        backend.launch("arm-1", {"w_like": 2.0})
    with pytest.raises(StateError, match="symbolic link"):
        backend.stop("arm-1")
    assert (outside / "arm-1.launch.json").read_bytes() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["arm-1.launch.json"]


def test_a_drop_folder_that_is_a_link_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "drop").symlink_to(real, target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        FileDropBackend(tmp_path / "drop")
    assert list(real.iterdir()) == []


def test_reading_files_and_folders_that_are_links_are_not_read(tmp_path):
    backend = FileDropBackend(tmp_path / "drop")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drop_rows(elsewhere, "export.parquet", [row("arm-1", 0, "views", 2.1)])
    (backend.readings / "linked.parquet").symlink_to(elsewhere / "export.parquet")
    got = backend.fetch("arm-1", since_hour=0)
    assert not [r for r in got if isinstance(r, HourlyReading)]
    assert [(r.arm_id, r.payload["file"]) for r in got] == [("*", "linked.parquet")]
    assert "symbolic link" in got[0].reason
    (backend.readings / "linked.parquet").unlink()
    backend.readings.rmdir()
    backend.readings.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StateError, match="symbolic link"):
        backend.fetch("arm-1", since_hour=0)


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    backend = FileDropBackend(tmp_path / "drop")
    (backend.requests / "arm-1.launch.json").mkdir()  # os.replace cannot replace a folder
    with pytest.raises(OSError):
        backend.launch("arm-1", {"w_like": 2.0})
    assert sorted(p.name for p in backend.requests.iterdir()) == ["arm-1.launch.json"]


def test_a_rewritten_reading_file_is_read_again(tmp_path):
    backend = FileDropBackend(tmp_path / "drop")
    drop_rows(backend.readings, "export.parquet", [row("arm-1", 0, "views", 2.1)])
    assert [r.hour for r in backend.fetch("arm-1", 0)] == [0]
    drop_rows(backend.readings, "export.parquet",
              [row("arm-1", 0, "views", 2.1), row("arm-1", 1, "views", 2.2)])
    assert sorted(r.hour for r in backend.fetch("arm-1", 0)) == [0, 1]


BAD_ARM_IDS = ["../x", "a/b", "a\0b", "", ".hidden", "..", "a b", "a\nb", "x" * 201, None, 7]


@pytest.mark.parametrize("arm_id", BAD_ARM_IDS)
def test_unsafe_arm_ids_get_a_typed_error_and_write_nothing(tmp_path, arm_id):
    backend = FileDropBackend(tmp_path / "drop")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for call in (lambda: backend.launch(arm_id, {"w_like": 2.0}),
                 lambda: backend.stop(arm_id),
                 lambda: backend.fetch(arm_id, 0)):
        with pytest.raises(InputDataError, match="'arm_id' must be") as info:
            call()
        assert "file names" in info.value.hint
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_requests_tell_the_platform_the_job_hour_and_the_job_clock(tmp_path):
    started = AcceleratedClock(2.0, time.time() - 7.0)  # job hour 3 (7 s at 2 s per hour)
    backend = FileDropBackend(tmp_path, clock=started)
    backend.launch("job-1a2b.s00-0000", {"w": 1.0})
    body = json.loads((tmp_path / "requests" / "job-1a2b.s00-0000.launch.json").read_text())
    assert body["job_hour"] == 3
    assert body["job_clock"] == {"epoch_s": started.epoch_s, "seconds_per_hour": 2.0}
    # a clock that has not started yet (its epoch ahead) tells nothing rather than a wrong hour
    pending = FileDropBackend(tmp_path, clock=AcceleratedClock(2.0, time.time() + 3600))
    pending.stop("job-1a2b.s00-0000")
    stop = json.loads((tmp_path / "requests" / "job-1a2b.s00-0000.stop.json").read_text())
    assert "job_hour" not in stop and "job_clock" not in stop
