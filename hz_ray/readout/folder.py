"""A run folder read back for a launch review, from the folder alone.

:func:`load_run` reads ``job.json``, ``config.json``, ``clock.json`` and the
Parquet event log (one snapshot of it) and returns a :class:`RunRecord`: the
readout logged after every job hour, every arm with its lifecycle and its own
data, and the job's totals. It only reads: it never takes ``job.lock`` and
never writes into the folder, so it works on a job that is still running (log
parts are written atomically, so a part being written is never seen half-done).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hz_ray.config import TuningConfig
from hz_ray.config_loading import config_from_mapping
from hz_ray.errors import ConfigError, StateError, field_error
from hz_ray.ledger import Ledger
from hz_ray.records import ArmEstimate, Recommendation
from hz_ray.run_folder import (
    CLOCK_FILE,
    CONFIG_FILE,
    JOB_FILE,
    LOG_DIR_NAME,
    JobIdentity,
    RunFolder,
)
from hz_ray.service.job_state import JobState
from hz_ray.storage import EVENT_SCHEMA, EventLog, load_checkpoint, replay_into

__all__ = ["ArmRow", "FolderSnapshot", "RunRecord", "RunTotals", "load_run", "read_folder",
           "record_of"]


@dataclass(frozen=True)
class ArmRow:
    """One arm of the job, as the event log tells it.

    Attributes:
        arm_id: Its id.
        slot: The arm slot it ran in, or ``None`` for an id of another scheme.
        params: Its weights by name.
        launched_hour: Job hour it was registered (launched) at.
        state: Its last logged lifecycle state (``live``, ``stopped``, ...;
            :mod:`hz_ray.service.arm_states`).
        stopped_hour: Job hour its stop was decided, or ``None`` while live.
        stop_reason: Why it stopped (``max_hours``, ``guardrail``,
            ``not_contender``, ``job_end``, ...), or ``None`` while live.
        hours_observed: Distinct job hours with accepted data.
        units: Test units (traffic) it was served to, summed over its hours:
            per hour the largest unit count of its metrics' deltas.
        estimates: Per metric, its own N-weighted aggregate delta (relative;
            0.01 = +1%), as the ledger computes it.
        last_error: The newest failed launch or stop attempt's error, or ``None``.
    """

    arm_id: str
    slot: int | None
    params: Mapping[str, float]
    launched_hour: int
    state: str
    stopped_hour: int | None
    stop_reason: str | None
    hours_observed: int
    units: int
    estimates: Mapping[str, ArmEstimate] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def live(self) -> bool:
        """True while the arm's stop has not been decided."""
        return self.stop_reason is None


@dataclass(frozen=True)
class RunTotals:
    """What the job used, over all its lives.

    Attributes:
        first_hour: First job hour with a logged readout (``None``: none yet).
        last_hour: Newest job hour with a logged readout (``None``: none yet).
        hours_run: Job hours with a logged readout.
        arms_launched: Arms registered.
        arms_live: Arms whose stop was not decided yet.
        units: Test units served over all arms (sum of :attr:`ArmRow.units`).
        deltas_accepted: Accepted hourly deltas (one per arm, metric and hour).
        deltas_rejected: Records quarantined, each counted once.
    """

    first_hour: int | None
    last_hour: int | None
    hours_run: int
    arms_launched: int
    arms_live: int
    units: int
    deltas_accepted: int
    deltas_rejected: int


@dataclass(frozen=True)
class RunRecord:
    """A job's run folder, read for a launch review.

    Attributes:
        run_dir: The folder.
        job_id: The job's id.
        name: The config's job name.
        created_s: Unix time the job was created.
        config: The job's config as loaded.
        clock: ``clock.json``: ``{"kind": "simulated"}`` or ``{"kind":
            "accelerated", "epoch_s", "seconds_per_hour"}``; empty if none.
        recommendations: ``(hour, readout)`` logged after every job hour, by hour.
        arms: Every arm in launch order.
        totals: Hours, arms, traffic and records of the job.
        alarm: Why the job stopped launching arms (``job_alarm``), or ``None``.
        log_seq: The last event ``seq`` read (-1: empty log).
    """

    run_dir: Path
    job_id: str
    name: str
    created_s: float
    config: TuningConfig
    clock: Mapping[str, Any]
    recommendations: tuple[tuple[int, Recommendation], ...]
    arms: tuple[ArmRow, ...]
    totals: RunTotals
    alarm: str | None = None
    log_seq: int = -1

    @property
    def recommendation(self) -> Recommendation | None:
        """The newest logged readout (the final one of an ended job), or ``None``."""
        return self.recommendations[-1][1] if self.recommendations else None

    @property
    def control_params(self) -> dict[str, float]:
        """The control (production) weights by name."""
        return self.config.base_params

    def arm(self, arm_id: str) -> ArmRow | None:
        """The arm with this id, or ``None``."""
        return next((a for a in self.arms if a.arm_id == arm_id), None)


