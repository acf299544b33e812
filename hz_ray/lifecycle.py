"""When a live test arm should stop: a pure decision on its age and posterior."""

from __future__ import annotations

from hz_ray.config import ArmsSpec

STOP_MAX_HOURS = "max_hours"
STOP_GUARDRAIL = "guardrail"
STOP_NOT_CONTENDER = "not_contender"


def stop_reason(
    spec: ArmsSpec, hours_live: float, hours_observed: int, p_feasible: float | None,
    pick_share: float | None = None,
) -> str | None:
    """Decide whether a live arm's lifecycle has ended.

    Args:
        spec: The job's arm settings.
        hours_live: Job hours since the arm was launched.
        hours_observed: Distinct hours of data received for the arm.
        p_feasible: Posterior probability that the arm meets every
            constraint, or ``None`` when unknown.
        pick_share: The arm's share of the latest Thompson plan's picks
            (probability of being the best feasible candidate), or ``None``
            when unknown.

    Returns:
        ``"max_hours"`` when its hours are up, ``"guardrail"`` when it has at
        least ``min_hours`` of data and is probably harming users,
        ``"not_contender"`` when it has ``min_hours`` of data and its pick share
        is below ``spec.contender_stop_share``, else ``None``.
    """
    if hours_live >= spec.max_hours:
        return STOP_MAX_HOURS
    if hours_observed < spec.min_hours:
        return None
    if _below(p_feasible, spec.guardrail_stop_probability):
        return STOP_GUARDRAIL
    if _below(pick_share, spec.contender_stop_share):
        return STOP_NOT_CONTENDER
    return None


def _below(value: float | None, threshold: float) -> bool:
    """True when a rule is on (threshold > 0), the value is known and under it."""
    return threshold > 0 and value is not None and value < threshold
