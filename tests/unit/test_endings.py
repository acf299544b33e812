"""Every ending of run_local stops every arm, as the platform sees it (issue 11).

Each job runs on a simulated world wrapped in a :class:`JournalBackend`, so the
platform's own view (every launch and stop that took effect) is audited with
:func:`audit_journal`, and the run folder's log is checked for each arm's last
lifecycle state. The signal cases run ``hz-ray run`` in child processes (real
signals, real SIGKILL); they are started together by one module fixture so
their start-up (imports) overlaps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from hz_ray.backends import make_world
from hz_ray.backends.factory import build_backend
from hz_ray.backends.journal import JournalBackend, audit_journal
from hz_ray.clock import SimClock
from hz_ray.config import config_from_mapping
from hz_ray.local import run_local
from hz_ray.records import arm_id_for, parse_arm_id
from hz_ray.report import readout
from hz_ray.run_folder import RunFolder
from hz_ray.service.endings import next_hour_in_log
from hz_ray.service.slot import RunnerSettings
from hz_ray.storage import EventLog

JOURNAL_TARGET = "hz_ray.backends.journal:JournalBackend"
OPTIMIZER = {"seed": 0, "bucket_size": 16, "thompson_draws": 128, "proposals": 128}
SLOTS = 3
HOURS = 8
CHILD_HOURS = 400  # a child job that runs until it is signalled
CHILD_TIMEOUT_S = 120.0
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ helpers
def job_mapping(name, journal, *, faults=None, slots=SLOTS, max_hours=4, call_timeout_s=5.0,
                optimizer=None, constraints=True, **arms):
    """A small job on the smooth world behind a JournalBackend (a config mapping)."""
    world = make_world("smooth")
    raw = world.config_mapping()
    if not constraints:
        raw["constraints"] = []
    raw.update(
        name=name, extra_metrics=list(world.metrics), optimizer={**OPTIMIZER, **(optimizer or {})},
        arms={"slots": slots, "min_hours": 2, "max_hours": max_hours,
              "guardrail_stop_probability": 0.0, "late_data_hours": 2, **arms},
        clock="simulated",  # the journal wraps a simulated world: no wall-clock default
        backend={"target": JOURNAL_TARGET, "call_timeout_s": call_timeout_s,
                 "kwargs": {"journal": str(journal), "inner_target": "simulated:smooth",
                            "inner_kwargs": {"realism": "ideal", "traffic_per_arm": 50_000},
                            "faults": faults or {}}})
    return raw


def local_job(tmp_path, name="job", *, hours=HOURS, settings=None, progress=None, job_id=None,
              backend_faults=None, **spec):
    """Run a job in process; returns ``(result or the exception, journal, run_dir, wall s)``.

    The backend is built from the config (``faults`` in it), or, with
    ``backend_faults``, directly (faults that a run folder cannot save, e.g. ``inf``).
    """
    journal, run_dir = tmp_path / "calls.jsonl", tmp_path / "run"
    config = config_from_mapping(job_mapping(name, journal, **spec))
    clock = SimClock()
    if backend_faults is None:
        backend = build_backend(config.backend, clock, seed=0)
    else:
        kwargs = config.backend.kwargs
        backend = JournalBackend(kwargs["inner_target"], kwargs["inner_kwargs"], journal=journal,
                                 faults=backend_faults, clock=clock, seed=0)
    started = time.monotonic()
    try:
        outcome = run_local(config, backend, clock=clock, hours=hours, run_dir=run_dir,
                            progress=progress, runner_settings=settings, job_id=job_id)
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        outcome = exc
    return outcome, journal, run_dir, time.monotonic() - started


def events(run_dir):
    return EventLog(Path(run_dir) / "log").read().to_pylist()


def arm_states(run_dir):
    """``{arm_id: [(state, reason), ...]}`` from the run folder's log, in log order."""
    out = defaultdict(list)
    for e in events(run_dir):
        if e["kind"] == "arm_state":
            out[e["arm_id"]].append((e["state"], e["reason"]))
    return dict(out)


