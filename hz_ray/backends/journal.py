"""JournalBackend: a backend wrapper that journals every call, with optional faults.

For audits ("which arms did this job launch, and did it stop every one?") and
for tests of orphaned arms across processes and kills. It wraps any backend a
config can name and appends JSON lines to one journal file, which many
processes (the Ray arm workers of one job) may share::

    backend:
      target: "hz_ray.backends.journal:JournalBackend"
      kwargs:
        journal: runs/feed-vm/calls.jsonl
        inner_target: "simulated:value_model"
        inner_kwargs: {realism: ideal}
        faults: {fail_first: {stop: 2}}

The journal
-----------
Every ``launch``, ``fetch`` and ``stop`` writes two lines: a ``"started"`` line
before the inner call (so a process killed mid-call leaves evidence) and, when
the call ends, one outcome line, written before the call returns or raises.
Both lines of a call share ``pid`` and ``seq``. Fields:

- ``call``: ``"launch"``, ``"fetch"`` or ``"stop"``; ``arm_id``: the arm.
- ``outcome``: ``"started"``; ``"ok"`` (the inner call returned); ``"error"``
  (it raised, or a fault was injected); ``"hang"`` (the inner call returned,
  but the answer is held back by a ``hang`` fault: the line is written before
  the wait, so an answer that never comes still shows what the platform did).
- ``error``: ``"<ExceptionType>: <message>"`` or null.
- ``fault``: the injected fault's name (``"fail_first"``, ...) or null;
  ``hang_s``: seconds of a hang (null when forever or no hang).
- ``pid``: the writing process; ``seq``: the call's number in that process
  (1, 2, ... over every JournalBackend of the process).
- ``wall_s``: wall seconds since the call started (0 on ``"started"``);
  ``time_s``: Unix time of the line; ``job_hour``: ``clock.now_hours()``, or
  null without a clock.

Appends are safe from many processes and threads at once: each line is one
``os.write`` to a descriptor opened with ``O_APPEND``, made while holding a
``filelock.FileLock`` on ``<journal>.lock`` (and a thread lock; a waiting
process retries every millisecond), then fsynced before the lock is released.
Lines are therefore whole, never interleaved, on disk before the call goes on,
and ordered by the lock; a process killed while holding the lock releases it
with its death.

Faults
------
``faults`` (all optional) injects failures, deterministically. Counters belong
to the JournalBackend instance, i.e. to the process (each worker builds its
own), and count every call of a kind, failed ones included; ``k`` is 1-based.
Each fault maps a call kind (``"launch"``, ``"fetch"``, ``"stop"``) to its
setting:

- ``fail_first: {kind: n}``: the first ``n`` calls of that kind *per arm*
  raise ``ConnectionError`` (transient) without reaching the inner backend.
- ``fail_every: {kind: m}``: every ``m``-th call of that kind (``m``, ``2m``,
  ...) raises ``ConnectionError`` without reaching the inner backend.
- ``crash_at: {kind: k}``: the ``k``-th call of that kind raises
  ``RuntimeError("injected crash")`` (a permanent bug), without reaching it.
- ``kill_at: {kind: k}``: the ``k``-th call of that kind kills its own process
  with ``SIGKILL`` right after writing its ``"started"`` line.
- ``hang: {kind: {"seconds": s, "arm_ids": [...], "calls": [k, ...]}}``: a call
  of that kind on one of ``arm_ids``, or whose number is in ``calls`` (give one
  or both), runs the inner call, writes its outcome, then waits ``s`` seconds
  before answering; ``s`` may be ``"forever"`` (or ``.inf`` when built in code:
  a config's values must be finite, since the run folder records them as JSON).

When several apply to one call: ``kill_at``, then ``crash_at``, ``fail_first``,
``fail_every``; ``hang`` applies only to calls that reach the inner backend.

:func:`audit_journal` reads a journal back into a :class:`JournalAudit`.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from hz_ray.backends.base import ArmBackend
from hz_ray.backends.factory import build_backend
from hz_ray.clock import Clock, WallClock
from hz_ray.config import BackendSpec
from hz_ray.errors import ConfigError, InputDataError, field_error
from hz_ray.records import HourlyReading

CALLS = ("launch", "fetch", "stop")
OUTCOMES = ("started", "ok", "error", "hang")
FAULTS = ("fail_first", "fail_every", "hang", "crash_at", "kill_at")
HANG_KEYS = ("seconds", "arm_ids", "calls")
_WHERE = "backend.kwargs"
_SEQ = itertools.count(1)  # per process: every JournalBackend of the process shares it
_SEQ_LOCK = threading.Lock()
_T = TypeVar("_T")
_LOCK_POLL_S = 0.001  # retry a held lock this often (filelock's 50 ms default starves waiters)


def _next_seq() -> int:
    with _SEQ_LOCK:
        return next(_SEQ)


class JournalBackend:
    """Wraps a backend, journals every call to a shared file and injects faults.

    See the module docstring for the journal's fields and the fault spec.

    Args:
        inner_target: The wrapped backend's target, as in a config's
            ``backend.target`` (``"simulated:value_model"`` or
            ``"package.module:ClassName"``).
        inner_kwargs: Its keyword arguments (``backend.kwargs``).
        journal: Path of the journal file (JSON lines); created with its parent
            folders when missing, appended to otherwise.
        faults: Faults to inject, or ``None`` for none.
        clock: The job clock; passed to the inner backend and stamped on each
            line as ``job_hour``. ``None``: the inner backend gets a
            :class:`~hz_ray.clock.WallClock` and ``job_hour`` is null.
        seed: Seed of a simulated inner world's noise, >= 0.

    Raises:
        ConfigError: On a bad argument or fault, naming the field
            (``backend.kwargs.faults.hang.fetch.seconds``, ...).
    """

    def __init__(self, inner_target: str, inner_kwargs: Mapping[str, Any] | None = None, *,
                 journal: str | os.PathLike[str], faults: Mapping[str, Any] | None = None,
                 clock: Clock | None = None, seed: int = 0) -> None:
        if not isinstance(inner_target, str) or ":" not in inner_target:
            raise field_error(ConfigError, f"{_WHERE}.inner_target", inner_target,
                              "'simulated:<world>' or 'package.module:ClassName'")
        if inner_kwargs is not None and not isinstance(inner_kwargs, Mapping):
            raise field_error(ConfigError, f"{_WHERE}.inner_kwargs", inner_kwargs,
                              "a mapping of keyword arguments or null")
        if not isinstance(journal, (str, os.PathLike)) or not os.fspath(journal):
            raise field_error(ConfigError, f"{_WHERE}.journal", journal,
                              "a file path", "e.g. runs/<job>/calls.jsonl")
        if clock is not None and not isinstance(clock, Clock):
            raise field_error(ConfigError, "clock", type(clock).__name__,
                              "a Clock (with now_hours()) or None")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise field_error(ConfigError, f"{_WHERE}.seed", seed, "an integer >= 0")
        self.faults = check_faults(faults)
        self.journal = Path(journal)
        if self.journal.is_dir():
            raise field_error(ConfigError, f"{_WHERE}.journal", str(journal),
                              "a file path, not a folder")
        try:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise field_error(ConfigError, f"{_WHERE}.journal", str(journal),
                              "a path in a writable folder", str(exc)) from exc
        self.clock = clock
        try:
            self.inner: ArmBackend = build_backend(
                BackendSpec(inner_target, dict(inner_kwargs or {})),
                WallClock() if clock is None else clock, seed=int(seed))
        except ConfigError as exc:
            raise field_error(ConfigError, f"{_WHERE}.inner_target", inner_target,
                              "a backend that builds from inner_kwargs", str(exc)) from exc
        self._file_lock = FileLock(f"{self.journal}.lock")
        self._write_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._calls = dict.fromkeys(CALLS, 0)
        self._per_arm: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------ ArmBackend
    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Launch on the inner backend, journaled (see the module docstring)."""
        self._call("launch", arm_id, lambda: self.inner.launch(arm_id, params))

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Fetch from the inner backend, journaled."""
        return self._call("fetch", arm_id, lambda: self.inner.fetch(arm_id, since_hour))

    def stop(self, arm_id: str) -> None:
        """Stop on the inner backend, journaled."""
        self._call("stop", arm_id, lambda: self.inner.stop(arm_id))

    def __getattr__(self, name: str) -> Any:
        # Only the GroundTruth extra passes through, and only if the inner backend has it.
        if name == "true_deltas" and "inner" in self.__dict__:
            return getattr(self.__dict__["inner"], name)
        raise AttributeError(name)

    # --------------------------------------------------------------- calls
    def _call(self, kind: str, arm_id: object, inner: Callable[[], _T]) -> _T:
        name = arm_id if isinstance(arm_id, str) else repr(arm_id)
        with self._count_lock:
            self._calls[kind] += 1
            k = self._calls[kind]
            n = self._per_arm[(kind, name)] = self._per_arm.get((kind, name), 0) + 1
        seq = _next_seq()
        start = time.monotonic()
        self._append(kind, name, "started", seq, start)
        if self.faults["kill_at"].get(kind) == k:
            os.kill(os.getpid(), signal.SIGKILL)
            _sleep(math.inf)  # the signal is on its way; never run the call
        injected = self._injected(kind, name, k, n)
        if injected is not None:
            fault, exc = injected
            self._append(kind, name, "error", seq, start, error=exc, fault=fault)
            raise exc
        hang_s = self._hang_seconds(kind, name, k)
        try:
            result = inner()
        except BaseException as exc:
            self._append(kind, name, "error", seq, start, error=exc,
                         fault=None if hang_s is None else "hang", hang_s=hang_s)
            _sleep(hang_s)
            raise
        if hang_s is None:
            self._append(kind, name, "ok", seq, start)
            return result
        self._append(kind, name, "hang", seq, start, fault="hang", hang_s=hang_s)
        _sleep(hang_s)
        return result

    def _injected(self, kind: str, arm_id: str, k: int, n: int
                  ) -> tuple[str, BaseException] | None:
        if self.faults["crash_at"].get(kind) == k:
            return "crash_at", RuntimeError("injected crash")
        where = f"{kind} call {k} of process {os.getpid()} (arm {arm_id!r})"
        if n <= self.faults["fail_first"].get(kind, 0):
            return "fail_first", ConnectionError(f"injected fail_first: {where}")
        every = self.faults["fail_every"].get(kind)
        if every is not None and k % every == 0:
            return "fail_every", ConnectionError(f"injected fail_every: {where}")
        return None

    def _hang_seconds(self, kind: str, arm_id: str, k: int) -> float | None:
        spec = self.faults["hang"].get(kind)
        if spec is None or (arm_id not in spec["arm_ids"] and k not in spec["calls"]):
            return None
        return spec["seconds"]

    def _append(self, kind: str, arm_id: str, outcome: str, seq: int, start: float, *,
                error: BaseException | None = None, fault: str | None = None,
                hang_s: float | None = None) -> None:
        record = {
            "call": kind, "arm_id": arm_id, "outcome": outcome,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "fault": fault,
            "hang_s": hang_s if hang_s is not None and math.isfinite(hang_s) else None,
            "pid": os.getpid(), "seq": seq,
            "wall_s": 0.0 if outcome == "started" else time.monotonic() - start,
            "time_s": time.time(),
            "job_hour": None if self.clock is None else float(self.clock.now_hours()),
        }
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._write_lock, self._file_lock.acquire(poll_interval=_LOCK_POLL_S):
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)


def _sleep(seconds: float | None) -> None:
    """Sleep ``seconds`` (``inf``: forever) in chunks that ``time.sleep`` accepts."""
    if seconds is None:
        return
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 3600.0))


# ------------------------------------------------------------------ faults
def check_faults(faults: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Validate a fault spec (see the module docstring) and return it normalised.

    Args:
        faults: The ``faults`` keyword argument, or ``None``.

    Returns:
        ``{fault: {kind: setting}}`` with every fault key present; a ``hang``
        setting becomes ``{"seconds": float, "arm_ids": frozenset, "calls":
        frozenset}``.

    Raises:
        ConfigError: Naming the offending field, e.g.
            ``backend.kwargs.faults.fail_first.stop``.
    """
    where = f"{_WHERE}.faults"
    out: dict[str, dict[str, Any]] = {name: {} for name in FAULTS}
    if faults is None:
        return out
    if not isinstance(faults, Mapping):
        raise field_error(ConfigError, where, faults, f"a mapping with keys among {FAULTS}")
    unknown = sorted(str(k) for k in faults if k not in FAULTS)
    if unknown:
        raise field_error(ConfigError, where, unknown, f"made of keys among {list(FAULTS)}")
    for name, per_kind in faults.items():
        if not isinstance(per_kind, Mapping) or not set(per_kind) <= set(CALLS):
            raise field_error(ConfigError, f"{where}.{name}", per_kind,
                              f"a mapping from call kinds among {list(CALLS)}",
                              f"e.g. {{stop: 2}} for {name}.")
        for kind, value in per_kind.items():
            field = f"{where}.{name}.{kind}"
            if name == "hang":
                out[name][kind] = _check_hang(field, value)
                continue
            low = 0 if name == "fail_first" else 1
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                    or value < low:
                raise field_error(ConfigError, field, value, f"an integer >= {low}",
                                  "Counts are per process and 1-based.")
            out[name][kind] = int(value)
    return out


