"""What a running job tells tools outside it, through its run folder.

The job's control plane (:class:`~hz_ray.service.posterior.PosteriorService`,
on either driver) writes two small JSON files into the run folder, atomically:

- ``telemetry.json``, once it serves Prometheus metrics:
  ``{"url", "host", "port", "job_id", "pid", "written_s"}``.
- ``status.json``, after every job hour: the hour, the live arms with their
  hours of data, posterior gain and P(feasible), the recommendation and its
  bound, stuck stops, data freshness per slot and the job's counters
  (:func:`job_snapshot` lists the fields).

``hz-ray status RUN_DIR`` reads them; the event log stays the source of truth
(these files are views of it and may lag it by up to an hour).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hz_ray.ledger import Ledger
from hz_ray.optimizer import ArmAssessment
from hz_ray.records import Recommendation
from hz_ray.service.job_state import JobState
from hz_ray.storage import load_checkpoint, save_checkpoint

STATUS_FILE = "status.json"
TELEMETRY_FILE = "telemetry.json"
STATUS_FORMAT = "hz-ray.status/1"


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def recommendation_mapping(rec: Recommendation) -> dict[str, Any]:
    """A recommendation as plain JSON-able values (non-finite numbers as ``None``)."""
    return {
        "arm_id": rec.arm_id, "is_control": rec.is_control, "params": dict(rec.params),
        "objective_mean": _finite(rec.objective_mean),
        "objective_lcb": _finite(rec.objective_lcb), "p_feasible": _finite(rec.p_feasible),
        "metrics": {m: {"mean": _finite(p.mean), "sd": _finite(p.sd)}
                    for m, p in rec.metrics.items()},
    }


def _newest_data_hour(ledger: Ledger, arm_id: str) -> int | None:
    hours = [d.hour for metric in ledger.metrics if arm_id in ledger.arms
             for d in ledger.deltas(arm_id, metric)]
    return max(hours) if hours else None


def job_snapshot(*, job_id: str, name: str, driver: str, hour: int, state: JobState,
                 ledger: Ledger, assessments: Mapping[str, ArmAssessment],
                 recommendation: Recommendation, metrics_url: str | None,
                 slot_report_hours: Mapping[int, int], alarm: str | None) -> dict[str, Any]:
    """The job as ``hz-ray status`` shows it (the caller holds the service's lock).

    Args:
        job_id: The job's id.
        name: The config's job name.
        driver: ``"local"`` or ``"ray"``.
        hour: The job hour just finished.
        state: The service's arms and counters.
        ledger: The writer ledger (the arms' own data).
        assessments: Posterior views of the live arms (newest snapshot).
        recommendation: The newest readout.
        metrics_url: Where Prometheus metrics are served, or ``None``.
        slot_report_hours: Job hour of each slot's newest report.
        alarm: Why the job launches no more arms, or ``None``.

    Returns:
        A JSON-able mapping: ``format``, ``job_id``, ``name``, ``driver``,
        ``hour``, ``updated_s`` (Unix seconds), ``metrics_url``,
        ``recommendation`` (:func:`recommendation_mapping`), ``live_arms`` (one
        mapping per unsettled arm: ``arm_id``, ``slot``, ``state``,
        ``launched_hour``, ``hours_observed``, ``newest_data_hour``,
        ``gain_mean``, ``gain_sd``, ``p_feasible``), ``stuck_stops`` (``arm_id``,
        ``slot``, ``stop_failures``, ``last_error``), ``slots`` (per slot:
        ``last_report_hour``, ``newest_data_hour`` and ``data_age_hours``, the
        hours since the newest data hour ended), ``counters`` and ``alarm``.
    """
    live = []
    latest: dict[int, Any] = {}  # each slot's newest arm: its data tell the slot's freshness
    for record in state.arms.values():
        if record.slot not in latest or record.seq > latest[record.slot].seq:
            latest[record.slot] = record
    newest_by_slot = {slot: hour_ for slot, record in latest.items()
                      if (hour_ := _newest_data_hour(ledger, record.arm_id)) is not None}
    for record in state.unsettled():
        view = assessments.get(record.arm_id)
        live.append({
            "arm_id": record.arm_id, "slot": record.slot, "state": record.state,
            "launched_hour": record.launched_hour,
            "hours_observed": ledger.hours_observed(record.arm_id)
            if record.arm_id in ledger.arms else 0,
            "newest_data_hour": _newest_data_hour(ledger, record.arm_id),
            "gain_mean": _finite(view.gain_mean) if view else None,
            "gain_sd": _finite(view.gain_sd) if view else None,
            "p_feasible": _finite(view.p_feasible) if view else None,
        })
    slots = {}
    for slot in sorted(set(slot_report_hours) | set(newest_by_slot)):
        newest = newest_by_slot.get(slot)
        slots[str(slot)] = {
            "last_report_hour": slot_report_hours.get(slot),
            "newest_data_hour": newest,
            "data_age_hours": None if newest is None else max(0, hour - newest),
        }
    stuck = [{"arm_id": r.arm_id, "slot": r.slot, "stop_failures": r.stop_failures,
              "last_error": r.last_error} for r in state.stuck_stops()]
    return {
        "format": STATUS_FORMAT, "job_id": job_id, "name": name, "driver": driver,
        "hour": int(hour), "updated_s": time.time(), "metrics_url": metrics_url,
        "recommendation": recommendation_mapping(recommendation),
        "live_arms": live, "stuck_stops": stuck, "slots": slots,
        "counters": {"arms": len(state.arms), "accepted": ledger.num_records,
                     "rejected": state.rejected_total, "data_version": ledger.version},
        "alarm": alarm,
    }


def write_status(run_dir: str | Path, snapshot: Mapping[str, Any]) -> None:
    """Replace the folder's ``status.json`` atomically."""
    save_checkpoint(Path(run_dir) / STATUS_FILE, snapshot)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The folder's newest ``status.json``, or ``None`` when there is none."""
    return load_checkpoint(Path(run_dir) / STATUS_FILE)


@dataclasses.dataclass(frozen=True)
class TelemetryAddress:
    """Where a job serves its metrics (``telemetry.json``)."""

    url: str
    host: str
    port: int
    job_id: str
    pid: int
    written_s: float


def write_telemetry_address(run_dir: str | Path, url: str, host: str, port: int,
                            job_id: str, pid: int) -> TelemetryAddress:
    """Record the metrics address in the run folder (atomically) and return it."""
    address = TelemetryAddress(url, host, int(port), job_id, int(pid), time.time())
    save_checkpoint(Path(run_dir) / TELEMETRY_FILE, dataclasses.asdict(address))
    return address


def read_telemetry_address(run_dir: str | Path) -> TelemetryAddress | None:
    """The folder's ``telemetry.json``, or ``None`` when the job serves none."""
    raw = load_checkpoint(Path(run_dir) / TELEMETRY_FILE)
    if raw is None:
        return None
    return TelemetryAddress(str(raw["url"]), str(raw["host"]), int(raw["port"]),
                            str(raw["job_id"]), int(raw["pid"]), float(raw["written_s"]))
