"""Reliability benchmark (issue 11): does every ending stop every arm, on both drivers?

Every job runs on the smooth simulated world behind a
:class:`~hz_ray.backends.journal.JournalBackend`, so the platform's own record
(every launch and stop that took effect, from every process) is audited with
:func:`~hz_ray.backends.journal.audit_journal`. Three tables:

1. **Endings**: each ending x driver (local: ``run_local`` in this process or
   ``hz-ray run`` in a child; Ray: ``run_on_ray`` on this process's Ray or
   ``hz-ray run --ray`` in a child with its own Ray), over seeds: arms launched,
   orphans right after the ending, orphans after ``hz-ray stop`` / the resume,
   the most arms live at once against the slots, exit codes.
2. **Faults**: calls failed / hung per kind (the journal's counts) and jobs
   completed, for the endings that inject platform faults.
3. **Readings**: one local job through :class:`BadReadings`, a wrapper of the
   simulated world that injects invalid readings of every kind into its fetch
   results: injected / rejected (``delta_rejected`` in the log) / ingested
   (``delta_accepted`` with the injected values) / lost (valid readings the
   wrapper returned that never reached the log).

Run::

    .venv/bin/python benchmarks/reliability.py --quick      # 1 seed, a few minutes
    .venv/bin/python benchmarks/reliability.py              # seeds 0-2 local, 0-1 Ray
    .venv/bin/python benchmarks/reliability.py --drivers local --out reliability.md

Prints the tables; ``--out`` also writes them (Markdown) to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from hz_ray.backends import make_world  # noqa: E402
from hz_ray.backends.journal import JournalBackend, audit_journal  # noqa: E402
from hz_ray.clock import Clock, SimClock  # noqa: E402
from hz_ray.config import config_from_mapping  # noqa: E402
from hz_ray.delta import reading_to_delta  # noqa: E402
from hz_ray.local import run_local  # noqa: E402
from hz_ray.records import GroupStats, HourlyReading, arm_id_for, parse_arm_id  # noqa: E402
from hz_ray.run_folder import RunFolder  # noqa: E402
from hz_ray.service.endings import next_hour_in_log  # noqa: E402
from hz_ray.service.slot import RunnerSettings  # noqa: E402
from hz_ray.sim import RealismConfig, SimulatedBackend  # noqa: E402
from hz_ray.storage import EventLog  # noqa: E402

SLOTS = 3
JOURNAL_TARGET = "hz_ray.backends.journal:JournalBackend"
INNER = "simulated:smooth"
INNER_KWARGS = {"realism": "ideal", "traffic_per_arm": 50_000}
OPTIMIZER = {"bucket_size": 16, "thompson_draws": 128, "proposals": 128}
LOCAL_HOURS, RAY_HOURS = 8, 6
READINGS_HOURS = 16
LOCAL_MAX_HOURS, RAY_MAX_HOURS = 4, 3
RAY_SECONDS_PER_HOUR = 0.4
CLI_SECONDS_PER_HOUR = 0.5  # run_on_ray's default, what `hz-ray run --ray` uses
CHILD_HOURS = 400  # a child job runs until it is signalled
CHILD_TIMEOUT_S = 180.0
LOCKED = "no other process is running a job in"  # hz-ray stop refused: the folder is locked
FOREVER = float("inf")


# ------------------------------------------------------------------ configs
def job_mapping(name: str, journal: Path, *, seed: int, max_hours: int,
                faults: Mapping[str, Any] | None = None, call_timeout_s: float = 5.0,
                constraints: bool = True, optimizer: Mapping[str, Any] | None = None,
                **arms: Any) -> dict[str, Any]:
    """A small job on the smooth world behind a JournalBackend (a config mapping)."""
    world = make_world("smooth")
    raw = world.config_mapping()
    if not constraints:
        raw["constraints"] = []
    raw.update(
        name=name, extra_metrics=list(world.metrics),
        optimizer={"seed": seed, **OPTIMIZER, **(optimizer or {})},
        arms={"slots": SLOTS, "min_hours": 2, "max_hours": max_hours,
              "guardrail_stop_probability": 0.0, "late_data_hours": 2, **arms},
        clock="simulated",  # the journal wraps a simulated world: no wall-clock default
        backend={"target": JOURNAL_TARGET, "call_timeout_s": call_timeout_s,
                 "kwargs": {"journal": str(journal), "inner_target": INNER,
                            "inner_kwargs": dict(INNER_KWARGS), "faults": dict(faults or {})}})
    return raw


@dataclass(frozen=True)
class JournalFactory:
    """Builds the journaled world in each Ray worker (and the driver); faults may be inf."""

    journal: str
    faults: Mapping[str, Any]
    seed: int = 0

    def __call__(self, clock: Clock) -> JournalBackend:
        return JournalBackend(INNER, dict(INNER_KWARGS), journal=self.journal,
                              faults=dict(self.faults), clock=clock, seed=self.seed)


@dataclass(frozen=True)
class Ending:
    """One way a job ends.

    Attributes:
        name: Row label.
        kind: ``"inproc"`` (the driver runs in this process), ``"signal"`` (a child
            ``hz-ray run`` gets ``sig``), ``"kill_stop"`` / ``"kill_resume"`` (a child is
            SIGKILLed, then ``hz-ray stop`` / ``hz-ray run --resume``).
        faults: JournalBackend faults.
        arms: Extra ``arms`` settings.
        optimizer: Extra ``optimizer`` settings.
        settings: Slot loop knobs (in process only).
        raise_at: In process: the progress callback raises at this hour (once arms are live).
        hang_first_arm: In process: fetches of slot 0's first arm hang forever.
        call_timeout_s: ``backend.call_timeout_s``.
        sig: The signal of a ``"signal"`` ending.
        faulty: Listed in the faults table.
    """

    name: str
    kind: str = "inproc"
    faults: Mapping[str, Any] = field(default_factory=dict)
    arms: Mapping[str, Any] = field(default_factory=dict)
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    settings: RunnerSettings | None = None
    raise_at: int | None = None
    hang_first_arm: bool = False
    call_timeout_s: float = 5.0
    sig: int | None = None
    faulty: bool = False
    constraints: bool = True


ONE_TRY = RunnerSettings(backend_attempts=1, initial_backoff_s=0, max_backoff_s=0)
ENDINGS = (
    Ending("normal end"),
    Ending("handoff of the recommended arm", arms={"handoff_recommended": True,
                                                   "contender_stop_share": 0.0,
                                                   "max_hours": 12},
           optimizer={"recommend_min_hours": 2}, constraints=False),
    Ending("exception in user code (progress)", raise_at=3),
    Ending("backend crash (crash_at launch 2)", faults={"crash_at": {"launch": 2}}, faulty=True),
    Ending("backend crash (crash_at fetch 5)", faults={"crash_at": {"fetch": 5}}, faulty=True),
    Ending("stop fails twice, then succeeds", faults={"fail_first": {"stop": 2}},
           settings=ONE_TRY, faulty=True),
    Ending("fetch hangs forever (one arm)", hang_first_arm=True, call_timeout_s=0.3,
           settings=RunnerSettings(fetch_failures_to_give_up=2), faulty=True),
    Ending("SIGINT", kind="signal", sig=signal.SIGINT),
    Ending("SIGTERM", kind="signal", sig=signal.SIGTERM),
    Ending("SIGKILL, then hz-ray stop", kind="kill_stop"),
    Ending("SIGKILL, then resume", kind="kill_resume"),
)


# ------------------------------------------------------------------ audits
@dataclass
class Run:
    """What one job of one ending did, as the platform and the log saw it."""

    ending: str
    driver: str
    seed: int
    launched: int = 0
    orphans_after: int = 0
    orphans_final: int | None = None
    handed_off: int = 0
    max_live: int = 0
    slot_max_live: int = 0
    completed: bool = False
    exit_codes: tuple[int, ...] = ()
    last_state_ok: bool = True
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    note: str = ""
    wall_s: float = 0.0


def journal_lines(journal: Path) -> list[dict[str, Any]]:
    if not journal.exists():
        return []
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


def slot_max_live(journal: Path) -> int:
    live: dict[int, set[str]] = defaultdict(set)
    most = 0
    for r in journal_lines(journal):
        if r["outcome"] not in ("ok", "hang") or r["call"] == "fetch":
            continue
        parsed = parse_arm_id(r["arm_id"])
        slot = parsed[1] if parsed else -1
        (live[slot].add if r["call"] == "launch" else live[slot].discard)(r["arm_id"])
        most = max(most, len(live[slot]))
    return most


def last_states(run_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not (run_dir / "log").exists():
        return out
    for e in EventLog(run_dir / "log").read().to_pylist():
        if e["kind"] == "arm_state":
            out[e["arm_id"]] = e["state"]
    return out


def fill(run: Run, journal: Path, run_dir: Path, handed: Sequence[str] = ()) -> Run:
    audit = audit_journal(journal) if journal.exists() else None
    if audit is None:
        run.note = (run.note + "; no journal").strip("; ")
        return run
    run.launched = len(audit.launched)
    run.handed_off = len(handed)
    orphans = [a for a in audit.orphans if a not in handed]
    if run.orphans_final is None:
        run.orphans_after = len(orphans)
    else:
        run.orphans_final = len(orphans)
    run.max_live = audit.max_live
    run.slot_max_live = slot_max_live(journal)
    run.counts = audit.counts
    states = last_states(run_dir)
    run.last_state_ok = bool(states) and all(
        s == ("handed_off" if a in handed else "stopped") for a, s in states.items())
    return run


# ------------------------------------------------------------------ in process
def inproc(ending: Ending, driver: str, seed: int, root: Path, job_id: str) -> Run:
    journal, run_dir = root / "calls.jsonl", root / "run"
    local = driver == "local"
    max_hours = ending.arms.get("max_hours", LOCAL_MAX_HOURS if local else RAY_MAX_HOURS)
    arms = {k: v for k, v in ending.arms.items() if k != "max_hours"}
    raw = job_mapping("rel", journal, seed=seed, max_hours=max_hours,
                      call_timeout_s=ending.call_timeout_s, constraints=ending.constraints,
                      optimizer=ending.optimizer, **arms)
    config = config_from_mapping(raw)
    faults = dict(ending.faults)
    if ending.hang_first_arm:
        faults["hang"] = {"fetch": {"seconds": FOREVER, "arm_ids": [arm_id_for(job_id, 0, 0)]}}
    factory = JournalFactory(str(journal), faults, seed)

    def progress(p: Any) -> None:
        if ending.raise_at is not None and p.hour >= ending.raise_at and p.live_arms > 0:
            raise RuntimeError(f"user code failed at hour {p.hour}")

    run = Run(ending.name, driver, seed)
    started = time.monotonic()
    handed: tuple[str, ...] = ()
    try:
        if local:
            clock = SimClock()
            result = run_local(config, factory(clock), clock=clock, hours=LOCAL_HOURS,
                               run_dir=run_dir, progress=progress, job_id=job_id,
                               runner_settings=ending.settings)
        else:
            from actors import run_on_ray

            result = run_on_ray(config, factory, hours=RAY_HOURS, run_dir=run_dir,
                                seconds_per_hour=RAY_SECONDS_PER_HOUR, progress=progress,
                                runner_settings=ending.settings, job_id=job_id)
        run.completed = True
        handed = result.handed_off
        if ending.arms.get("handoff_recommended") and not handed:
            run.note = "readout was the control: nothing to hand off"
    except Exception as exc:  # noqa: BLE001 - an ending; recorded
        run.note = f"raised {type(exc).__name__}"
    run.wall_s = time.monotonic() - started
    return fill(run, journal, run_dir, handed)


# ------------------------------------------------------------------ children
def _cli(*args: Any) -> list[str]:
    return [sys.executable, "-m", "hz_ray.cli", *map(str, args)]


def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> list[int]:
    parents, found, todo = _ppids(), [], [pid]
    while todo:
        me = todo.pop()
        kids = [c for c, p in parents.items() if p == me]
        found += kids
        todo += kids
    return found


def _reap(pids: Sequence[int]) -> None:
    """Kill what a SIGKILLed Ray driver left running (its Ray's agents), by pid."""
    for pid in pids:
        try:
            ours = b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if ours:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _clean(text: str) -> str:
    """An error line without the paths of this machine (the tables go into RESULTS.md)."""
    return re.sub(r"'/[^']*'", "'<path>'", text).replace("hz-ray: error: ", "")


def _job_hour(journal: Path) -> float:
    return max((r["job_hour"] for r in journal_lines(journal)), default=-1.0)


def _launches(journal: Path) -> int:
    return sum(1 for r in journal_lines(journal) if r["call"] == "launch" and r["outcome"] == "ok")


def child(ending: Ending, driver: str, seed: int, root: Path, job_id: str = "") -> Run:
    """A ``hz-ray run`` child: signalled, or SIGKILLed then stopped / resumed."""
    journal, run_dir, config = root / "calls.jsonl", root / "run", root / "job.yaml"
    ray = driver == "ray"
    max_hours = RAY_MAX_HOURS + 1 if ray else LOCAL_MAX_HOURS
    config.write_text(yaml.safe_dump(job_mapping("rel", journal, seed=seed,
                                                 max_hours=max_hours)))
    flags = ["--ray"] if ray else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = Run(ending.name, driver, seed)
    started = time.monotonic()
    with open(root / "out", "w") as out, open(root / "err", "w") as err:
        proc = subprocess.Popen(_cli("run", config, *flags, "--hours", CHILD_HOURS, "--seed",
                                     seed, "--run-dir", run_dir), cwd=ROOT, stdout=out,
                                stderr=err, env=env)
        # Signal once every slot launched; a kill on Ray just before the arms' max_hours
        # (a surviving worker would relaunch then); a local kill at hour 2 (arms with
        # hours left, for a resume to re-adopt).
        kill_hour = 0.0 if ending.kind == "signal" else max_hours - 0.15 if ray else 2.0
        sig = ending.sig if ending.kind == "signal" else signal.SIGKILL
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        tree: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            if _launches(journal) >= SLOTS and _job_hour(journal) >= kill_hour:
                tree = _descendants(proc.pid)
                proc.send_signal(sig)
                break
            time.sleep(0.05)
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            run.note = "child did not end in time"
    killed_at = time.time()
    run.exit_codes = (rc,)
    stderr = (root / "err").read_text()
    if ending.kind == "signal":
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        said = next((ln for ln in lines if ln.startswith("hz-ray: interrupted")), "")
        run.note = said.split(";")[0].replace("hz-ray: ", "") if said else "no interrupt line"
        if "Traceback" in stderr:
            run.note += ", Traceback on stderr"
        if not ray and len(lines) != 1:
            run.note += f", {len(lines)} stderr lines"
        run.completed = False
        fill(run, journal, run_dir)
    else:
        fill(run, journal, run_dir)
        run.orphans_final = 0
        if ending.kind == "kill_stop":
            attempts = []
            while time.monotonic() < deadline:
                stop = subprocess.run(_cli("stop", run_dir), cwd=ROOT, capture_output=True,
                                      text=True, timeout=120)
                attempts.append(stop.returncode)
                if not (stop.returncode == 2 and LOCKED in stop.stderr):
                    break
                time.sleep(0.5)
            run.exit_codes += tuple(attempts)
            if attempts and attempts[-1] != 0:
                run.note = "hz-ray stop: " + _clean(stop.stderr.strip().splitlines()[-1])[:100]
            if ray:  # whatever survived the driver had time to act
                time.sleep(15 * CLI_SECONDS_PER_HOUR)
        else:
            job_id = RunFolder.read(run_dir).job_id
            hours = next_hour_in_log(run_dir, job_id) + 3
            resumed = subprocess.run(_cli("run", config, *flags, "--resume", "--seed", seed,
                                          "--run-dir", run_dir, "--hours", hours), cwd=ROOT,
                                     capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                                     env=env)
            run.exit_codes += (resumed.returncode,)
            run.completed = resumed.returncode == 0
            if resumed.returncode != 0:
                run.note = "resume: " + _clean(resumed.stderr.strip().splitlines()[-1])[:100]
        late = [r for r in journal_lines(journal) if r["call"] == "launch"
                and r["outcome"] == "ok" and r["time_s"] > killed_at
                and r["pid"] not in (proc.pid,)]
        if ray and ending.kind == "kill_stop":
            run.note = "; ".join(filter(None, [run.note, f"{len(late)} launch(es) after the kill"
                                               if late else ""]))
        fill(run, journal, run_dir)
    _reap([p for p in tree if p != proc.pid])
    run.wall_s = time.monotonic() - started
    return run


# ------------------------------------------------------------------ readings
KINDS = ("NaN test mean", "inf control mean", "n = 0", "negative variance",
         "negative control mean", "hour in the future", "hour before launch",
         "unknown metric", "wrong arm label", "duplicate", "conflicting restatement")
MARK = 900_000  # control.n = MARK + kind index tags an injected reading in the log


def _raw(cls: type, **values: Any) -> Any:
    """An instance built without its checks (as a reading unpickled from elsewhere is)."""
    obj = object.__new__(cls)
    for key, value in values.items():
        object.__setattr__(obj, key, value)
    return obj


def _stats(g: GroupStats, **changes: Any) -> GroupStats:
    return _raw(GroupStats, **{"mean": g.mean, "var": g.var, "n": g.n, **changes})


def _reading(r: HourlyReading, **changes: Any) -> HourlyReading:
    return _raw(HourlyReading, **{"arm_id": r.arm_id, "hour": r.hour, "metric": r.metric,
                                  "test": r.test, "control": r.control, **changes})


class BadReadings:
    """The simulated world, with every kind of invalid reading injected into its fetches.

    Each kind is injected once per arm, at the first fetch that can carry it (a
    restatement needs a reading returned before; "before launch" an arm launched
    after hour 0). ``injected[kind]`` counts them; ``returned`` holds every valid
    reading of a modelled metric the world returned, by key.
    """

    def __init__(self, inner: SimulatedBackend, metrics: Sequence[str], job_hours: int) -> None:
        self.inner = inner
        self.metrics = tuple(metrics)
        self.job_hours = job_hours
        self.injected: Counter[str] = Counter()
        self.injected_keys: dict[str, list[tuple[str, str, int, Any]]] = defaultdict(list)
        self.returned: dict[tuple[str, str, int], Any] = {}
        self._done: set[tuple[str, str]] = set()
        self._launch_hour: dict[str, int] = {}

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        self.inner.launch(arm_id, params)
        self._launch_hour.setdefault(arm_id, math.ceil(self.inner.clock.now_hours() - 1e-9))

    def stop(self, arm_id: str) -> None:
        self.inner.stop(arm_id)

    def __getattr__(self, name: str) -> Any:
        if name in ("metrics", "true_deltas"):
            return getattr(self.__dict__["inner"], name)
        raise AttributeError(name)

    def _once(self, arm_id: str, kind: str) -> bool:
        if (arm_id, kind) in self._done:
            return False
        self._done.add((arm_id, kind))
        self.injected[kind] += 1
        return True

    def fetch(self, arm_id: str, since_hour: int) -> list[Any]:
        real = list(self.inner.fetch(arm_id, since_hour))
        out: list[Any] = list(real)
        before = dict(self.returned)
        for r in real:
            if r.metric in self.metrics:
                self.returned.setdefault((r.arm_id, r.metric, r.hour), reading_to_delta(r))
        if not real:
            return out
        base = real[-1]

        def mark(kind: str) -> GroupStats:
            return _stats(base.control, n=MARK + KINDS.index(kind))

        def add(kind: str, reading: Any) -> None:
            if self._once(arm_id, kind):
                out.append(reading)
                self.injected_keys[kind].append((reading.arm_id, reading.metric, reading.hour,
                                                 reading))

        add("NaN test mean", _reading(base, test=_stats(base.test, mean=math.nan),
                                      control=mark("NaN test mean")))
        add("inf control mean", _reading(base, control=_stats(mark("inf control mean"),
                                                              mean=math.inf)))
        add("n = 0", _reading(base, test=_stats(base.test, n=0), control=mark("n = 0")))
        add("negative variance", _reading(base, test=_stats(base.test, var=-1.0),
                                          control=mark("negative variance")))
        add("negative control mean", _reading(base, control=_stats(
            mark("negative control mean"), mean=-abs(base.control.mean))))
        add("hour in the future", _reading(base, hour=self.job_hours + 1000,
                                           control=mark("hour in the future")))
        first = self._launch_hour.get(arm_id, 0)
        if first >= 1:
            add("hour before launch", _reading(base, hour=first - 1,
                                               control=mark("hour before launch")))
        add("unknown metric", _reading(base, metric="clicks_unknown",
                                       control=mark("unknown metric")))
        add("wrong arm label", _reading(base, arm_id="other-job.s00-0000",
                                        control=mark("wrong arm label")))
        if self._once(arm_id, "duplicate"):
            out.append(base)
            self.injected_keys["duplicate"].append((base.arm_id, base.metric, base.hour, base))
        old = [k for k in before if k[0] == arm_id]
        if old:
            arm, metric, hour = old[0]
            restated = HourlyReading(arm, hour, metric,
                                     GroupStats(base.test.mean * 1.05, base.test.var,
                                                base.test.n),
                                     GroupStats(base.control.mean, base.control.var,
                                                MARK + KINDS.index("conflicting restatement")))
            add("conflicting restatement", restated)
        return out


def readings_table(seed: int, root: Path) -> dict[str, Any]:
    world = make_world("smooth")
    raw = world.config_mapping()
    raw.update(name="readings", extra_metrics=list(world.metrics),
               optimizer={"seed": seed, **OPTIMIZER},
               arms={"slots": SLOTS, "min_hours": 2, "max_hours": LOCAL_MAX_HOURS,
                     "guardrail_stop_probability": 0.0, "late_data_hours": 2})
    config = config_from_mapping(raw)
    clock = SimClock()
    inner = SimulatedBackend(world, clock, seed=seed, realism=RealismConfig.ideal(),
                             traffic_per_arm=INNER_KWARGS["traffic_per_arm"])
    backend = BadReadings(inner, config.metrics, READINGS_HOURS)
    result = run_local(config, backend, clock=clock, hours=READINGS_HOURS, run_dir=root / "run")
    events = EventLog(root / "run" / "log").read().to_pylist()
    rejected_by_kind: Counter[str] = Counter()
    other_rejections = 0
    for e in events:
        if e["kind"] != "delta_rejected":
            continue
        try:
            n = json.loads(e["payload_json"] or "{}").get("control", {}).get("n")
        except (ValueError, AttributeError):
            n = None
        index = n - MARK if isinstance(n, int) and MARK <= n < MARK + len(KINDS) else None
        if index is None:
            other_rejections += 1
        else:
            rejected_by_kind[KINDS[index]] += 1
    accepted: dict[tuple[str, str, int], list[tuple[float, Any, int]]] = defaultdict(list)
    for e in events:
        if e["kind"] == "delta_accepted":
            accepted[(e["arm_id"], e["metric"], e["hour"])].append((e["mean"], e["var"], e["n"]))
    rows = []
    for kind in KINDS:
        ingested = 0
        for arm, metric, hour, _reading_obj in backend.injected_keys[kind]:
            got = accepted.get((arm, metric, hour), [])
            real = backend.returned.get((arm, metric, hour))
            if kind == "duplicate":
                ingested += max(0, len(got) - 1)  # a second copy counted
            elif real is None:  # a key of its own: anything accepted there came from it
                ingested += len(got)
            else:  # the key of a valid reading: anything else accepted there came from it
                ingested += sum(1 for v in got if v != (real.mean, real.var, real.n))
        rows.append({"kind": kind, "injected": backend.injected[kind],
                     "rejected": rejected_by_kind[kind], "ingested": ingested})
    lost = [k for k, d in backend.returned.items()
            if (d.mean, d.var, d.n) not in accepted.get(k, [])]
    return {"rows": rows, "valid_returned": len(backend.returned), "lost": len(lost),
            "accepted": sum(len(v) for v in accepted.values()),
            "other_rejections": other_rejections, "arms": len(result.arms)}


# ------------------------------------------------------------------ tables
def _md(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; columns of numbers (or "n / m", "-") are right-aligned."""
    def numeric(i: int) -> bool:
        cells = [str(row[i]).split(" ")[0].replace("/", "") for row in rows]
        return all(c.replace(".", "").replace("-", "").isdigit() or c == "-" for c in cells)

    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if numeric(i) else "---" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def endings_table(runs: Sequence[Run]) -> str:
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.ending, r.driver)].append(r)
    rows = []
    for (ending, driver), rs in groups.items():
        final = [r.orphans_final for r in rs if r.orphans_final is not None]
        codes = sorted(Counter(c for r in rs for c in r.exit_codes[:1]).items())
        later = sorted(Counter(c for r in rs for c in r.exit_codes[1:]).items())
        notes = [n if len(rs) == 1 else f"{n} ({k} of {len(rs)})"
                 for n, k in sorted(Counter(r.note for r in rs if r.note).items())]
        rows.append([
            ending, driver, len(rs), sum(r.launched for r in rs),
            f"{sum(r.orphans_after for r in rs)}" + (
                f" (+{sum(r.handed_off for r in rs)} handed off)" if any(
                    r.handed_off for r in rs) else ""),
            sum(final) if final else "-",
            f"{max(r.max_live for r in rs)} / {SLOTS}",
            max(r.slot_max_live for r in rs),
            f"{sum(r.last_state_ok for r in rs)}/{len(rs)}",
            ", ".join(f"{c}x{n}" for c, n in codes) + (
                " then " + ", ".join(f"{c}x{n}" for c, n in later) if later else "")
            if codes else "-",
            "; ".join(notes) or "",
            f"{sum(r.wall_s for r in rs) / len(rs):.0f}",
        ])
    return _md(["ending", "driver", "runs", "arms launched", "orphans after the ending",
                "orphans after stop / resume", "max live / slots", "max live per slot",
                "last state stopped", "exit codes", "notes", "s per run"], rows)


def faults_table(runs: Sequence[Run], endings: Sequence[Ending]) -> str:
    faulty = {e.name for e in endings if e.faulty}
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if r.ending in faulty:
            groups[(r.ending, r.driver)].append(r)
    rows = []
    for (ending, driver), rs in groups.items():
        def total(kind: str, outcome: str, rs: list[Run] = rs) -> int:
            return sum(r.counts.get(kind, {}).get(outcome, 0) for r in rs)

        rows.append([ending, driver, len(rs), total("launch", "error"), total("fetch", "error"),
                     total("fetch", "hang"), total("stop", "error"),
                     f"{sum(r.completed for r in rs)}/{len(rs)}",
                     sum(r.orphans_after for r in rs)])
    return _md(["fault", "driver", "runs", "launch calls failed", "fetch calls failed",
                "fetch calls hung (abandoned by the job)", "stop calls failed",
                "jobs completed", "orphans"], rows)


def readings_md(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for kind in KINDS:
        mine = [row for res in results for row in res["rows"] if row["kind"] == kind]
        rows.append([kind, sum(r["injected"] for r in mine), sum(r["rejected"] for r in mine),
                     sum(r["ingested"] for r in mine)])
    table = _md(["injected reading", "injected", "rejected (delta_rejected)",
                 "ingested (delta_accepted)"], rows)
    valid = sum(r["valid_returned"] for r in results)
    lost = sum(r["lost"] for r in results)
    other = sum(r["other_rejections"] for r in results)
    return (table + f"\n\nValid readings the world published and the wrapper returned: {valid}; "
            f"accepted deltas in the logs: {sum(r['accepted'] for r in results)}; lost (returned, "
            f"valid, never accepted with its values): {lost}; other rejections (not injected): "
            f"{other}. Duplicates are not rejections: the ledger keeps one copy, so 'ingested' "
            "there counts second copies.")


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed per driver")
    parser.add_argument("--local-seeds", type=int, default=3)
    parser.add_argument("--ray-seeds", type=int, default=2)
    parser.add_argument("--drivers", default="local,ray")
    parser.add_argument("--endings", default="",
                        help="'|'-separated name prefixes, e.g. 'SIGKILL|normal' (default all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep run folders and journals here (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    drivers = [d for d in args.drivers.split(",") if d]
    seeds = {"local": 1 if args.quick else args.local_seeds,
             "ray": 1 if args.quick else args.ray_seeds}
    endings = [e for e in ENDINGS if not args.endings
               or any(e.name.startswith(p) for p in args.endings.split("|") if p)]
    started = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="hz-ray-reliability-") as tmp:
        root = Path(tmp) if args.workdir is None else args.workdir
        root.mkdir(parents=True, exist_ok=True)
        if "ray" in drivers:
            import ray

            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     log_to_driver=False)
        try:
            for driver in drivers:
                for seed in range(seeds[driver]):
                    for i, ending in enumerate(endings):
                        where = root / f"{driver}-{seed}-{i}"
                        where.mkdir()
                        fn = inproc if ending.kind == "inproc" else child
                        run = fn(ending, driver, seed, where, f"rel-{driver}-{seed}-{i}")
                        runs.append(run)
                        print(f"[{time.monotonic() - started:6.0f} s] {driver:5s} seed {seed} "
                              f"{ending.name}: launched {run.launched}, orphans "
                              f"{run.orphans_after}/{run.orphans_final}, codes "
                              f"{run.exit_codes} {run.note}", flush=True)
        finally:
            if "ray" in drivers:
                import ray

                ray.shutdown()
        readings = [readings_table(seed, root / f"readings-{seed}")
                    for seed in range(1 if args.quick else 3)]
    wall = time.monotonic() - started
    shown, skip = [], False  # the command without --out / --workdir (paths of this machine)
    for arg in argv if argv is not None else sys.argv[1:]:
        if skip or arg.split("=")[0] in ("--out", "--workdir"):
            skip = not skip and "=" not in arg
            continue
        shown.append(arg)
    command = "benchmarks/reliability.py " + " ".join(shown)
    text = "\n\n".join([
        f"Command: `.venv/bin/python {command.strip()}`; {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {wall:.0f} s in all.",
        "Endings (orphans: arms the platform still serves by the journal; a handed-off arm "
        "is counted apart; 'last state stopped': runs whose every arm's last arm_state in the "
        "log is stopped, or handed_off for the handed-off arm):",
        endings_table(runs),
        "Platform faults injected and survived (journal counts over all runs):",
        faults_table(runs, endings),
        f"Invalid readings ({len(readings)} local job(s) of {READINGS_HOURS} h, {SLOTS} slots, "
        "each kind injected once per arm):",
        readings_md(readings),
    ])
    print()
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
