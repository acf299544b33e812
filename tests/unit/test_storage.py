"""Tests of hz_ray.storage: the Parquet event log, replay into a ledger, atomic checkpoints."""

from __future__ import annotations

import itertools
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hz_ray.storage as storage
from hz_ray.errors import InputDataError, StateError
from hz_ray.ledger import Ledger
from hz_ray.records import HourlyDelta
from hz_ray.storage import (
    EVENT_KINDS,
    EVENT_SCHEMA,
    EventLog,
    load_checkpoint,
    replay_into,
    save_checkpoint,
)

METRICS = ("views", "likes")
FLOOR = 1e-6


def ticking_clock(start=1_700_000_000.0):
    counter = itertools.count()
    return lambda: start + next(counter)


def d(arm, metric, hour, mean=0.01, var=1e-4, n=100):
    return HourlyDelta(arm, metric, hour, mean, var, n)


def visible_files(directory):
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------- schema


def test_schema_columns_types_and_docs():
    expected = {
        "seq": pa.int64(), "wall_time_s": pa.float64(), "kind": pa.string(),
        "arm_id": pa.string(), "metric": pa.string(), "hour": pa.int64(),
        "mean": pa.float64(), "var": pa.float64(), "n": pa.int64(),
        "params_json": pa.string(), "reason": pa.string(), "payload_json": pa.string(),
        "model_version": pa.int64(), "control_var": pa.float64(), "state": pa.string(),
    }
    assert {f.name: f.type for f in EVENT_SCHEMA} == expected
    assert [f.name for f in EVENT_SCHEMA if not f.nullable] == ["seq", "wall_time_s", "kind"]
    for name in expected:  # every column is documented in the module docstring
        assert f"``{name}``" in storage.__doc__
    for kind in EVENT_KINDS:
        assert f"``{kind}``" in storage.__doc__


# ------------------------------------------------------------------ log basics


def test_flush_writes_one_atomic_part_per_call(tmp_path):
    log = EventLog(tmp_path, clock=ticking_clock())
    assert log.flush() is None and visible_files(tmp_path) == []
    log.append_arm("a", {"w": 1.0}, hour=0)
    log.append_accepted([d("a", "views", 0), d("a", "likes", 0)])
    assert log.pending == 3
    first = log.flush()
    assert first.name == "part-000000000000.parquet" and log.pending == 0
    log.append_retired("a", "hours up", hour=5)
    second = log.flush()
    assert second.name == "part-000000000003.parquet"
    assert visible_files(tmp_path) == [first.name, second.name]  # no temp files left
    table = pq.read_table(first)
    assert table.schema.equals(EVENT_SCHEMA, check_metadata=False)
    assert table["seq"].to_pylist() == [0, 1, 2]
    assert table["wall_time_s"].to_pylist() == [1_700_000_000.0, 1_700_000_001.0, 1_700_000_002.0]


def test_read_filters_orders_and_includes_the_buffer(tmp_path):
    log = EventLog(tmp_path)
    log.append_arm("a", {"w": 1.0}, 0)
    log.flush()
    log.append_accepted([d("a", "views", h) for h in range(4)])
    log.flush()
    log.append_suggestion("b", {"w": 2.0}, model_version=7)  # buffered only
    table = log.read()
    assert table.schema.equals(EVENT_SCHEMA)
    assert table["seq"].to_pylist() == list(range(6))
    assert log.read(since_seq=3)["seq"].to_pylist() == [4, 5]
    assert log.read(since_seq=5).num_rows == 0
    events = list(log.iter_events(since_seq=4))
    assert events == [{
        "seq": 5, "wall_time_s": events[0]["wall_time_s"], "kind": "suggestion",
        "arm_id": "b", "metric": None, "hour": None, "mean": None, "var": None, "n": None,
        "params_json": '{"w": 2.0}', "reason": None, "payload_json": None, "model_version": 7,
        "control_var": None, "state": None,
    }]
    with pytest.raises(InputDataError, match="'since_seq'"):
        log.read(since_seq=-2)


def test_reopen_continues_the_sequence(tmp_path):
    log = EventLog(tmp_path)
    log.append_arm("a", {"w": 1.0})
    log.append_accepted([d("a", "views", 0)])
    log.flush()
    log.append_accepted([d("a", "views", 1)])  # never flushed: lost with the process
    again = EventLog(tmp_path)
    assert again.last_seq == 1
    assert again.append_retired("a", "done") == 2
    again.flush()
    assert again.read()["seq"].to_pylist() == [0, 1, 2]
    assert EventLog(tmp_path / "fresh").last_seq == -1