def _check_hang(field: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not set(value) <= set(HANG_KEYS) \
            or "seconds" not in value or not ({"arm_ids", "calls"} & set(value)):
        raise field_error(ConfigError, field, value,
                          "a mapping with 'seconds' and 'arm_ids' and/or 'calls'",
                          "e.g. {seconds: 5, calls: [2]} or {seconds: forever, arm_ids: [a]}.")
    seconds = value["seconds"]
    if seconds == "forever":
        seconds = math.inf
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) \
            or math.isnan(seconds) or seconds < 0:
        raise field_error(ConfigError, f"{field}.seconds", seconds,
                          "a number of seconds >= 0, or 'forever'")
    arm_ids = value.get("arm_ids", [])
    if isinstance(arm_ids, str) or not isinstance(arm_ids, Sequence) \
            or not all(isinstance(a, str) for a in arm_ids):
        raise field_error(ConfigError, f"{field}.arm_ids", arm_ids, "a list of arm ids")
    calls = value.get("calls", [])
    if isinstance(calls, str) or not isinstance(calls, Sequence) or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1
            for c in calls):
        raise field_error(ConfigError, f"{field}.calls", calls,
                          "a list of 1-based call numbers")
    return {"seconds": float(seconds), "arm_ids": frozenset(arm_ids),
            "calls": frozenset(int(c) for c in calls)}


