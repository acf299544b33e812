"""JournalBackend: every call journaled before it returns, faults as documented, audits."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import threading
import time

import pytest
import yaml

from hz_ray.backends.base import ArmBackend, GroundTruth
from hz_ray.backends.factory import build_backend
from hz_ray.backends.journal import JournalBackend, audit_journal
from hz_ray.clock import SimClock
from hz_ray.config import BackendSpec
from hz_ray.errors import ConfigError, InputDataError, StateError

INNER = "simulated:value_model"
PARAMS = {"w_click": 1.0, "w_like": 1.5, "w_share": 1.0, "w_follow": 1.0, "w_watch": 1.0}


def make(tmp_path, faults=None, clock=None, name="calls.jsonl"):
    return JournalBackend(INNER, {"realism": "ideal"}, journal=str(tmp_path / name),
                          faults=faults, clock=SimClock() if clock is None else clock)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def outcomes(path, call=None):
    return [(r["call"], r["arm_id"], r["outcome"]) for r in lines(path)
            if r["outcome"] != "started" and (call is None or r["call"] == call)]


# ---------------------------------------------------------------- journal
def test_every_call_writes_a_started_and_an_outcome_line_before_returning(tmp_path):
    clock = SimClock()
    backend = make(tmp_path, clock=clock)
    journal = tmp_path / "calls.jsonl"
    backend.launch("arm-1", PARAMS)
    assert [r["outcome"] for r in lines(journal)] == ["started", "ok"]
    clock.advance(3)
    readings = backend.fetch("arm-1", 0)
    assert {r.hour for r in readings} == {0, 1, 2}
    backend.stop("arm-1")
    with pytest.raises(InputDataError):
        backend.fetch("never-launched", 0)
    rows = lines(journal)
    assert [(r["call"], r["outcome"]) for r in rows] == [
        ("launch", "started"), ("launch", "ok"), ("fetch", "started"), ("fetch", "ok"),
        ("stop", "started"), ("stop", "ok"), ("fetch", "started"), ("fetch", "error")]
    assert {r["pid"] for r in rows} == {os.getpid()}
    assert [r["seq"] for r in rows[::2]] == [r["seq"] for r in rows[1::2]]
    assert len({r["seq"] for r in rows}) == 4
    assert [r["job_hour"] for r in rows] == [0.0, 0.0] + [3.0] * 6
    assert rows[-1]["error"].startswith("InputDataError: ")
    assert all(r["wall_s"] == 0.0 for r in rows[::2]) and all(r["wall_s"] >= 0 for r in rows)


def test_the_backend_builds_from_a_yaml_config_and_gets_the_drivers_clock(tmp_path):
    raw = yaml.safe_load(f"""
backend:
  target: "hz_ray.backends.journal:JournalBackend"
  kwargs:
    journal: {tmp_path / 'audit' / 'calls.jsonl'}
    inner_target: "simulated:value_model"
    inner_kwargs: {{realism: ideal}}
    faults: {{fail_first: {{stop: 1}}, hang: {{fetch: {{seconds: forever, arm_ids: [x]}}}}}}