def test_torn_temp_file_from_a_crash_is_ignored(tmp_path):
    log = EventLog(tmp_path)
    log.append_arm("a", {"w": 1.0})
    log.flush()
    # A crash between writing the temporary file and renaming it leaves these behind.
    (tmp_path / ".part-000000000001.parquet.k3j2.tmp").write_bytes(b"PAR1\x00\x01torn")
    (tmp_path / "part-000000000009.parquet.tmp").write_bytes(b"garbage")
    reopened = EventLog(tmp_path)
    assert reopened.last_seq == 0
    assert reopened.read()["kind"].to_pylist() == ["arm_registered"]
    reopened.append_retired("a", "x")
    assert reopened.flush().name == "part-000000000001.parquet"
    assert reopened.read()["seq"].to_pylist() == [0, 1]


def test_failed_flush_keeps_the_events_and_leaves_no_temp_file(tmp_path, monkeypatch):
    log = EventLog(tmp_path)
    log.append_arm("a", {"w": 1.0})
    log.append_accepted([d("a", "views", 0)])

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        log.flush()
    assert visible_files(tmp_path) == [] and log.pending == 2
    monkeypatch.undo()
    assert log.flush().name == "part-000000000000.parquet"
    assert EventLog(tmp_path).read()["kind"].to_pylist() == ["arm_registered", "delta_accepted"]


def test_damaged_part_and_second_writer_raise_state_errors(tmp_path):
    log = EventLog(tmp_path)
    log.append_arm("a", {"w": 1.0})
    other = EventLog(tmp_path)
    other.append_arm("b", {"w": 2.0})
    log.flush()
    with pytest.raises(StateError, match="already exists"):
        other.flush()
    (tmp_path / "part-000000000007.parquet").write_bytes(b"not parquet")
    with pytest.raises(StateError, match="part-000000000007.parquet"):
        EventLog(tmp_path)


def test_read_sorts_by_seq_whatever_the_part_names(tmp_path):
    def rows(seqs):
        return pa.Table.from_pylist(
            [{"seq": s, "wall_time_s": 0.0, "kind": "arm_retired", "arm_id": "a"} for s in seqs],
            schema=EVENT_SCHEMA)

    pq.write_table(rows([3, 4]), tmp_path / "part-000000000000.parquet")
    pq.write_table(rows([0, 1, 2]), tmp_path / "part-000000000003.parquet")
    log = EventLog(tmp_path)
    assert log.last_seq == 4
    assert log.read()["seq"].to_pylist() == [0, 1, 2, 3, 4]

def test_foreign_schema_part_is_refused(tmp_path):
    pq.write_table(pa.table({"seq": pa.array([0], pa.int64())}), tmp_path / "part-0.parquet")
    with pytest.raises(StateError, match="EVENT_SCHEMA"):
        EventLog(tmp_path).read()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda log: log.append_arm("a", {"w": float("nan")}), "'params'"),
        (lambda log: log.append_arm("", {"w": 1.0}), "'arm_id'"),
        (lambda log: log.append_retired("a", ""), "'reason'"),
        (lambda log: log.append_accepted([d("a", "views", 0), "x"]), "'deltas[1]'"),
        (lambda log: log.append_suggestion("a", {"w": 1.0}, model_version=1.5), "'model_version'"),
        (lambda log: log.append_rejected({"x": 1}, None), "'reason'"),
    ],
)
def test_append_validates(tmp_path, call, field):
    log = EventLog(tmp_path)
    with pytest.raises(InputDataError) as info:
        call(log)
    assert field in str(info.value)
    assert log.pending == 0 and log.last_seq == -1


# --------------------------------------------------------------------- rejected


def test_rejected_records_are_kept_with_their_reason(tmp_path):
    log = EventLog(tmp_path)
    ledger = Ledger(METRICS, FLOOR)
    ledger.register_arm("a", {"w": 1.0})
    result = ledger.ingest([d("a", "views", 0), d("a", "views", 0, mean=0.5), d("z", "views", 0)])
    log.append_accepted(result.accepted)
    for record in result.rejected:
        log.append_rejected(record.record, record.reason)
    raw = {"arm_id": "a", "hour": 3, "metric": "likes",
           "test": {"mean": float("nan"), "var": 1.0, "n": 10}, "control": {"mean": float("inf")}}
    log.append_rejected(raw, "'mean' must be a finite number; got nan.")
    log.append_rejected(object.__new__(Ledger), "not a reading")
    log.flush()
    events = [e for e in EventLog(tmp_path).iter_events() if e["kind"] == "delta_rejected"]
    assert len(events) == 4
    conflict, unknown, nan_reading, junk = events
    assert "conflicts with the accepted record" in conflict["reason"]
    assert (conflict["arm_id"], conflict["metric"], conflict["hour"], conflict["mean"]) == (
        "a", "views", 0, 0.5)
    assert "not registered" in unknown["reason"] and unknown["arm_id"] == "z"
    assert nan_reading["reason"].startswith("'mean' must be")
    assert (nan_reading["arm_id"], nan_reading["metric"], nan_reading["hour"]) == ("a", "likes", 3)
    payload = json.loads(nan_reading["payload_json"])  # strict JSON: no NaN tokens
    assert payload["test"]["mean"] == "nan" and payload["control"]["mean"] == "inf"
    assert "NaN" not in nan_reading["payload_json"]
    assert junk["arm_id"] is None and "Ledger" in json.loads(junk["payload_json"])


