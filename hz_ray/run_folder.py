"""A tuning job's identity and its run folder, the same for every driver.

A job has an id: its ``name`` (made safe for ids and namespaces) plus a short
random suffix made when the job is created, e.g. ``feed-vm-7f3a``. Arm ids
carry it (:func:`hz_ray.records.arm_id_for`), so a new job on the same
platform never ingests an earlier job's arms.

A run folder holds::

    job.json         the job's id, name, config fingerprint and creation time
    config.json      the config as loaded (``TuningConfig.to_mapping()``)
    clock.json       the job clock: simulated, or its epoch and seconds per job hour
    log/             the Parquet event log, the source of truth
    checkpoint.json  GP hyperparameters; only shortens a restart
    job.lock         held (``filelock``) by the driver for the job's life
    driver.json      who holds the lock: the holder's pid, host name and start time
                     (the driver, or the final stops of ``hz-ray stop`` or the supervisor)
    status.json      the job as of its newest hour (:mod:`hz_ray.service.status_file`)
    telemetry.json   where it serves Prometheus metrics

:meth:`RunFolder.open` refuses a folder that already holds a job unless the
job is resumed, and refuses a resume whose config differs, naming the fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from hz_ray.clock import AcceleratedClock, Clock, SimClock
from hz_ray.config import TuningConfig
from hz_ray.config_runtime import RUNTIME_SECTIONS
from hz_ray.errors import ConfigError, StateError, field_error
from hz_ray.storage import load_checkpoint, save_checkpoint

LOG_DIR_NAME = "log"
CHECKPOINT_NAME = "checkpoint.json"
JOB_FILE = "job.json"
CONFIG_FILE = "config.json"
LOCK_FILE = "job.lock"
DRIVER_FILE = "driver.json"
CLOCK_FILE = "clock.json"
FOLDER_FORMAT = "hz-ray.run/1"
_SUFFIX_BYTES = 2
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


def job_mapping(config: TuningConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as a mapping without the sections that do not change the job.

    ``clock`` and ``telemetry`` (:data:`~hz_ray.config_runtime.RUNTIME_SECTIONS`)
    say how a job runs, not what it tunes: a job resumes with another metrics
    port, and keeps its recorded clock.
    """
    raw = config.to_mapping() if isinstance(config, TuningConfig) else dict(config)
    return {k: v for k, v in raw.items() if k not in RUNTIME_SECTIONS}