def retire_reasons(run_dir):
    return {e["arm_id"]: e["reason"] for e in events(run_dir) if e["kind"] == "arm_retired"}


def journal_lines(journal):
    return [json.loads(line) for line in Path(journal).read_text().splitlines() if line.strip()]


def per_slot_max_live(journal):
    """The most arms of one slot live on the platform at once, replayed from the journal."""
    live = defaultdict(set)
    most = 0
    for r in journal_lines(journal):
        if r["outcome"] not in ("ok", "hang") or r["call"] == "fetch":
            continue
        slot = parse_arm_id(r["arm_id"])[1]
        if r["call"] == "launch":
            live[slot].add(r["arm_id"])
        else:
            live[slot].discard(r["arm_id"])
        most = max(most, len(live[slot]))
    return most


def launches_ok(journal):
    if not Path(journal).exists():
        return 0
    return sum(1 for r in journal_lines(journal) if r["call"] == "launch" and r["outcome"] == "ok")


def check_no_orphan(journal, run_dir, *, slots=SLOTS, handed_off=()):
    """The platform serves no arm of the job (but the handed-off one); the log agrees."""
    audit = audit_journal(journal)
    assert audit.launched, "the job launched nothing: the check would be vacuous"
    assert audit.orphans == tuple(sorted(handed_off)), audit.orphans
    assert audit.max_live <= slots
    assert per_slot_max_live(journal) == 1
    assert audit.calls_after_stop == ()
    assert audit.bad_lines == ()
    states = arm_states(run_dir)
    assert set(audit.launched) <= set(states), "an arm reached the platform but not the log"
    last = {arm: seq[-1][0] for arm, seq in states.items()}
    expected = {arm: "handed_off" if arm in handed_off else "stopped" for arm in states}
    assert last == expected
    return audit


# ------------------------------------------------------------- in process
def test_normal_end_stops_every_arm(tmp_path):
    result, journal, run_dir, _ = local_job(tmp_path)
    assert not isinstance(result, Exception), result
    audit = check_no_orphan(journal, run_dir)
    assert set(audit.launched) == set(result.arms) and len(audit.launched) > SLOTS
    assert audit.stopped == audit.launched
    assert result.handed_off == () and result.unstopped == ()
    live_at_end = {a for a, s in result.arms.items() if s.stopped_hour is None}
    assert live_at_end  # the final stops had work to do
    reasons = retire_reasons(run_dir)
    assert {reasons[a] for a in live_at_end} == {"job_end"}
    assert audit.counts["stop"]["error"] == audit.counts["launch"]["error"] == 0


def test_handoff_keeps_the_recommended_arm_live_and_only_it(tmp_path):
    # Arms outlive the job and there is no guardrail, so the readout's arm is live at the end.
    result, journal, run_dir, _ = local_job(
        tmp_path, "handoff", hours=8, max_hours=12, constraints=False, handoff_recommended=True,
        contender_stop_share=0.0, optimizer={"recommend_min_hours": 2})
    assert not isinstance(result, Exception), result
    rec = result.recommendation
    assert not rec.is_control, "this job's readout should be an arm (seeded)"
    assert result.handed_off == (rec.arm_id,)
    audit = check_no_orphan(journal, run_dir, handed_off=(rec.arm_id,))
    assert audit.orphans == (rec.arm_id,) and len(audit.launched) == SLOTS
    assert arm_states(run_dir)[rec.arm_id][-1][0] == "handed_off"
    text = readout(result)
    assert "Handed off, still LIVE" in text and rec.arm_id in text.split("Handed off")[1]


def test_handoff_off_stops_the_recommended_arm_too(tmp_path):
    result, journal, run_dir, _ = local_job(
        tmp_path, "handoff", hours=8, max_hours=12, constraints=False,
        contender_stop_share=0.0, optimizer={"recommend_min_hours": 2})
    assert not result.recommendation.is_control and result.handed_off == ()
    check_no_orphan(journal, run_dir)
    assert "Handed off" not in readout(result)


