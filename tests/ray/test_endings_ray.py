"""Every ending of run_on_ray stops every arm, as the platform sees it (issue 11).

The same checks as tests/unit/test_endings.py, on Ray: every arm worker (one
process per slot) and the driver build their own JournalBackend on one shared
journal, so the audit sees every launch and stop that took effect in any
process. One case runs ``hz-ray run --ray`` in a child process (its own
embedded Ray) and SIGKILLs it, after the in-process jobs; SIGTERM is sent to
this process while ``run_on_ray`` waits in Ray, which is the CLI's path without
a second Ray start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from actors import run_on_ray
from actors.arm_worker import RunnerSettings
from hz_ray.backends.journal import audit_journal
from hz_ray.config import config_from_mapping
from hz_ray.service.endings import JobInterrupted
from tests.unit.test_endings import (
    SLOTS,
    arm_states,
    check_no_orphan,
    job_mapping,
    journal_lines,
    launches_ok,
    retire_reasons,
)

pytestmark = pytest.mark.ray

HOURS = 6
MAX_HOURS = 3
SECONDS_PER_HOUR = 0.3
CHILD_TIMEOUT_S = 150.0
REPO = Path(__file__).resolve().parents[2]


def ray_job(tmp_path, name="ray-job", *, progress=None, settings=None, **spec):
    """Run a job on the session's Ray; returns ``(result or the exception, journal, run_dir)``."""
    journal, run_dir = tmp_path / "calls.jsonl", tmp_path / "run"
    config = config_from_mapping(job_mapping(name, journal, max_hours=MAX_HOURS, **spec))
    try:
        outcome = run_on_ray(config, hours=HOURS, run_dir=run_dir,
                             seconds_per_hour=SECONDS_PER_HOUR, progress=progress,
                             runner_settings=settings)
    except BaseException as exc:  # noqa: BLE001 - the caller asserts on it (SIGTERM too)
        outcome = exc
    return outcome, journal, run_dir


# ------------------------------------------------------- process helpers
def _ppids():
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid):
    parents, found, todo = _ppids(), [], [pid]
    while todo:
        pid = todo.pop()
        kids = [child for child, parent in parents.items() if parent == pid]
        found += kids
        todo += kids
    return found


def _reap(pids):
    """Kill what a SIGKILLed Ray driver left running (its embedded Ray's agents), by pid."""
    for pid in pids:
        try:  # only if the pid is still one of Ray's (not reused since)
            ours = b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if ours:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- in process
def test_ray_normal_end_stops_every_arm(ray_session, tmp_path):
    result, journal, run_dir = ray_job(tmp_path)
    assert not isinstance(result, Exception), result
    audit = check_no_orphan(journal, run_dir)
    assert set(audit.launched) == set(result.arms) and len(audit.launched) > SLOTS
    assert result.handed_off == () and result.unstopped == ()
    live_at_end = {a for a, s in result.arms.items() if s.stopped_hour is None}
    assert live_at_end and {retire_reasons(run_dir)[a] for a in live_at_end} == {"job_end"}
    assert len({r["pid"] for r in journal_lines(journal)}) >= SLOTS + 1  # workers + driver


def test_ray_exception_in_user_code_propagates_and_stops_every_arm(ray_session, tmp_path):
    class ProgressError(Exception):
        pass

    def progress(p):
        # At hour 3, or the next hour with arms live (on a loaded machine the slots may
        # still be between two arms when the driver's hour 3 ends).
        if p.hour >= 3 and p.live_arms > 0:
            raise ProgressError(f"progress callback failed at hour {p.hour}")

    outcome, journal, run_dir = ray_job(tmp_path, progress=progress)
    assert isinstance(outcome, ProgressError), outcome
    check_no_orphan(journal, run_dir)
    states = arm_states(run_dir)
    interrupted = [a for a, r in retire_reasons(run_dir).items() if r == "interrupted"]
    assert interrupted
    assert all(("stopping", "interrupted") in states[a] for a in interrupted)