""")["backend"]
    clock = SimClock(5.0)
    backend = build_backend(BackendSpec(raw["target"], raw["kwargs"]), clock)
    assert isinstance(backend, JournalBackend) and isinstance(backend, ArmBackend)
    assert isinstance(backend, GroundTruth)  # the simulated world's truth passes through
    assert math.isinf(backend.faults["hang"]["fetch"]["seconds"])
    backend.launch("arm-1", PARAMS)
    assert lines(tmp_path / "audit" / "calls.jsonl")[-1]["job_hour"] == 5.0


# ----------------------------------------------------------------- faults
def test_fail_first_fails_the_first_calls_of_a_kind_per_arm(tmp_path):
    backend = make(tmp_path, faults={"fail_first": {"stop": 2}})
    for arm in ("a", "b"):
        backend.launch(arm, PARAMS)
    for arm in ("a", "b"):
        for _ in range(2):
            with pytest.raises(ConnectionError, match="fail_first"):
                backend.stop(arm)
        backend.stop(arm)
    stops = [(a, o) for _, a, o in outcomes(tmp_path / "calls.jsonl", "stop")]
    assert stops == [("a", "error"), ("a", "error"), ("a", "ok"),
                     ("b", "error"), ("b", "error"), ("b", "ok")]
    assert all(r["fault"] == "fail_first" for r in lines(tmp_path / "calls.jsonl")
               if r["outcome"] == "error")


def test_fail_every_fails_every_kth_call_of_a_kind(tmp_path):
    clock = SimClock()
    backend = make(tmp_path, faults={"fail_every": {"fetch": 3}}, clock=clock)
    backend.launch("a", PARAMS)
    clock.advance(1)
    failed = []
    for call in range(1, 8):
        try:
            backend.fetch("a", 0)
        except ConnectionError:
            failed.append(call)
    assert failed == [3, 6]


def test_crash_at_raises_a_permanent_error_without_reaching_the_platform(tmp_path):
    backend = make(tmp_path, faults={"crash_at": {"launch": 2}})
    backend.launch("a", PARAMS)
    with pytest.raises(RuntimeError, match="injected crash"):
        backend.launch("b", PARAMS)
    backend.launch("c", PARAMS)
    assert backend.inner.arm_ids == ("a", "c")
    assert audit_journal(tmp_path / "calls.jsonl").counts["launch"] == {
        "started": 3, "ok": 2, "error": 1, "hang": 0}


def test_hang_delays_chosen_calls_after_the_platform_answered(tmp_path):
    clock = SimClock()
    backend = make(tmp_path, clock=clock, faults={
        "hang": {"fetch": {"arm_ids": ["slow"], "seconds": 0.3},
                 "launch": {"calls": [2], "seconds": 0.3}}})
    backend.launch("fast", PARAMS)
    t0 = time.monotonic()
    backend.launch("slow", PARAMS)  # launch call 2
    assert time.monotonic() - t0 >= 0.3
    clock.advance(2)
    t0 = time.monotonic()
    assert backend.fetch("fast", 0)
    assert time.monotonic() - t0 < 0.3
    t0 = time.monotonic()
    assert backend.fetch("slow", 0)
    assert time.monotonic() - t0 >= 0.3
    assert outcomes(tmp_path / "calls.jsonl") == [
        ("launch", "fast", "ok"), ("launch", "slow", "hang"),
        ("fetch", "fast", "ok"), ("fetch", "slow", "hang")]
    audit = audit_journal(tmp_path / "calls.jsonl")
    assert audit.launched == ("fast", "slow") and audit.counts["fetch"]["hang"] == 1


def test_a_forever_hang_never_answers_but_the_journal_shows_the_launch(tmp_path):
    backend = make(tmp_path, faults={"hang": {"launch": {"arm_ids": ["x"],
                                                          "seconds": math.inf}}})
    done = threading.Event()
    worker = threading.Thread(target=lambda: (backend.launch("x", PARAMS), done.set()),
                              daemon=True)
    worker.start()
    journal = tmp_path / "calls.jsonl"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not journal.exists() or len(lines(journal)) < 2):
        time.sleep(0.05)
    time.sleep(0.3)
    assert not done.is_set() and worker.is_alive()
    last = lines(journal)[-1]
    assert (last["outcome"], last["fault"], last["hang_s"]) == ("hang", "hang", None)
    assert audit_journal(journal).orphans == ("x",)


@pytest.mark.parametrize(("faults", "field"), [
    ({"fail_frist": {"stop": 1}}, "backend.kwargs.faults"),
    ({"fail_first": {"halt": 1}}, "backend.kwargs.faults.fail_first"),
    ({"fail_first": {"stop": -1}}, "backend.kwargs.faults.fail_first.stop"),
    ({"fail_every": {"fetch": 0}}, "backend.kwargs.faults.fail_every.fetch"),
    ({"crash_at": {"launch": True}}, "backend.kwargs.faults.crash_at.launch"),
    ({"kill_at": {"stop": 1.5}}, "backend.kwargs.faults.kill_at.stop"),
    ({"hang": {"fetch": {"seconds": 1}}}, "backend.kwargs.faults.hang.fetch"),
    ({"hang": {"fetch": {"seconds": float("nan"), "calls": [1]}}},
     "backend.kwargs.faults.hang.fetch.seconds"),
    ({"hang": {"fetch": {"seconds": 1, "calls": [0]}}},
     "backend.kwargs.faults.hang.fetch.calls"),
    ({"hang": {"fetch": {"seconds": 1, "arm_ids": "abc"}}},
     "backend.kwargs.faults.hang.fetch.arm_ids"),
    (["fail_first"], "backend.kwargs.faults"),
])
def test_bad_faults_raise_a_config_error_naming_the_field(tmp_path, faults, field):
    with pytest.raises(ConfigError, match=f"^'{field}' must be"):
        make(tmp_path, faults=faults)


def test_bad_constructor_arguments_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="backend.kwargs.inner_target"):
        JournalBackend("simulated:no_such_world", journal=str(tmp_path / "j"))
    with pytest.raises(ConfigError, match="backend.kwargs.journal"):
        JournalBackend(INNER, journal=str(tmp_path))
    with pytest.raises(ConfigError, match="backend.kwargs.seed"):
        JournalBackend(INNER, journal=str(tmp_path / "j"), seed=-1)


def test_without_a_clock_job_hour_is_null(tmp_path):
    backend = JournalBackend(INNER, {"realism": "ideal"}, journal=str(tmp_path / "j"))
    backend.launch("a", PARAMS)
    assert [r["job_hour"] for r in lines(tmp_path / "j")] == [None, None]


# ------------------------------------------------------- processes, kills
def _append_worker(journal: str, prefix: str, arms: int, barrier) -> None:
    clock = SimClock()
    backend = JournalBackend(INNER, {"realism": "ideal"}, journal=journal, clock=clock)
    barrier.wait()
    for i in range(arms):
        arm = f"{prefix}-{i:03d}"
        backend.launch(arm, PARAMS)
        backend.fetch(arm, 0)
        backend.stop(arm)


def _kill_worker(journal: str) -> None:
    backend = JournalBackend(INNER, {"realism": "ideal"}, journal=journal, clock=SimClock(),
                             faults={"kill_at": {"stop": 2}})
    for arm in ("k-1", "k-2"):
        backend.launch(arm, PARAMS)
        backend.stop(arm)
    backend.launch("never", PARAMS)


def test_two_processes_append_to_one_journal_without_losing_or_mixing_lines(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    journal = str(tmp_path / "shared.jsonl")
    barrier = ctx.Barrier(2)
    arms = 40
    workers = [ctx.Process(target=_append_worker, args=(journal, p, arms, barrier))
               for p in ("p", "q")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    raw = (tmp_path / "shared.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    rows = [json.loads(line) for line in raw.splitlines()]  # every line is whole JSON
    assert len(rows) == 2 * arms * 3 * 2
    by_pid: dict[int, list[dict]] = {}
    for r in rows:
        by_pid.setdefault(r["pid"], []).append(r)
    assert sorted(by_pid) == sorted(w.pid for w in workers)
    for own in by_pid.values():
        assert [r["seq"] for r in own] == [s for s in range(1, arms * 3 + 1) for _ in (0, 1)]
    spans = [(own[0]["time_s"], own[-1]["time_s"]) for own in by_pid.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # they wrote at the same time
    pids_in_order = [r["pid"] for r in rows]
    switches = sum(a != b for a, b in zip(pids_in_order, pids_in_order[1:], strict=False))
    audit = audit_journal(tmp_path / "shared.jsonl")
    assert len(audit.launched) == 2 * arms and audit.orphans == () and audit.bad_lines == ()
    assert audit.unfinished == () and audit.counts["stop"]["ok"] == 2 * arms
    assert switches >= 3  # a waiting writer gets the lock in turn, not only at the end


def test_kill_at_kills_the_process_and_leaves_a_started_line(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    journal = tmp_path / "kill.jsonl"
    child = ctx.Process(target=_kill_worker, args=(str(journal),))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    rows = lines(journal)
    assert (rows[-1]["call"], rows[-1]["arm_id"], rows[-1]["outcome"]) == ("stop", "k-2",
                                                                           "started")
    assert rows[-1]["pid"] == child.pid
    audit = audit_journal(journal)
    assert audit.orphans == ("k-2",) and audit.stopped == ("k-1",)
    assert [(e.call, e.arm_id, e.pid) for e in audit.unfinished] == [("stop", "k-2", child.pid)]
    assert "never" not in {r["arm_id"] for r in rows}


# ------------------------------------------------------------------ audit
def test_audit_counts_orphans_max_live_and_launches_after_a_stop(tmp_path):
    def line(call, arm, outcome, pid=1, seq=None, error=None):
        return json.dumps({"call": call, "arm_id": arm, "outcome": outcome, "pid": pid,
                           "seq": seq, "error": error})

    journal = tmp_path / "hand.jsonl"
    journal.write_text("\n".join([
        line("launch", "a", "started", seq=1), line("launch", "a", "ok", seq=1),
        line("launch", "b", "ok", seq=2),
        line("launch", "c", "error", seq=3, error="ConnectionError: x"),
        line("stop", "a", "ok", seq=4),                       # live: b
        line("launch", "c", "hang", seq=5),                   # live: b c
        line("fetch", "a", "ok", seq=6),                      # a fetch after a stop is fine
        line("launch", "a", "started", seq=7), line("launch", "a", "ok", seq=7),  # bug
        line("launch", "d", "ok", pid=2, seq=1),              # live: a b c d
        line("stop", "b", "error", seq=8),
        line("stop", "d", "ok", pid=2, seq=2),                # live: a b c
        line("stop", "c", "started", pid=3, seq=1),           # killed mid-call
        '{"call": "stop", "arm_id": "b", "outc',              # cut by a crash
        "",
    ]) + "\n")
    audit = audit_journal(journal)
    assert audit.launched == ("a", "b", "c", "d")
    assert audit.stopped == ("a", "d")
    assert audit.orphans == ("a", "b", "c")
    assert audit.max_live == 4
    assert [(e.call, e.arm_id, e.line) for e in audit.calls_after_stop] == [("launch", "a", 8)]
    assert [(e.arm_id, e.pid, e.seq) for e in audit.unfinished] == [("c", 3, 1)]
    assert audit.bad_lines == (14,) and audit.lines == 14
    assert audit.counts["launch"] == {"started": 2, "ok": 4, "error": 1, "hang": 1}
    assert audit.counts["stop"] == {"started": 1, "ok": 2, "error": 1, "hang": 0}
    assert audit.counts["fetch"]["ok"] == 1


def test_audit_of_a_missing_journal_is_a_typed_error(tmp_path):
    with pytest.raises(InputDataError, match="'journal' must be a readable journal file"):
        audit_journal(tmp_path / "nope.jsonl")


def test_a_relaunch_after_stop_is_refused_by_the_platform_and_reported(tmp_path):
    backend = make(tmp_path)
    backend.launch("a", PARAMS)
    backend.stop("a")
    with pytest.raises(StateError):
        backend.launch("a", PARAMS)
    audit = audit_journal(tmp_path / "calls.jsonl")
    assert [(e.arm_id, e.outcome) for e in audit.calls_after_stop] == [("a", "started")]
    assert audit.orphans == () and audit.max_live == 1


def test_threads_of_one_process_share_the_journal_safely(tmp_path):
    clock = SimClock()
    backend = make(tmp_path, clock=clock)
    backend.launch("a", PARAMS)
    clock.advance(1)
    threads = [threading.Thread(target=lambda: [backend.fetch("a", 0) for _ in range(25)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rows = lines(tmp_path / "calls.jsonl")
    fetches = [r for r in rows if r["call"] == "fetch"]
    assert len(fetches) == 200 and all(r["outcome"] in ("started", "ok") for r in fetches)
    assert sorted({r["seq"] for r in fetches}) == sorted({r["seq"] for r in fetches
                                                           if r["outcome"] == "ok"})
    assert len({r["seq"] for r in fetches}) == 100