def test_an_exception_in_user_code_propagates_and_stops_every_arm(tmp_path):
    class BoomError(Exception):
        pass

    def progress(p):
        if p.hour == 3:
            raise BoomError("progress callback failed at hour 3")

    outcome, journal, run_dir, _ = local_job(tmp_path, progress=progress)
    assert isinstance(outcome, BoomError)
    check_no_orphan(journal, run_dir)
    states, reasons = arm_states(run_dir), retire_reasons(run_dir)
    interrupted = {a for a, r in reasons.items() if r == "interrupted"}
    assert len(interrupted) == SLOTS  # the arms live at hour 3 (max_hours 4)
    for arm in interrupted:
        assert ("stopping", "interrupted") in states[arm] and states[arm][-1] == ("stopped", None)


@pytest.mark.parametrize("faults", [{"crash_at": {"launch": 2}}, {"crash_at": {"fetch": 5}}],
                         ids=["crash_at_launch_2", "crash_at_fetch_5"])
def test_a_backend_crash_is_isolated_and_the_job_completes(tmp_path, faults):
    result, journal, run_dir, _ = local_job(tmp_path, faults=faults)
    assert not isinstance(result, Exception), result
    audit = check_no_orphan(journal, run_dir)
    kind = next(iter(faults["crash_at"]))
    assert audit.counts[kind]["error"] == 1  # the crash happened, once
    assert len(result.recommendations) == HOURS
    crashed = [r for r in journal_lines(journal) if r["fault"] == "crash_at"]
    assert len(crashed) == 1 and crashed[0]["error"] == "RuntimeError: injected crash"
    # The arm the crash hit ran on: launched (a retry) or fetched again later.
    arm = crashed[0]["arm_id"]
    assert arm in audit.launched and arm in result.arms
    later = [r for r in journal_lines(journal)
             if r["arm_id"] == arm and r["call"] == kind and r["outcome"] == "ok"]
    assert later


def test_a_stop_that_fails_twice_then_succeeds_blocks_the_slot_until_it_did(tmp_path):
    settings = RunnerSettings(backend_attempts=1, initial_backoff_s=0, max_backoff_s=0)
    result, journal, run_dir, _ = local_job(tmp_path, faults={"fail_first": {"stop": 2}},
                                            settings=settings)
    assert not isinstance(result, Exception), result
    audit = check_no_orphan(journal, run_dir)  # per slot at most one arm on the platform
    states, reasons = arm_states(run_dir), retire_reasons(run_dir)
    # Every stop of every arm failed twice on the platform before one took effect.
    stops = defaultdict(list)
    for r in journal_lines(journal):
        if r["call"] == "stop" and r["outcome"] != "started":
            stops[r["arm_id"]].append((r["outcome"], r["job_hour"]))
    assert set(stops) == set(audit.launched)
    assert all([o for o, _ in v] == ["error", "error", "ok"] for v in stops.values()), stops
    # The first arms' stops were the slots' own (one try each, retried at later polls):
    # two stop_failed, then stopped; the slot launched its next arm only then.
    by_slot = sorted(a for a, r in reasons.items() if r == "max_hours")
    assert by_slot == [arm_id_for(parse_arm_id(by_slot[0])[0], s, 0) for s in range(SLOTS)]
    launched_at = {r["arm_id"]: r["job_hour"] for r in journal_lines(journal)
                   if r["call"] == "launch" and r["outcome"] == "ok"}
    for arm in by_slot:
        tail = [s for s, _ in states[arm] if s in ("stop_failed", "stopped")]
        assert tail == ["stop_failed", "stop_failed", "stopped"], (arm, states[arm])
        job, slot, _ = parse_arm_id(arm)
        stopped_hour = stops[arm][-1][1]
        assert stopped_hour > stops[arm][0][1]  # the retries took later polls
        assert launched_at[arm_id_for(job, slot, 1)] >= stopped_hour
    # The arms live at the end were stopped by the final stops (retried within the call).
    at_end = sorted(a for a, r in reasons.items() if r == "job_end")
    assert len(at_end) == SLOTS and all(states[a][-1] == ("stopped", None) for a in at_end)
    assert result.unstopped == ()


FOREVER = {"seconds": "forever"}


