"""The result object every driver returns (``run_local`` and ``run_on_ray``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hz_ray.records import ArmEstimate, Recommendation


@dataclass(frozen=True)
class ArmSummary:
    """One arm that ran.

    Attributes:
        arm_id: Its id.
        params: Its weights.
        launched_hour: Job hour it was launched.
        stopped_hour: Job hour it was stopped, or ``None`` if still live.
        stop_reason: Why it stopped (``"max_hours"``, ``"guardrail"``, ...).
        hours_observed: Distinct hours of data received.
        estimates: Per metric, the arm's own N-weighted delta aggregate.
    """

    arm_id: str
    params: Mapping[str, float]
    launched_hour: int
    stopped_hour: int | None
    stop_reason: str | None
    hours_observed: int
    estimates: Mapping[str, ArmEstimate] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """What a tuning job produced.

    Attributes:
        recommendation: The final launch readout.
        recommendations: ``(hour, Recommendation)`` after every job hour.
        arms: Every arm ever launched, by id, in launch order.
        log_path: Folder of the Parquet event log of the run.
        checkpoint_path: The latest JSON checkpoint.
        rejected: Number of records rejected (kept in the log with reasons).
        handed_off: Arms kept live on the platform at the job's end, on request
            (``arms.handoff_recommended``): the recommended arm, for a
            confirmation test. Every other arm was stopped.
        unstopped: Arms whose stop kept failing at the job's end (still
            ``stopping`` in the log; ``hz-ray stop RUN_DIR`` retries them).
    """

    recommendation: Recommendation
    recommendations: list[tuple[int, Recommendation]]
    arms: Mapping[str, ArmSummary]
    log_path: Path
    checkpoint_path: Path
    rejected: int = 0
    handed_off: tuple[str, ...] = ()
    unstopped: tuple[str, ...] = ()
