"""SIGKILL at any point of an hour's commit/checkpoint cycle, then resume (issue: resume from
a kill at any point).

Every kill point of :mod:`hz_ray.kill_points` is hit by ``hz-ray run`` in a child process
(``HZ_RAY_KILL_AT=<point>:<n>``), which must die there by SIGKILL; the next child resumes the
run folder (``--resume``). The kills are chained in a few run folders (each resume but the
last is itself killed at the next point, a little later in the job), so one job covers many
points; the last child runs the job to its end. Then the run folder must hold:

- a readout for every job hour, exactly once;
- no arm registered twice, no ``(arm, metric, hour)`` accepted twice;
- nothing lost: every reading the platform published by the job's last poll accepted, with
  the value published (``tests/kill_platform.py`` keeps its arms in a file, so they outlive
  each killed process, as a real platform's would);
- every arm ``stopped`` last, and in the platform's journal (:class:`JournalBackend`) no
  orphan and no launch of an arm after its stop.

Before some resumes the test also spoils the checkpoint (another job's, a log position the
log never reached, torn JSON, ...): the log is the truth, so such a checkpoint must be ignored
(with a warning) and never block the resume.

The children are forked from one "zygote" process per thread of chains, which imported hz_ray
(and torch) once: each child is still a process of its own, killed for real, but the file
runs in a fraction of the time that starting ``python -m hz_ray.cli`` per child would take.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hz_ray.backends.journal import audit_journal
from hz_ray.delta import reading_to_delta
from hz_ray.kill_points import ENV_VAR
from hz_ray.storage import EventLog
from tests.kill_platform import load_state, published, reading

REPO = Path(__file__).resolve().parents[2]
PLATFORM_TARGET = "tests.kill_platform:KillPlatform"
HOURS = 12
SLOTS = 3
CHILD_TIMEOUT_S = 120.0
IGNORED = "does not match this job's event log"  # the warning for a spoilt checkpoint


@dataclass(frozen=True)
class Kill:
    """Kill the child the ``n``-th time it reaches ``point`` (counted from the child's start),
    which is in job hour ``hour``; with ``tamper``, spoil the checkpoint before the resume."""

    point: str
    n: int
    hour: int
    tamper: str | None = None

    @property
    def name(self) -> str:
        return f"{self.point}:{self.n}@h{self.hour}"


@dataclass(frozen=True)
class Plan:
    """One run folder's job and its kills, in order (each child resumes the one before)."""

    kills: tuple[Kill, ...]
    hours: int = HOURS
    likes_min_delta: float = -0.01
    guardrail: float = 0.0


PLANS = {
    "cycle": Plan((
        Kill("hour.after_polls", 2, 1),
        Kill("hour.after_refresh", 3, 3),       # before the arms' stops are decided
        Kill("hour.after_decide", 1, 3),        # arms stopped and retired, none launched
        Kill("hour.after_launches", 1, 3),      # the next arms launched, readout not queued
        Kill("hour.after_progress", 2, 4),      # readout queued, not committed
        Kill("hour.after_commit", 2, 5, tamper="beyond_log"),  # committed, no checkpoint yet
        Kill("hour.after_checkpoint", 2, 7, tamper="other_job"),
        Kill("checkpoint.before_write", 2, 9),  # after the commit of a launch hour
    )),
    "storage": Plan((
        Kill("slot.after_launch", 2, 0),        # slot 1 launched on the platform, not 'live'
        Kill("slot.after_launching", 3, 3),     # slot 0's next arm 'launching', not launched
        Kill("slot.after_stop", 2, 6, tamper="other_format"),  # slot 1 stopped, not retired
        Kill("log.before_write", 13, 8),        # the hour's commit, after its launches
        Kill("log.before_replace", 8, 9, tamper="other_surrogate"),  # part fsynced, not renamed
        Kill("log.after_replace", 4, 9),        # a retirement's part renamed, folder not fsynced
        Kill("commit.after_flush", 5, 9),       # a sample committed, its caller not woken
        Kill("checkpoint.before_replace", 1, 9),
        # torn JSON last: a later tamper could not read it back
        Kill("checkpoint.after_replace", 1, 10, tamper="garbage"),
    )),
    # An arm stopped early (guardrail, at 2 of its 3 hours): killed after the platform's
    # stop returned, before the retirement reached the log.
    "guardrail": Plan((Kill("slot.after_stop", 1, 2),), hours=5, likes_min_delta=0.05,
                      guardrail=0.05),
}
THREADS = (("cycle", "guardrail"), ("storage",))  # chains run one after another in a thread
POINTS = [(chain, index) for chain, plan in PLANS.items() for index in range(len(plan.kills))]
TAMPERS = {k.tamper: (chain, index + 1) for chain, index in POINTS
           if (k := PLANS[chain].kills[index]).tamper}
RELAUNCH_BUG = (
    "ArmSlotRunner._begin_stop stops an arm on the platform before its retirement is durable: "
    "a kill in between leaves the arm 'live' in the log, so a resume within its max_hours "
    "re-adopts it and launches it again on the platform")

ZYGOTE = r"""
import json, os, signal, sys, time, traceback
import hz_ray.cli, hz_ray.local, hz_ray.backends.journal, tests.kill_platform

def child(job):
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.environ.pop(job["kill_var"], None)
    os.environ.update(job["env"])
    try:
        code = hz_ray.cli.main(job["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 70
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(job)
    deadline, timed_out = time.monotonic() + job["timeout_s"], False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if not timed_out and time.monotonic() > deadline:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
                      "pid": pid}), flush=True)
"""


def job_mapping(name: str, folder: Path, plan: Plan) -> dict:
    """A small job (3 slots, 3-hour arms) on the persistent platform, behind a journal."""
    return {
        "name": name,
        "parameters": [
            {"name": "w_click", "low": 1 / 3, "high": 3.0, "scale": "log", "base": 1.0},
            {"name": "w_like", "low": 1 / 3, "high": 3.0, "scale": "log", "base": 1.0},
        ],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": plan.likes_min_delta}],
        "arms": {"slots": SLOTS, "min_hours": 2, "max_hours": 3, "late_data_hours": 2,
                 "guardrail_stop_probability": plan.guardrail, "contender_stop_share": 0.0},
        "optimizer": {"seed": 0, "bucket_size": 16, "thompson_draws": 128, "proposals": 128},
        "clock": "simulated",  # a platform played on the job's simulated clock
        "backend": {"target": "hz_ray.backends.journal:JournalBackend", "call_timeout_s": 5.0,
                    "kwargs": {"journal": str(folder / "calls.jsonl"),
                               "inner_target": PLATFORM_TARGET,
                               "inner_kwargs": {"state": str(folder / "platform.json")}}},
    }


def spoil_checkpoint(run_dir: Path, how: str) -> None:
    """Make the run folder's checkpoint disagree with its log (or with JSON)."""
    path = run_dir / "checkpoint.json"
    text = path.read_text()
    state = json.loads(text)
    if how == "garbage":
        path.write_text(text[:len(text) // 2])  # torn JSON
        return
    if how == "other_job":
        state["job_id"] = "another-job-0000"
    elif how == "other_format":
        state["format"] = "hz-ray.posterior/0"
    elif how == "beyond_log":
        state["log_seq"] = EventLog(run_dir / "log").last_seq + 1000
    elif how == "other_surrogate":
        state["surrogate"]["metrics"] = ["clicks", "likes"]
    else:
        raise AssertionError(how)
    path.write_text(json.dumps(state))


# ------------------------------------------------------------------ the children
@dataclass
class Step:
    """One child: the kill it was given (``None``: run to the end) and what came of it."""

    kill: Kill | None
    tampered: str | None  # how the checkpoint was spoilt before this child started
    rc: int | None = None
    timed_out: bool = False
    stderr: str = ""
    hours_logged: int = 0  # distinct readout hours in the log after the child
    hour: int | None = None  # the job hour of the child's last platform call
    twice: list[str] = field(default_factory=list)  # things in the log more than once

    def explain(self) -> str:
        kill = self.kill.name if self.kill else None
        return f"kill {kill}, checkpoint spoilt: {self.tampered}: rc {self.rc}, timed out " \
               f"{self.timed_out}, hour {self.hour}\n{self.stderr[-3000:]}"


@dataclass
class Chain:
    """One run folder and the children run in it, in order."""

    name: str
    folder: Path
    steps: list[Step] = field(default_factory=list)

    @property
    def plan(self) -> Plan:
        return PLANS[self.name]

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"

    @property
    def journal(self) -> Path:
        return self.folder / "calls.jsonl"


def events(run_dir: Path) -> list[dict]:
    return EventLog(run_dir / "log").read().to_pylist()


def counted_twice(rows: list[dict]) -> list[str]:
    """Readouts, arm registrations and accepted deltas the log holds more than once."""
    keys: Counter = Counter()
    for e in rows:
        if e["kind"] == "recommendation":
            keys[("recommendation", e["hour"])] += 1
        elif e["kind"] == "arm_registered":
            keys[("arm_registered", e["arm_id"])] += 1
        elif e["kind"] == "delta_accepted":
            keys[("delta_accepted", e["arm_id"], e["metric"], e["hour"])] += 1
    return [repr(k) for k, n in keys.items() if n > 1]


def last_hour_of(journal: Path, pid: int | None) -> int | None:
    """The job hour of the last platform call of process ``pid``, from the journal."""
    if pid is None or not journal.exists():
        return None
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    mine = [r["job_hour"] for r in lines if r["pid"] == pid and r["job_hour"] is not None]
    return math.floor(mine[-1] + 1e-9) if mine else None


def run_chain(chain: Chain, zygote: subprocess.Popen) -> None:
    """Run the chain's children in order in the zygote; record every step."""
    chain.folder.mkdir(parents=True)
    config = chain.folder / "job.yaml"
    config.write_text(yaml.safe_dump(job_mapping(chain.name, chain.folder, chain.plan)))
    tamper = None
    for index, kill in enumerate([*chain.plan.kills, None]):
        if tamper is not None:
            spoil_checkpoint(chain.run_dir, tamper)
        argv = ["run", str(config), "--hours", str(chain.plan.hours), "--run-dir",
                str(chain.run_dir), *(["--resume"] if index else [])]
        err = chain.folder / f"child-{index:02d}.err"
        job = {"argv": argv, "kill_var": ENV_VAR, "timeout_s": CHILD_TIMEOUT_S,
               "env": {ENV_VAR: f"{kill.point}:{kill.n}"} if kill else {},
               "stdout": str(chain.folder / f"child-{index:02d}.out"), "stderr": str(err)}
        assert zygote.stdin is not None and zygote.stdout is not None
        zygote.stdin.write(json.dumps(job) + "\n")
        zygote.stdin.flush()
        answer = json.loads(zygote.stdout.readline() or '{"rc": null, "timed_out": false}')
        rows = events(chain.run_dir) if (chain.run_dir / "log").is_dir() else []
        step = Step(kill, tamper, answer["rc"], answer["timed_out"],
                    err.read_text() if err.exists() else "",
                    len({e["hour"] for e in rows if e["kind"] == "recommendation"}),
                    last_hour_of(chain.journal, answer.get("pid")), counted_twice(rows))
        chain.steps.append(step)
        if step.timed_out or step.rc not in (0, -9):
            return  # the chain is broken: later steps would test nothing
        tamper = kill.tamper if kill else None


def run_chains(chains: list[Chain]) -> None:
    """One zygote (hz_ray imported once) runs ``chains`` one after another."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(ENV_VAR, None)
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=REPO, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        for chain in chains:
            run_chain(chain, zygote)
    finally:
        assert zygote.stdin is not None
        zygote.stdin.close()
        zygote.wait(timeout=30)


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> dict[str, Chain]:
    root = tmp_path_factory.mktemp("kills")
    out = {name: Chain(name, root / name) for name in PLANS}
    errors: list[BaseException] = []

    def guarded(names: tuple[str, ...]) -> None:
        try:
            run_chains([out[name] for name in names])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(names,)) for names in THREADS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


# ------------------------------------------------------------------------- tests
def test_the_plans_cover_at_least_ten_kill_points():
    assert len({k.point for plan in PLANS.values() for k in plan.kills}) >= 10
    assert set(THREADS[0] + THREADS[1]) == set(PLANS)


@pytest.mark.parametrize(("chain_name", "index"), POINTS,
                         ids=[f"{c}-{PLANS[c].kills[i].name}" for c, i in POINTS])
def test_a_kill_at_the_point_is_resumed_with_nothing_counted_twice(chains, chain_name, index):
    chain = chains[chain_name]
    assert len(chain.steps) > index, f"the chain broke before this kill:\n" \
                                     f"{chain.steps[-1].explain()}"
    killed, kill = chain.steps[index], chain.plan.kills[index]
    assert not killed.timed_out, killed.explain()
    assert killed.rc == -9, killed.explain()
    assert f"hz-ray: kill point {kill.point}:{kill.n} reached" in killed.stderr, killed.explain()
    assert killed.hour == kill.hour, f"the kill came in hour {killed.hour}, not {kill.hour}: " \
                                     f"the job changed; pick the n that kills in that hour"
    assert killed.twice == [], killed.twice
    assert len(chain.steps) > index + 1, "the resume after this kill did not run"
    resumed = chain.steps[index + 1]
    assert not resumed.timed_out, resumed.explain()
    assert resumed.rc in (0, -9) and "Traceback" not in resumed.stderr, resumed.explain()
    if resumed.kill is not None:
        assert resumed.rc == -9, resumed.explain()
        assert f"hz-ray: kill point {resumed.kill.point}:" in resumed.stderr, resumed.explain()
    else:
        assert resumed.rc == 0, resumed.explain()
    assert resumed.twice == [], resumed.twice
    assert resumed.hours_logged >= killed.hours_logged


@pytest.mark.parametrize("how", sorted(TAMPERS))
def test_a_checkpoint_that_does_not_match_the_log_is_ignored_not_fatal(chains, how):
    chain_name, index = TAMPERS[how]
    chain = chains[chain_name]
    assert len(chain.steps) > index, chain.steps[-1].explain()
    resumed = chain.steps[index]
    assert resumed.tampered == how
    assert resumed.rc in (0, -9) and not resumed.timed_out, resumed.explain()
    assert "Traceback" not in resumed.stderr and "hz-ray: error" not in resumed.stderr, \
        resumed.explain()
    if resumed.rc == -9:  # it went on to its own kill point
        assert f"hz-ray: kill point {resumed.kill.point}:" in resumed.stderr, resumed.explain()
    assert IGNORED in resumed.stderr, resumed.explain()


def _final(chain: Chain) -> list[dict]:
    final = chain.steps[-1]
    assert final.kill is None and final.rc == 0, final.explain()
    assert "Traceback" not in final.stderr, final.explain()
    return events(chain.run_dir)


@pytest.mark.parametrize("chain_name", list(PLANS))
def test_the_last_resume_ends_the_job_with_nothing_lost_or_counted_twice(chains, chain_name):
    chain = chains[chain_name]
    rows = _final(chain)
    hours = chain.plan.hours
    assert counted_twice(rows) == []
    assert sorted(e["hour"] for e in rows if e["kind"] == "recommendation") == list(range(hours))
    assert sum(e["kind"] == "job_started" for e in rows) == len(chain.plan.kills) + 1
    registered = {e["arm_id"] for e in rows if e["kind"] == "arm_registered"}

    # Nothing lost: every reading published by the last poll (job hour hours - 1) is accepted,
    # with the value the platform published; nothing else is.
    state = load_state(chain.folder / "platform.json")
    assert set(state["arms"]) <= registered, "an arm reached the platform but not the log"
    expected = published(state, until_hour=hours - 1)
    accepted = {(e["arm_id"], e["metric"], e["hour"]): e for e in rows
                if e["kind"] == "delta_accepted"}
    assert len(expected) > 2 * SLOTS * (hours - 3), "too few readings to mean anything"
    assert sorted(expected - set(accepted)) == [], "published readings never accepted"
    assert sorted(set(accepted) - expected) == [], "accepted readings never published"
    for (arm_id, metric, hour), e in accepted.items():
        delta = reading_to_delta(reading(arm_id, metric, hour, state["arms"][arm_id]["params"]))
        assert math.isclose(e["mean"], delta.mean, rel_tol=1e-12, abs_tol=1e-15)
        assert e["n"] == delta.n
    assert not [e for e in rows if e["kind"] == "delta_rejected"]

    # The job's own checkpoint at the end agrees with the log.
    checkpoint = json.loads((chain.run_dir / "checkpoint.json").read_text())
    job = json.loads((chain.run_dir / "job.json").read_text())["job_id"]
    assert checkpoint["job_id"] == job
    assert checkpoint["log_seq"] <= max(e["seq"] for e in rows)


@pytest.mark.parametrize("chain_name", list(PLANS))
def test_every_arm_ends_stopped_and_no_arm_is_left_on_the_platform(chains, chain_name):
    chain = chains[chain_name]
    rows = _final(chain)
    audit = audit_journal(chain.journal)
    assert audit.launched, "the job launched nothing: the checks would be vacuous"
    assert audit.bad_lines == ()
    assert audit.max_live <= SLOTS
    assert audit.orphans == ()
    last_state: dict[str, str] = {}
    for e in rows:
        if e["kind"] == "arm_state":
            last_state[e["arm_id"]] = e["state"]
    assert set(last_state) == {e["arm_id"] for e in rows if e["kind"] == "arm_registered"}
    assert set(last_state.values()) == {"stopped"}, last_state
    state = load_state(chain.folder / "platform.json")
    assert all(arm["stop"] is not None for arm in state["arms"].values())


@pytest.mark.parametrize("chain_name", list(PLANS))
def test_no_arm_is_launched_again_after_its_stop(chains, chain_name):
    chain = chains[chain_name]
    _final(chain)
    assert load_state(chain.folder / "platform.json")["relaunched_after_stop"] == []
    assert audit_journal(chain.journal).calls_after_stop == ()