# ----------------------------------------------------------------------- replay


def drive(ledger, log, seed, arms=("a", "b", "c"), hours=12):
    """A small run: register, ingest (with duplicates and bad records), retire, log it all."""
    rng = random.Random(seed)
    for i, arm in enumerate(arms):
        params = {"w_click": 1.0 + i / 3, "w_like": 0.1 + 0.7 * i}
        if ledger.register_arm(arm, params, hour=i):
            log.append_arm(arm, params, hour=i)
            log.append_suggestion(arm, params, model_version=ledger.version)
    for hour in range(hours):
        batch = []
        for arm in arms:
            for metric in METRICS:
                var = None if rng.random() < 0.25 else rng.uniform(1e-5, 1e-3)
                batch.append(d(arm, metric, hour, rng.gauss(0, 0.02), var, rng.randint(50, 500)))
        batch += rng.sample(batch, 3)  # retried duplicates
        batch.append(d("ghost", "views", hour))  # unknown arm
        rng.shuffle(batch)
        result = ledger.ingest(batch)
        log.append_accepted(result.accepted)
        for record in result.rejected:
            log.append_rejected(record.record, record.reason)
        if hour == hours // 2 and ledger.retire_arm(arms[0], "guardrail"):
            log.append_retired(arms[0], "guardrail", hour)
        log.flush()


def test_replay_rebuilds_an_identical_ledger(tmp_path):
    original = Ledger(METRICS, FLOOR)
    drive(original, EventLog(tmp_path), seed=1)
    reopened = EventLog(tmp_path)
    rebuilt = Ledger(METRICS, FLOOR)
    last = replay_into(rebuilt, reopened)
    assert last == reopened.last_seq
    assert rebuilt.state_dict() == original.state_dict()
    assert rebuilt.arms["a"].retired_reason == "guardrail"
    for arm in ("a", "b", "c"):
        assert rebuilt.estimates(arm) == original.estimates(arm)


def test_replaying_twice_does_not_double_count(tmp_path):
    original = Ledger(METRICS, FLOOR)
    drive(original, EventLog(tmp_path), seed=2)
    state = original.state_dict()
    log = EventLog(tmp_path)
    replay_into(original, log)  # everything is already there
    assert original.state_dict() == state
    rebuilt = Ledger(METRICS, FLOOR)
    replay_into(rebuilt, log)
    replay_into(rebuilt, log)
    assert rebuilt.state_dict() == state and rebuilt.num_records == original.num_records


def test_checkpoint_plus_tail_replay_equals_the_full_state(tmp_path):
    log_dir, checkpoint = tmp_path / "log", tmp_path / "checkpoint.json"
    live = Ledger(METRICS, FLOOR)
    log = EventLog(log_dir)
    drive(live, log, seed=3, arms=("a", "b"))
    save_checkpoint(checkpoint, {"log_seq": log.last_seq, "ledger": live.state_dict()})
    drive(live, log, seed=4, arms=("a", "b", "c"), hours=20)  # more hours, a new arm
    # Restart: load the checkpoint, replay only the tail of the log.
    state = load_checkpoint(checkpoint)
    restored = Ledger.from_state_dict(state["ledger"])
    tail = replay_into(restored, EventLog(log_dir), since_seq=state["log_seq"])
    assert tail == log.last_seq > state["log_seq"]
    assert restored.state_dict() == live.state_dict()
    assert replay_into(restored, EventLog(log_dir), since_seq=tail) == tail