def test_a_fetch_that_hangs_forever_stops_that_arm_and_not_the_job(tmp_path):
    job_id = "hang-0001"
    hung = arm_id_for(job_id, 0, 0)
    settings = RunnerSettings(fetch_failures_to_give_up=2)
    result, journal, run_dir, wall_s = local_job(
        tmp_path, "hang", job_id=job_id, settings=settings, call_timeout_s=0.3,
        backend_faults={"hang": {"fetch": {**FOREVER, "arm_ids": [hung]}}})
    assert not isinstance(result, Exception), result
    assert wall_s < 45, wall_s  # bounded: the hung call is abandoned after 0.3 s
    audit = check_no_orphan(journal, run_dir)
    assert audit.counts["fetch"]["hang"] == 1  # one call hung; no second one was made
    assert retire_reasons(run_dir)[hung] == "backend_error"
    assert result.arms[hung].stopped_hour is not None and result.arms[hung].stopped_hour < 4
    # The other slots went on: arms ran their hours and their data came in.
    accepted = {e["arm_id"] for e in events(run_dir) if e["kind"] == "delta_accepted"}
    for slot in (1, 2):
        mine = [a for a in result.arms if parse_arm_id(a)[1] == slot]
        assert len(mine) >= 2 and set(mine[:-1]) <= accepted
    assert hung not in accepted


def test_a_config_with_a_forever_hang_runs(tmp_path):
    """JournalBackend documents ``hang: {fetch: {seconds: .inf, ...}}`` in ``backend.kwargs``;
    a job with that config must start (the run folder saves the config)."""
    result, journal, run_dir, _ = local_job(
        tmp_path, "hang-cfg", hours=3, call_timeout_s=0.3,
        faults={"hang": {"fetch": {**FOREVER, "arm_ids": ["hang-cfg.s00-0000"]}}})
    assert not isinstance(result, Exception), repr(result)
    check_no_orphan(journal, run_dir)


# ----------------------------------------------------------- child processes
def _child(args, out_dir, name):
    out, err = open(out_dir / f"{name}.out", "w"), open(out_dir / f"{name}.err", "w")  # noqa: SIM115
    # faulthandler: a child still running at the deadline is sent SIGABRT first, so its
    # stderr shows where every thread was.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hz_ray.cli", *map(str, args)], cwd=REPO,
                            stdout=out, stderr=err, env=env)
    return proc, out, err