def test_ray_stop_that_fails_twice_then_succeeds(ray_session, tmp_path):
    settings = RunnerSettings(backend_attempts=1, initial_backoff_s=0, max_backoff_s=0)
    result, journal, run_dir = ray_job(tmp_path, faults={"fail_first": {"stop": 2}},
                                       settings=settings)
    assert not isinstance(result, Exception), result
    audit = check_no_orphan(journal, run_dir)  # per slot at most one arm on the platform
    states, reasons = arm_states(run_dir), retire_reasons(run_dir)
    stops, last = defaultdict(list), {}
    for r in journal_lines(journal):
        if r["call"] == "stop" and r["outcome"] != "started":
            stops[(r["arm_id"], r["pid"])].append(r["outcome"])
            last[r["arm_id"]] = r["outcome"]
    assert set(last) == set(audit.launched) and set(last.values()) == {"ok"}
    # Fault counters are per process: in each process that stopped an arm, its first two
    # stops failed and the third took effect (a worker's job may end before its third).
    assert all(v == ["error", "error", "ok"][:len(v)] for v in stops.values()), stops
    by_slot = [a for a, r in reasons.items() if r == "max_hours"]
    assert by_slot
    for arm in by_slot:
        tail = [s for s, _ in states[arm] if s in ("stop_failed", "stopped")]
        assert tail == ["stop_failed", "stop_failed", "stopped"], (arm, states[arm])
    assert result.unstopped == ()


def test_ray_sigterm_stops_every_arm_and_raises_job_interrupted(ray_session, tmp_path):
    """SIGTERM while the driver waits in Ray (as ``hz-ray run --ray`` mostly does).

    The CLI maps the exception to its exit code: 143 needs ``JobInterrupted`` with
    ``signal_name == "SIGTERM"``; a plain ``KeyboardInterrupt`` exits 130, "(SIGINT)".
    """
    hour2, done = threading.Event(), threading.Event()

    def progress(p):
        if p.hour == 2:
            hour2.set()

    def terminate():
        if hour2.wait(CHILD_TIMEOUT_S):
            time.sleep(0.1)  # the driver is back in ray.wait for the next hour
            if not done.is_set():  # (3 job hours are left: it is still running)
                os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=terminate, daemon=True)
    sender.start()
    try:
        outcome, journal, run_dir = ray_job(tmp_path, progress=progress)
    finally:
        done.set()
    sender.join(timeout=5)
    assert isinstance(outcome, KeyboardInterrupt), outcome
    check_no_orphan(journal, run_dir)
    assert "interrupted" in retire_reasons(run_dir).values()
    assert isinstance(outcome, JobInterrupted) and outcome.signal_name == "SIGTERM", (
        f"got {type(outcome).__name__}{outcome.args}: the CLI would exit "
        f"{143 if getattr(outcome, 'signal_name', 'SIGINT') == 'SIGTERM' else 130}")


# ----------------------------------------------------------- child process
KILL_AT_HOUR = 3.85  # just before the first arms' max_hours (4): a survivor would relaunch
CHILD_SECONDS_PER_HOUR = 0.5  # the CLI's pace
LOCKED = "no other process is running a job in"  # hz-ray stop refused: the folder is locked


def _job_hours(journal):
    return max((r["job_hour"] for r in journal_lines(journal)), default=-1.0) \
        if Path(journal).exists() else -1.0