def config_fingerprint(config: TuningConfig) -> str:
    """A short, stable hash of what the job tunes (16 hex digits; see :func:`job_mapping`)."""
    text = json.dumps(job_mapping(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def new_job_id(name: str) -> str:
    """``name`` with unsafe characters replaced by ``-``, plus a random suffix.

    Args:
        name: The config's job name.

    Returns:
        E.g. ``"feed-vm-7f3a"``: letters, digits, ``_`` and ``-`` only.
    """
    slug = _UNSAFE.sub("-", name).strip("-") or "job"
    return f"{slug}-{secrets.token_hex(_SUFFIX_BYTES)}"


def check_hours(hours: object) -> int:
    """Validate a job length in job hours (every driver's ``hours`` argument).

    Raises:
        ConfigError: Not an integer >= 1.
    """
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
        raise field_error(ConfigError, "hours", hours, "an integer >= 1",
                          "Give the job's length in job hours, e.g. 72.")
    return hours


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
    """Dotted paths of the fields where two config mappings differ, sorted."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{path}.")
        elif a != b:
            out.append(path)
    return out


@dataclass(frozen=True)
class JobIdentity:
    """Who a run folder belongs to.

    Attributes:
        job_id: The job's id (name plus suffix).
        name: The config's job name.
        fingerprint: :func:`config_fingerprint` of the config it was created with.
        created_s: Unix time of creation.
    """

    job_id: str
    name: str
    fingerprint: str
    created_s: float


class RunFolder:
    """One job's folder: identity, config, log, checkpoint and lock.

    Use :meth:`open`; the lock is held until :meth:`close` (or the ``with``
    block ends), and is released by the OS if the process dies.

    Args:
        path: The folder.
        identity: The job it holds.
        lock: The held lock, or ``None`` when opened read-only.
    """

    def __init__(self, path: Path, identity: JobIdentity, lock: FileLock | None,
                 holder: dict[str, Any] | None = None) -> None:
        self.path = path
        self.identity = identity
        self._lock = lock
        self.holder = holder

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.identity.job_id

    @property
    def log_dir(self) -> Path:
        """The Parquet event log's folder."""
        return self.path / LOG_DIR_NAME

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file."""
        return self.path / CHECKPOINT_NAME

    @staticmethod
    def holds_job(path: str | Path) -> bool:
        """True when ``path`` holds a job (its identity or a non-empty log)."""
        folder = Path(path)
        log = folder / LOG_DIR_NAME
        return (folder / JOB_FILE).exists() or (log.is_dir() and any(log.glob("part-*.parquet")))

    @classmethod
    def open(cls, path: str | Path, config: TuningConfig, *, resume: bool = False,
             job_id: str | None = None, lock_timeout_s: float = 0.0) -> RunFolder:
        """Create a job's folder, or reopen it to resume the job; takes the lock.

        Args:
            path: The folder (created if missing).
            config: The job's config; on resume it must match the folder's.
            resume: Continue the job the folder holds.
            job_id: The id of a new job (default :func:`new_job_id`), e.g. to
                replay a recording keyed by arm ids; on resume, the folder's
                job must have it.
            lock_timeout_s: Wait this long for another process's lock.

        Returns:
            The open folder (holding the lock).

        Raises:
            StateError: The folder holds a job and ``resume`` is false; it holds
                none (or one written without ``job.json``) and ``resume`` is
                true; the config differs from the folder's; another process
                holds the lock.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / LOCK_FILE))
        try:
            lock.acquire(timeout=lock_timeout_s)
        except Timeout as exc:
            raise field_error(StateError, "run_dir", str(folder), "a folder no other process "
                              "is running a job in", "Wait for that job to end, or stop it; "
                              "use another run_dir for a new job.") from exc
        try:
            identity = cls._identity(folder, config, resume, job_id)
            holder = record_holder(folder, identity.job_id)
        except BaseException:
            lock.release()
            raise
        return cls(folder, identity, lock, holder)

    @classmethod
    def read(cls, path: str | Path) -> RunFolder:
        """Open a folder read-only (no lock), e.g. to report on it.

        Raises:
            StateError: The folder holds no job.
        """
        folder = Path(path)
        state = load_checkpoint(folder / JOB_FILE)
        if state is None:
            raise field_error(StateError, "run_dir", str(folder), "a folder holding a job "
                              f"({JOB_FILE})", "Point at a run folder made by hz-ray.")
        return cls(folder, _identity_from(state, folder), None)

    @classmethod
    def _identity(cls, folder: Path, config: TuningConfig, resume: bool,
                  job_id: str | None) -> JobIdentity:
        state = load_checkpoint(folder / JOB_FILE)
        fingerprint = config_fingerprint(config)
        if not resume:
            if cls.holds_job(folder):
                raise field_error(StateError, "run_dir", str(folder), "a folder without a job",
                                  "Pass resume=True (--resume) to continue that job, or use a "
                                  "new run_dir.")
            if job_id is not None and not _SAFE_ID.fullmatch(str(job_id)):
                raise field_error(StateError, "job_id", job_id, "letters, digits, '_' and '-'")
            identity = JobIdentity(job_id or new_job_id(config.name), config.name, fingerprint,
                                   time.time())
            save_checkpoint(folder / CONFIG_FILE, config.to_mapping())
            save_checkpoint(folder / JOB_FILE, {
                "format": FOLDER_FORMAT, "job_id": identity.job_id, "name": identity.name,
                "fingerprint": fingerprint, "created_s": identity.created_s})
            return identity
        if state is None:
            raise field_error(StateError, "run_dir", str(folder), f"a job's folder ({JOB_FILE})",
                              "Nothing to resume here: start a new job without resume.")
        identity = _identity_from(state, folder)
        if job_id is not None and job_id != identity.job_id:
            raise field_error(StateError, "job_id", job_id, f"this folder's job "
                              f"{identity.job_id!r}", "Leave job_id unset to resume.")
        if identity.fingerprint != fingerprint:
            saved = load_checkpoint(folder / CONFIG_FILE) or {}
            fields = config_differences(job_mapping(saved), job_mapping(config))
            raise field_error(StateError, "config", ", ".join(fields) or "(fingerprint)",
                              f"the config job {identity.job_id!r} was started with",
                              f"Resume with {folder / CONFIG_FILE}, or start a new job in "
                              "another run_dir.")
        return identity

    def save_clock(self, clock: Clock) -> None:
        """Record the job clock once (a resumed job, on any driver, keeps its hours)."""
        if (self.path / CLOCK_FILE).exists():
            return
        if isinstance(clock, AcceleratedClock):
            state = {"kind": "accelerated", "epoch_s": clock.epoch_s,
                     "seconds_per_hour": clock.seconds_per_hour}
        else:
            state = {"kind": "simulated"}
        save_checkpoint(self.path / CLOCK_FILE, state)

    def saved_clock(self, next_hour: int, seconds_per_hour: float | None = None) -> Clock | None:
        """The job clock as recorded, standing at ``next_hour`` if it is simulated.

        See :func:`read_saved_clock` (this folder's).
        """
        return read_saved_clock(self.path, next_hour, seconds_per_hour)

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_saved_clock(path: str | Path, next_hour: int,
                     seconds_per_hour: float | None = None) -> Clock | None:
    """The job clock recorded in a run folder (read without its lock).

    Args:
        path: The run folder.
        next_hour: The first job hour still to run (simulated clocks stand there).
        seconds_per_hour: Give a simulated job this pace instead (an
            :class:`~hz_ray.clock.AcceleratedClock` at ``next_hour`` now),
            for drivers that run on wall time.

    Returns:
        The clock, or ``None`` when none was recorded.
    """
    state = load_checkpoint(Path(path) / CLOCK_FILE)
    if state is None:
        return None
    if state.get("kind") == "accelerated":
        return AcceleratedClock(float(state["seconds_per_hour"]), float(state["epoch_s"]))
    if seconds_per_hour is not None:
        return AcceleratedClock(seconds_per_hour,
                                time.time() - next_hour * float(seconds_per_hour))
    return SimClock(float(next_hour))