def _hz_ray(*args, timeout=60.0):
    return subprocess.run([sys.executable, "-m", "hz_ray.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


class Child:
    """One ``hz-ray run`` child: its folder, config, journal, and what came of it."""

    def __init__(self, root, name, faults=None, signal_at=None, launches=2):
        self.name, self.dir = name, root / name
        self.dir.mkdir()
        self.journal, self.run_dir = self.dir / "calls.jsonl", self.dir / "run"
        self.config = self.dir / "job.yaml"
        self.config.write_text(yaml.safe_dump(job_mapping(name, self.journal, faults=faults)))
        self.signal_at, self.launches = signal_at, launches
        self.proc, self._out, self._err = _child(
            ["run", self.config, "--hours", CHILD_HOURS, "--run-dir", self.run_dir],
            self.dir, "run")
        self.sent = False
        self.rc = None

    def poll(self):
        if self.signal_at is not None and not self.sent and self.proc.poll() is None \
                and launches_ok(self.journal) >= self.launches:
            self.proc.send_signal(self.signal_at)
            self.sent = True
        self.rc = self.proc.poll()
        return self.rc is not None

    def finish(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler dumps the stacks
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()
        self.rc = self.proc.returncode
        self.stdout = (self.dir / "run.out").read_text()
        self.stderr = (self.dir / "run.err").read_text()


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Four ``hz-ray run`` children at once: SIGINT, SIGTERM, SIGKILL, and kill_at fetch 12."""
    root = tmp_path_factory.mktemp("children")
    jobs = {
        "sigint": Child(root, "sigint", signal_at=signal.SIGINT),
        "sigterm": Child(root, "sigterm", signal_at=signal.SIGTERM),
        "sigkill": Child(root, "sigkill", signal_at=signal.SIGKILL, launches=5),
        "kill_at": Child(root, "kill_at", faults={"kill_at": {"fetch": 12}}),
    }
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while time.monotonic() < deadline and not all([c.poll() for c in jobs.values()]):
            time.sleep(0.05)
    finally:
        for c in jobs.values():
            c.finish()
    return jobs


def _explain(child):
    return f"rc {child.rc}\nstderr:\n{child.stderr[-3000:]}"


@pytest.mark.parametrize(("name", "code"), [("sigint", 130), ("sigterm", 143)])
def test_sigint_and_sigterm_stop_every_arm_and_exit_with_one_line(children, name, code):
    child = children[name]
    assert child.sent, _explain(child)
    assert child.rc == code, _explain(child)
    lines = child.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hz-ray: interrupted"), _explain(child)
    assert name.upper() in lines[0] and "Traceback" not in child.stderr
    check_no_orphan(child.journal, child.run_dir)
    reasons = retire_reasons(child.run_dir)
    assert "interrupted" in reasons.values()


def test_sigkill_leaves_orphans_that_hz_ray_stop_stops_once(children):
    child = children["kill_at"]
    assert child.rc == -signal.SIGKILL, _explain(child)
    after_kill = audit_journal(child.journal)
    assert after_kill.orphans, "a SIGKILL mid-job leaves live arms: the test must see them"
    assert [(e.call, e.outcome) for e in after_kill.unfinished] == [("fetch", "started")]

    first = _hz_ray("stop", child.run_dir)
    assert first.returncode == 0, first.stderr
    assert f"{len(after_kill.orphans)} arm(s) stopped" in first.stdout
    audit = check_no_orphan(child.journal, child.run_dir)
    assert set(after_kill.orphans) <= set(audit.stopped)
    assert set(retire_reasons(child.run_dir)[a] for a in after_kill.orphans) == {"reconciled"}

    stops_before = audit.counts["stop"]["started"]
    second = _hz_ray("stop", child.run_dir)
    assert second.returncode == 0, second.stderr
    assert "0 arm(s) stopped" in second.stdout
    assert audit_journal(child.journal).counts["stop"]["started"] == stops_before
    check_no_orphan(child.journal, child.run_dir)


def test_sigkill_then_resume_readopts_or_stops_and_ends_with_no_orphan(children):
    child = children["sigkill"]
    assert child.sent and child.rc == -signal.SIGKILL, _explain(child)
    after_kill = audit_journal(child.journal)
    assert after_kill.orphans
    killed_pid = {r["pid"] for r in journal_lines(child.journal)}
    job_id = RunFolder.read(child.run_dir).job_id
    hours = next_hour_in_log(child.run_dir, job_id) + 3
    resumed = _hz_ray("run", child.config, "--resume", "--run-dir", child.run_dir,
                      "--hours", hours, timeout=CHILD_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    check_no_orphan(child.journal, child.run_dir)
    # Each arm left live by the kill was either re-adopted (launched again by the new
    # process, the one repeated launch allowed, and run on) or stopped on resume
    # ("reconciled", never relaunched); either way the new process stopped it.
    new = [r for r in journal_lines(child.journal)
           if r["pid"] not in killed_pid and r["outcome"] == "ok"]
    relaunched = {r["arm_id"] for r in new if r["call"] == "launch"}
    stopped = {r["arm_id"] for r in new if r["call"] == "stop"}
    reasons = retire_reasons(child.run_dir)
    for arm in after_kill.orphans:
        assert arm in stopped, arm
        if arm in relaunched:
            assert reasons[arm] != "reconciled", arm
        else:
            assert reasons[arm] == "reconciled", (arm, reasons.get(arm))
    before = {r["arm_id"] for r in journal_lines(child.journal)
              if r["pid"] in killed_pid and r["call"] == "launch"}
    assert relaunched & before <= set(after_kill.orphans)  # only live arms are relaunched
    # Killed just after the second arms' launches (hour 4 of arms of up to 4 h), at least
    # the first of them was logged live with hours left: it was re-adopted.
    assert relaunched & set(after_kill.orphans), (relaunched, after_kill.orphans)