class _TableLog:
    """A read snapshot of an event log with the one method :func:`replay_into` calls."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def iter_events(self, since_seq: int = -1) -> Iterator[dict[str, Any]]:
        for row in self._table.to_pylist():
            if row["seq"] > since_seq:
                yield row


@dataclass(frozen=True)
class FolderSnapshot:
    """What a run folder holds, read once: identity, config and the log as one table.

    Attributes:
        run_dir: The folder.
        identity: Its ``job.json``.
        config: The job's config.
        table: Every committed event, in ``seq`` order (schema
            :data:`~hz_ray.storage.EVENT_SCHEMA`).
    """

    run_dir: Path
    identity: JobIdentity
    config: TuningConfig
    table: pa.Table

    def replay_into(self, ledger: Ledger) -> int:
        """Apply the snapshot's arms, retirements and accepted deltas to ``ledger``.

        Returns:
            The last ``seq`` applied (-1 for an empty log).

        Raises:
            StateError: The log contradicts itself (a damaged log).
        """
        try:
            return replay_into(ledger, _TableLog(self.table))  # type: ignore[arg-type]
        except StateError as exc:
            raise StateError(f"The event log of {str(self.run_dir)!r} cannot be replayed: "
                             f"{exc.message}", exc.hint) from exc


def read_folder(run_dir: str | Path) -> FolderSnapshot:
    """Read a run folder's identity, config and event log, without the lock or any write.

    Raises:
        StateError: The folder does not exist or holds no job (no ``job.json``),
            was written by another hz-ray version, lacks its config, or its log
            is unreadable.
        ConfigError: The folder's config does not validate.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise field_error(StateError, "run_dir", str(folder), "an existing run folder",
                          "Point at the folder a job ran in (its --run-dir).")
    identity = RunFolder.read(folder).identity
    table = _read_log(folder)
    return FolderSnapshot(folder, identity, _load_config(folder, table), table)


def load_run(run_dir: str | Path) -> RunRecord:
    """Read a run folder: identity, config, clock, readouts, arms and totals.

    Read-only and lock-free: safe on a job that is still running.

    Args:
        run_dir: A folder made by an hz-ray driver.

    Returns:
        The :class:`RunRecord` as of the newest committed log part.

    Raises:
        StateError: As :func:`read_folder`, or the log cannot be replayed.
        ConfigError: The folder's config does not validate.
    """
    return record_of(read_folder(run_dir))


def record_of(snap: FolderSnapshot) -> RunRecord:
    """The :class:`RunRecord` of a folder already read (see :func:`load_run`)."""
    folder, identity, config, table = snap.run_dir, snap.identity, snap.config, snap.table
    state = JobState(identity.job_id)
    state.replay(table)
    ledger = Ledger.for_job(config.metrics, config.optimizer)
    snap.replay_into(ledger)
    units = _units_by_arm(table)
    arms = []
    for arm_id, record in state.arms.items():
        known = arm_id in ledger.arms
        arms.append(ArmRow(
            arm_id=arm_id, slot=record.slot if record.slot >= 0 else None,
            params=dict(record.params), launched_hour=record.launched_hour, state=record.state,
            stopped_hour=record.stopped_hour, stop_reason=record.stop_reason,
            hours_observed=ledger.hours_observed(arm_id) if known else 0,
            units=units.get(arm_id, 0),
            estimates=ledger.estimates(arm_id) if known else {},
            last_error=record.last_error))
    recommendations = tuple(sorted(state.recommendations.items(), key=lambda item: item[0]))
    hours = [h for h, _ in recommendations]
    kinds = table.column("kind").to_pylist()
    totals = RunTotals(
        first_hour=hours[0] if hours else None, last_hour=hours[-1] if hours else None,
        hours_run=len(hours), arms_launched=len(arms),
        arms_live=sum(a.live for a in arms), units=sum(a.units for a in arms),
        deltas_accepted=kinds.count("delta_accepted"), deltas_rejected=state.rejected_total)
    seqs = table.column("seq").to_pylist()
    return RunRecord(
        run_dir=folder, job_id=identity.job_id, name=identity.name,
        created_s=identity.created_s, config=config,
        clock=load_checkpoint(folder / CLOCK_FILE) or {}, recommendations=recommendations,
        arms=tuple(arms), totals=totals, alarm=state.alarm, log_seq=max(seqs, default=-1))


def _read_log(folder: Path) -> pa.Table:
    """The whole event log (empty when the folder has no log yet; creates nothing)."""
    log_dir = folder / LOG_DIR_NAME
    if not log_dir.is_dir():
        return EVENT_SCHEMA.empty_table()
    return EventLog(log_dir).read()  # the folder exists, so EventLog creates nothing


def _load_config(folder: Path, table: pa.Table) -> TuningConfig:
    """The config of ``config.json``, else of the newest ``job_started`` event."""
    raw = load_checkpoint(folder / CONFIG_FILE)
    where = str(folder / CONFIG_FILE)
    if raw is None:
        started = table.filter(pc.equal(table["kind"], "job_started")).to_pylist()
        payload = json.loads(started[-1]["payload_json"]) if started else {}
        raw = payload.get("config") if isinstance(payload.get("config"), dict) else None
        where = "the log's job_started event"
    if raw is None:
        raise field_error(StateError, "run_dir", str(folder), f"a job's folder with its "
                          f"{CONFIG_FILE}", f"{JOB_FILE} is there but the config is not; "
                          "restore config.json from the job's config file.")
    try:
        return config_from_mapping(raw)
    except ConfigError as exc:
        raise ConfigError(f"The config in {where} does not validate: {exc.message}",
                          exc.hint) from exc


def _units_by_arm(table: pa.Table) -> dict[str, int]:
    """Per arm, test units summed over its hours (largest ``n`` of the hour's deltas)."""
    accepted = table.filter(pc.equal(table["kind"], "delta_accepted"))
    per_hour: dict[tuple[str, int], int] = defaultdict(int)
    for arm_id, hour, n in zip(accepted.column("arm_id").to_pylist(),
                               accepted.column("hour").to_pylist(),
                               accepted.column("n").to_pylist(), strict=True):
        per_hour[(arm_id, hour)] = max(per_hour[(arm_id, hour)], int(n or 0))
    out: dict[str, int] = defaultdict(int)
    for (arm_id, _), n in per_hour.items():
        out[arm_id] += n
    return dict(out)