class RayChild:
    """``hz-ray run --ray`` (its own embedded Ray) SIGKILLed mid-job, then ``hz-ray stop``.

    (A second child for SIGTERM doubled this file's runtime on a 2-core machine;
    SIGTERM is sent to this process instead, see the test above.)
    """

    def __init__(self, root):
        self.dir = root / "sigkill"
        self.dir.mkdir()
        self.journal, self.run_dir = self.dir / "calls.jsonl", self.dir / "run"
        config = self.dir / "job.yaml"
        config.write_text(yaml.safe_dump(job_mapping("sigkill", self.journal)))
        self._out, self._err = open(self.dir / "out", "w"), open(self.dir / "err", "w")  # noqa: SIM115
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hz_ray.cli", "run", str(config), "--ray", "--hours", "400",
             "--run-dir", str(self.run_dir)], cwd=REPO, stdout=self._out, stderr=self._err,
            env=env)
        self.tree, self.rc, self.killed_at = [], None, None
        self.after_kill = self.after_stop = self.later = self.stop = None
        self.stop_attempts = []

    def run(self):
        """Kill at KILL_AT_HOUR; ``hz-ray stop`` at once, again while the folder is locked."""
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            if launches_ok(self.journal) >= SLOTS and _job_hours(self.journal) >= KILL_AT_HOUR:
                self.tree = _descendants(self.proc.pid)
                self.proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        else:
            return
        self.rc = self.proc.wait()
        self.killed_at = time.time()
        self.after_kill = audit_journal(self.journal)
        while time.monotonic() < deadline:
            stop = subprocess.run([sys.executable, "-m", "hz_ray.cli", "stop",
                                   str(self.run_dir)], cwd=REPO, capture_output=True,
                                  text=True, timeout=120)
            self.stop_attempts.append((round(time.time() - self.killed_at, 2), stop.returncode,
                                       stop.stderr.strip()[-300:]))
            self.stop = stop
            # (the dying job's central actor may still write its last log part: retry)
            if not (stop.returncode == 2 and (LOCKED in stop.stderr
                                              or "already exists" in stop.stderr)):
                break
            time.sleep(0.5)
        self.after_stop = audit_journal(self.journal)
        # Whatever survived the driver has had 10 more job hours (beyond max_hours) to
        # act on the platform; it must still be clean.
        time.sleep(10 * CHILD_SECONDS_PER_HOUR)
        self.later = audit_journal(self.journal)

    def finish(self):
        if self._out.closed:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()
        self.rc = self.proc.returncode
        self.stderr = (self.dir / "err").read_text()


@pytest.fixture(scope="module")
def killed_ray_child(tmp_path_factory):
    """The SIGKILLed ``hz-ray run --ray`` child (after the in-process jobs: run alone, its
    actors outlive the driver long enough for the race below to show in most runs)."""
    child = RayChild(tmp_path_factory.mktemp("ray-children"))
    try:
        child.run()
        yield child
    finally:
        child.finish()
        _reap([pid for pid in child.tree if pid != child.proc.pid])


def _killed(child):
    child.finish()
    assert child.killed_at is not None and child.rc == -signal.SIGKILL, (
        f"rc {child.rc}\nstderr tail:\n{child.stderr[-3000:]}")
    return child


def test_ray_sigkill_then_hz_ray_stop_leaves_no_orphan(killed_ray_child):
    child = _killed(killed_ray_child)
    assert child.after_kill.orphans, "a SIGKILL mid-job leaves live arms: the test must see them"
    assert child.stop.returncode == 0, child.stop_attempts
    assert child.after_stop.orphans == (), child.stop_attempts
    assert child.later is not None and child.later.orphans == (), child.later.orphans
    check_no_orphan(child.journal, child.run_dir)


@pytest.mark.xfail(strict=False, reason=(
    "known gap: Ray ends a dead driver's actors 1-2 s later; the central actor refuses samples "
    "and 'launching' once the run folder's lock is free or held by the final stops, but an arm "
    "whose 'launching' was durable just before the kill still reaches the platform after it "
    "(the final stops see it launching and stop it again after their settle wait)"))
def test_ray_sigkill_no_arm_is_launched_after_the_driver_died(killed_ray_child):
    """The driver's actors must not act on their own once it is dead: an arm launched
    then is stopped only if the final stops (the job's supervisor, ``hz-ray stop``)
    happen to read the log after that launch."""
    child = _killed(killed_ray_child)
    late = [(round(r["time_s"] - child.killed_at, 2), r["pid"], r["arm_id"])
            for r in journal_lines(child.journal)
            if r["call"] == "launch" and r["outcome"] == "ok" and r["time_s"] > child.killed_at]
    assert not late, f"launches after the driver's SIGKILL (s after, pid, arm): {late}"