def job_is_running(path: str | Path) -> bool:
    """Whether a driver holds the folder's lock now (a job runs in it).

    Probes the lock without waiting; a driver that starts in the same instant
    may find it taken for that instant (its open then fails and says so).
    """
    lock_path = Path(path) / LOCK_FILE
    if not lock_path.exists():
        return False
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


HOLDER_KEYS = ("pid", "host", "started_s")


def record_holder(path: str | Path, job_id: str) -> dict[str, Any]:
    """Write ``driver.json``: this process holds the folder's lock now (call it holding it).

    Whoever takes the lock records itself, so the job's central actor can tell
    its own driver from the final stops of ``hz-ray stop`` or the supervisor,
    which hold the same lock after the driver died (:func:`is_held_by`).

    Returns:
        The record (``pid``, ``host``, ``job_id``, ``started_s``).
    """
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "job_id": job_id,
              "started_s": time.time()}
    save_checkpoint(Path(path) / DRIVER_FILE, holder)
    return holder


def is_held_by(path: str | Path, holder: Mapping[str, Any]) -> bool:
    """Whether the folder's lock is held now and ``driver.json`` names ``holder``.

    False once the holder's process let go of the lock (it died) and once
    another process took the lock and recorded itself (:func:`record_holder`).
    A ``driver.json`` that cannot be read counts as another holder.
    """
    if not job_is_running(path):
        return False
    try:
        current = driver_of(path)
    except StateError:
        return False
    return current is not None and all(current.get(k) == holder.get(k) for k in HOLDER_KEYS)


def driver_of(path: str | Path) -> dict[str, Any] | None:
    """The folder's newest ``driver.json`` (``pid``, ``host``, ``job_id``, ``started_s``)."""
    return load_checkpoint(Path(path) / DRIVER_FILE)


def _identity_from(state: Mapping[str, Any], folder: Path) -> JobIdentity:
    if state.get("format") != FOLDER_FORMAT:
        raise field_error(StateError, f"{folder / JOB_FILE} format", state.get("format"),
                          repr(FOLDER_FORMAT), "This folder was written by another hz-ray "
                          "version.")
    return JobIdentity(str(state["job_id"]), str(state["name"]), str(state["fingerprint"]),
                       float(state["created_s"]))