def test_replay_refuses_a_log_that_contradicts_the_ledger(tmp_path):
    log = EventLog(tmp_path)
    log.append_arm("a", {"w": 1.0})
    log.flush()
    ledger = Ledger(METRICS, FLOOR)
    ledger.register_arm("a", {"w": 2.0})
    with pytest.raises(StateError, match="seq 0"):
        replay_into(ledger, log)
    orphan = EventLog(tmp_path / "orphan")
    orphan.append_accepted([d("a", "views", 0)])
    orphan.flush()
    with pytest.raises(StateError, match="seq 0.*not registered"):
        replay_into(Ledger(METRICS, FLOOR), orphan)


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_is_plain_json(tmp_path):
    path = tmp_path / "deep" / "checkpoint.json"
    assert load_checkpoint(path) is None
    state = {"hour": 3, "log_seq": 41, "nested": {"x": [1.5, None, "s"]}}
    save_checkpoint(path, state)
    assert load_checkpoint(path) == state
    assert json.loads(path.read_text(encoding="utf-8")) == state  # nothing pickled
    save_checkpoint(path, {"hour": 4})
    assert load_checkpoint(path) == {"hour": 4}
    assert visible_files(path.parent) == ["checkpoint.json"]


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.json"
    save_checkpoint(path, {"hour": 1})

    def broken_replace(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="power cut"):
        save_checkpoint(path, {"hour": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"hour": 1}
    assert visible_files(tmp_path) == ["checkpoint.json"]


@pytest.mark.parametrize("state", [{"x": float("nan")}, {"x": object()}, [1, 2]])
def test_unsaveable_state_raises(tmp_path, state):
    with pytest.raises(InputDataError, match="'state'"):
        save_checkpoint(tmp_path / "c.json", state)
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("text", ['{"hour": 1', "[1, 2]", ""])
def test_damaged_checkpoint_raises(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StateError, match="c.json"):
        load_checkpoint(path)



@pytest.mark.parametrize("dropped", [("control_var", "state"), ("state",)],
                         ids=["version 1", "version 2"])
def test_older_logs_without_the_newer_columns_replay(tmp_path, dropped):
    """Parts written before control_var (v1) or state (v2) are read with nulls there."""
    import pyarrow.parquet as pq

    log = EventLog(tmp_path / "new")
    log.append_arm("a", {"w": 1.0}, 0)
    log.append_accepted([HourlyDelta("a", "views", h, 0.01 * h, 1e-4, 100, control_var=4e-5)
                         for h in range(3)])
    log.flush()
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    for part in (tmp_path / "new").glob("part-*.parquet"):
        table = pq.read_table(part).drop_columns(list(dropped))
        pq.write_table(table, old_dir / part.name)
    old = EventLog(old_dir)
    assert old.read().schema.equals(EVENT_SCHEMA)
    assert old.read()["state"].null_count == 4
    if "control_var" not in dropped:
        assert old.read()["control_var"].to_pylist() == [None, 4e-5, 4e-5, 4e-5]
        return
    assert old.read()["control_var"].null_count == 4
    ledger = Ledger(["views"], var_floor=1e-6)
    replay_into(ledger, old)
    assert [x.control_var for x in ledger.deltas("a", "views")] == [None] * 3
    ledger_new = Ledger(["views"], var_floor=1e-6)
    replay_into(ledger_new, EventLog(tmp_path / "new"))
    assert [x.control_var for x in ledger_new.deltas("a", "views")] == [4e-5] * 3
    assert ledger_new.estimates("a") == ledger.estimates("a")


def test_job_recommendation_and_arm_state_events_round_trip(tmp_path):
    from hz_ray.records import ArmEstimate, MetricPosterior, Recommendation
    from hz_ray.storage import recommendation_from_event

    rec = Recommendation("job-1.s00-0002", {"w": 1.5}, 0.012, 0.004, 0.97,
                         {"views": MetricPosterior(0.012, 0.005)},
                         {"views": ArmEstimate(0.011, 0.004, 9000, 6)})
    log = EventLog(tmp_path)
    log.append_job_started("job-1", {"config": {"name": "job"}, "restored": False})
    log.append_arm_state("job-1.s00-0002", "live", 3)
    log.append_recommendation(7, rec)
    log.flush()
    events = list(EventLog(tmp_path).iter_events())
    assert [e["kind"] for e in events] == ["job_started", "arm_state", "recommendation"]
    assert json.loads(events[0]["payload_json"])["config"] == {"name": "job"}
    assert (events[1]["state"], events[1]["hour"]) == ("live", 3)
    assert events[2]["hour"] == 7 and events[2]["mean"] == 0.012
    assert recommendation_from_event(events[2]) == rec
    with pytest.raises(StateError, match="recommendation"):
        recommendation_from_event({**events[2], "payload_json": "{}"})