# ------------------------------------------------------------------- audit
@dataclass(frozen=True)
class JournalEntry:
    """One line of a journal.

    Attributes:
        line: 1-based line number in the file.
        call: ``"launch"``, ``"fetch"`` or ``"stop"``.
        arm_id: The arm.
        outcome: ``"started"``, ``"ok"``, ``"error"`` or ``"hang"``.
        error: The error's text, or ``None``.
        pid: The writing process, or ``None`` when the line lacks it.
        seq: The call's number in that process, or ``None``.
    """

    line: int
    call: str
    arm_id: str
    outcome: str
    error: str | None
    pid: int | None
    seq: int | None


@dataclass(frozen=True)
class JournalAudit:
    """What a journal says happened, in the journal's (lock) order.

    A launch or stop *took effect* when its outcome is ``"ok"`` or ``"hang"``
    (the inner call returned; a hang only delayed the answer).

    Attributes:
        launched: Arms with a launch that took effect, sorted.
        stopped: Arms with a stop that took effect, sorted.
        orphans: Arms launched and not stopped after their last launch, sorted:
            still live on the platform when the journal ends.
        max_live: The most arms live at once.
        counts: ``counts[call][outcome]``: lines per call kind and outcome,
            every kind and outcome present.
        calls_after_stop: Launch calls of an arm after a stop of it took effect
            (one entry per call; a bug worth reporting). Fetches after a stop
            are fine and not listed.
        unfinished: ``"started"`` lines whose call wrote no outcome (the
            process was killed, or is hung or still in the call), in order.
        bad_lines: Line numbers that are not journal lines (e.g. cut by a crash).
        lines: Number of non-empty lines read.
    """

    launched: tuple[str, ...]
    stopped: tuple[str, ...]
    orphans: tuple[str, ...]
    max_live: int
    counts: Mapping[str, Mapping[str, int]]
    calls_after_stop: tuple[JournalEntry, ...]
    unfinished: tuple[JournalEntry, ...]
    bad_lines: tuple[int, ...]
    lines: int


