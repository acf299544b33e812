"""Plain, validated records that cross module and process boundaries.

All records are frozen dataclasses of builtins, so they pickle cheaply for Ray
and serialise to JSON and Arrow without custom code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

from hz_ray.errors import InputDataError, field_error

CONTROL_ARM_ID = "control"


def _check_finite(where: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise field_error(
            InputDataError, where, value, "a finite number",
            "Drop or repair the reading at its source; NaN and inf cannot be modelled.",
        )


@dataclass(frozen=True)
class GroupStats:
    """Per-unit summary of one group (test or control) in one hour.

    Attributes:
        mean: Mean of the metric over the group's units (e.g. views per user).
        var: Variance of the metric across units (per-unit, not of the mean),
            or ``None`` when the platform does not report it.
        n: Number of units (users) in the group this hour, >= 1.
    """

    mean: float
    var: float | None
    n: int

    def __post_init__(self) -> None:
        _check_finite("mean", self.mean)
        if self.var is not None:
            _check_finite("var", self.var)
            if self.var < 0:
                raise field_error(
                    InputDataError, "var", self.var, "a variance >= 0",
                    "Report the per-unit variance, or None when it is unknown.",
                )
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise field_error(
                InputDataError, "n", self.n, "an integer unit count >= 1",
                "Skip hours in which the group had no units.",
            )


@dataclass(frozen=True)
class HourlyReading:
    """One metric of one arm in one hour, with the control group of the same hour.

    Attributes:
        arm_id: The test arm's id.
        hour: Hour index (hours since the job's epoch), >= 0.
        metric: Metric name, e.g. ``"views"``.
        test: The test arm's group statistics.
        control: The control arm's group statistics in the same hour.
    """

    arm_id: str
    hour: int
    metric: str
    test: GroupStats
    control: GroupStats

    def __post_init__(self) -> None:
        _check_key(self.arm_id, self.hour, self.metric)
        if self.control.mean == 0:
            raise field_error(
                InputDataError, "control.mean", self.control.mean, "non-zero",
                "A relative delta X/X0 - 1 needs a non-zero control mean; "
                "aggregate this metric over more units or drop it.",
            )


#: Most characters an arm id may have; with a suffix such as ``.launch.json`` it
#: still fits the 255-byte file-name limit of common file systems.
ARM_ID_MAX_CHARS = 200
_ARM_ID_CHARS = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_arm_id(value: object, field: str = "arm_id") -> str:
    """Return ``value`` if it is a safe arm id, else raise.

    An arm id names files and folders on platforms (the file-drop backend
    writes ``<arm_id>.launch.json``), so it must not be able to leave a folder:
    a non-empty string of at most :data:`ARM_ID_MAX_CHARS` characters made of
    ASCII letters, digits, ``.``, ``_`` and ``-``, not starting with ``.``
    (so no ``..``, slashes, NUL, control characters or white space).
    Ids made by :func:`arm_id_for` pass while the job id is under 190
    characters.

    Args:
        value: The arm id to check.
        field: Name of the field in the error message, e.g. ``"arm_id"``.

    Returns:
        ``value``, unchanged.

    Raises:
        InputDataError: When ``value`` is not such a string, naming ``field``
            and the value (a very long string is shown cut).
    """
    if (isinstance(value, str) and len(value) <= ARM_ID_MAX_CHARS
            and _ARM_ID_CHARS.fullmatch(value) is not None):
        return value
    shown = value[:60] + "..." if isinstance(value, str) and len(value) > 80 else value
    raise field_error(
        InputDataError, field, shown,
        f"a non-empty string of at most {ARM_ID_MAX_CHARS} ASCII letters, digits, '.', '_' "
        "and '-' that does not start with '.'",
        "Arm ids become file names on platforms; use ids like 'feed-vm-7f3a.s03-0002' "
        "(hz_ray.records.arm_id_for).",
    )


def _check_key(arm_id: object, hour: object, metric: object) -> None:
    check_arm_id(arm_id, "arm_id")
    if isinstance(hour, bool) or not isinstance(hour, int) or hour < 0:
        raise field_error(InputDataError, "hour", hour, "an integer hour index >= 0")
    if not isinstance(metric, str) or not metric:
        raise field_error(InputDataError, "metric", metric, "a non-empty metric name")


@dataclass(frozen=True)
class HourlyDelta:
    """Relative delta ``X(w)/X(w0) - 1`` of one metric of one arm in one hour.

    Attributes:
        arm_id: The test arm's id.
        metric: Metric name.
        hour: Hour index, >= 0.
        mean: Estimated relative delta (0.01 means +1%).
        var: Variance of that estimate (delta method), or ``None`` when the
            group variances were not reported; the aggregate then falls back to
            the spread of the arm's hourly deltas across hours.
        n: Test-group unit count of the hour; the aggregation weight.
        control_var: The part of ``var`` that comes from the control group's
            sampling error, ``rho**2 * v_b / b**2`` (see :mod:`hz_ray.delta`), or
            ``None`` when unknown. Every arm of the hour shares the control
            group, so this error is shared too: two arms' deltas of the same
            hour covary by ``sqrt(control_var_i * control_var_j)``.
    """

    arm_id: str
    metric: str
    hour: int
    mean: float
    var: float | None
    n: int
    control_var: float | None = None

    def __post_init__(self) -> None:
        _check_key(self.arm_id, self.hour, self.metric)
        _check_finite("mean", self.mean)
        if self.var is not None:
            _check_finite("var", self.var)
            if self.var < 0:
                raise field_error(InputDataError, "var", self.var, "a variance >= 0")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise field_error(InputDataError, "n", self.n, "an integer unit count >= 1")
        if self.control_var is not None:
            _check_finite("control_var", self.control_var)
            if self.control_var < 0:
                raise field_error(InputDataError, "control_var", self.control_var,
                                  "a variance >= 0")

    @property
    def key(self) -> tuple[str, str, int]:
        """The idempotency key ``(arm_id, metric, hour)``."""
        return (self.arm_id, self.metric, self.hour)


@dataclass(frozen=True)
class ArmEstimate:
    """Aggregate of one arm's hourly deltas of one metric.

    Attributes:
        mean: N-weighted mean relative delta.
        sem: Standard error of ``mean``.
        n: Total test units over the aggregated hours.
        hours: Number of distinct hours aggregated.
    """

    mean: float
    sem: float
    n: int
    hours: int


@dataclass(frozen=True)
class MetricPosterior:
    """Posterior of one metric delta at one arm: mean and standard deviation."""

    mean: float
    sd: float


@dataclass(frozen=True)
class Recommendation:
    """The launch readout: which weights to ship, and how sure we are.

    Attributes:
        arm_id: The recommended arm (``"control"`` when nothing beats it safely).
        params: Its weights, by parameter name.
        objective_mean: Posterior mean of the objective (relative delta).
        objective_lcb: One-sided 95% lower confidence bound of the objective.
        p_feasible: Posterior probability that every constraint holds.
        metrics: Posterior of each metric delta at this arm.
        observed: The arm's own aggregated data, by metric.
    """

    arm_id: str
    params: Mapping[str, float]
    objective_mean: float
    objective_lcb: float
    p_feasible: float
    metrics: Mapping[str, MetricPosterior] = field(default_factory=dict)
    observed: Mapping[str, ArmEstimate] = field(default_factory=dict)

    @property
    def is_control(self) -> bool:
        """True when the readout recommends keeping the production weights."""
        return self.arm_id == CONTROL_ARM_ID


@dataclass(frozen=True)
class ParetoReadout:
    """The readout of a Pareto objective: the feasible front among the arms run.

    Attributes:
        objectives: The traded metrics, in the config's order.
        signs: Metric -> +1 (maximised) or -1 (minimised).
        preference: Metric -> share of the preference, summing to 1.
        front: The arms whose posterior mean deltas no other qualifying arm
            dominates, in ascending order of the first objective's signed
            mean. An arm qualifies with ``recommend_min_hours`` hours of data
            and ``P(feasible) >= feasibility_threshold``. Each
            :class:`Recommendation`'s ``objective_mean`` / ``objective_lcb`` is
            its weighted Chebyshev value at the preference.
        qualified: Every qualifying arm, the front included, same order.
        preferred: The arm the preference picks (the largest Chebyshev value
            on the front, when positive), else the control.
    """

    objectives: tuple[str, ...]
    signs: Mapping[str, float]
    preference: Mapping[str, float]
    front: tuple[Recommendation, ...]
    qualified: tuple[Recommendation, ...]
    preferred: Recommendation


@dataclass(frozen=True)
class InvalidReading:
    """A platform row that could not become an :class:`HourlyReading`.

    Backends return it in place of the reading, so the row is kept in the
    event log with its reason instead of being dropped or stopping the arm.

    Attributes:
        arm_id: The arm the row was fetched for.
        payload: The raw row, JSON-able.
        reason: Why it was rejected (the validation error's text).
    """

    arm_id: str
    payload: Mapping[str, object]
    reason: str


# ---------------------------------------------------------------------- arm ids
ARM_ID_RE = re.compile(r"^(?P<job>[A-Za-z0-9_-]+)\.(?P<local>s(?P<slot>\d{2,})-(?P<seq>\d{4,}))$")


def arm_id_for(job_id: str, slot: int, seq: int) -> str:
    """The id of the ``seq``-th arm (0-based) run in ``slot`` of a job.

    One scheme on every driver: ``<job id>.s<slot>-<seq>``, e.g.
    ``"feed-vm-7f3a.s03-0002"``. Sorting a job's ids groups them by slot, then
    launch order; the job id keeps jobs on one platform apart.

    Args:
        job_id: The job's id (:func:`hz_ray.run_folder.new_job_id`).
        slot: Arm slot index, >= 0.
        seq: Per-slot arm counter, >= 0.

    Returns:
        The arm id.
    """
    if not isinstance(job_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", job_id):
        raise field_error(InputDataError, "job_id", job_id, "letters, digits, '_' and '-'")
    for name, value in (("slot", slot), ("seq", seq)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise field_error(InputDataError, name, value, "an integer >= 0")
    return f"{job_id}.s{slot:02d}-{seq:04d}"


def parse_arm_id(arm_id: str) -> tuple[str, int, int] | None:
    """Return ``(job_id, slot, seq)`` of an id made by :func:`arm_id_for`, else ``None``."""
    match = ARM_ID_RE.match(arm_id) if isinstance(arm_id, str) else None
    if match is None:
        return None
    return match.group("job"), int(match.group("slot")), int(match.group("seq"))


def arm_key_in_job(arm_id: str) -> str:
    """The part of an arm id that names the arm within its job (``"s03-0012"``).

    Simulated platforms seed an arm's noise with it, so the same seed gives the
    same job whatever the job's random id. Ids of another scheme come back whole.
    """
    match = ARM_ID_RE.match(arm_id) if isinstance(arm_id, str) else None
    return arm_id if match is None else match.group("local")