def audit_journal(path: str | os.PathLike[str]) -> JournalAudit:
    """Read a journal written by :class:`JournalBackend` (or by hand) and audit it.

    A line needs ``call``, ``arm_id`` and ``outcome``; ``pid`` and ``seq`` pair
    a ``"started"`` line with its outcome (lines without them are never
    counted as unfinished).

    Args:
        path: The journal file.

    Returns:
        The audit.

    Raises:
        InputDataError: When ``path`` cannot be read.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise field_error(InputDataError, "journal", os.fspath(path),
                          "a readable journal file", str(exc)) from exc
    counts = {call: dict.fromkeys(OUTCOMES, 0) for call in CALLS}
    live: set[str] = set()
    launched: set[str] = set()
    stopped: set[str] = set()
    open_calls: dict[tuple[int, int], JournalEntry] = {}
    after_stop: list[JournalEntry] = []
    reported: set[tuple[int, int]] = set()
    bad: list[int] = []
    max_live = lines = 0
    for number, text in enumerate(raw.split(b"\n"), start=1):
        if not text.strip():
            continue
        lines += 1
        entry = _entry(number, text)
        if entry is None:
            bad.append(number)
            continue
        counts[entry.call][entry.outcome] += 1
        key = None if entry.pid is None or entry.seq is None else (entry.pid, entry.seq)
        if entry.outcome == "started":
            if key is not None:
                open_calls[key] = entry
        elif key is not None:
            open_calls.pop(key, None)
        if entry.call == "launch" and entry.arm_id in stopped and (
                key is None or key not in reported):
            after_stop.append(entry)
            if key is not None:
                reported.add(key)
        if entry.outcome in ("ok", "hang"):
            if entry.call == "launch":
                launched.add(entry.arm_id)
                live.add(entry.arm_id)
                max_live = max(max_live, len(live))
            elif entry.call == "stop":
                stopped.add(entry.arm_id)
                live.discard(entry.arm_id)
    return JournalAudit(
        launched=tuple(sorted(launched)), stopped=tuple(sorted(stopped)),
        orphans=tuple(sorted(live)), max_live=max_live, counts=counts,
        calls_after_stop=tuple(after_stop),
        unfinished=tuple(sorted(open_calls.values(), key=lambda e: e.line)),
        bad_lines=tuple(bad), lines=lines)


def _entry(number: int, text: bytes) -> JournalEntry | None:
    try:
        item = json.loads(text)
    except ValueError:
        return None
    if not isinstance(item, dict) or item.get("call") not in CALLS \
            or item.get("outcome") not in OUTCOMES or not isinstance(item.get("arm_id"), str):
        return None
    pid, seq = item.get("pid"), item.get("seq")
    error = item.get("error")
    return JournalEntry(
        line=number, call=item["call"], arm_id=item["arm_id"], outcome=item["outcome"],
        error=error if isinstance(error, str) else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None)
