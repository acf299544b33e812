"""The launch readout of a run folder as text, and the rows every view shares.

:func:`metric_rows`, :func:`weight_rows` and :func:`arm_gain` turn a
:class:`~hz_ray.records.Recommendation` and the job's config into table rows;
the text here, the PNGs (:mod:`hz_ray.readout.plots`) and the HTML page
(:mod:`hz_ray.readout.html`) all print them. Deltas are relative to control
(0.01 = +1%) and shown in percent; intervals are two-sided 95% normal intervals
of the posterior, ``mean +- 1.96 sd``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from hz_ray.config import ConstraintSpec, TuningConfig
from hz_ray.outcomes import Z95_ONE_SIDED
from hz_ray.readout.folder import ArmRow, RunRecord
from hz_ray.records import CONTROL_ARM_ID, ArmEstimate, ParetoReadout, Recommendation

__all__ = ["Z95", "MetricRow", "ParetoRow", "WeightRow", "arm_gain", "constraint_text",
           "metric_rows", "objective_interval", "objective_sd", "pareto_lines", "pareto_rows",
           "readout_text", "recommendation_lines", "weight_rows"]

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054
#: Most arms the text lists one by one (the HTML page lists them all).
TEXT_ARM_ROWS = 40


@dataclass(frozen=True)
class MetricRow:
    """One line of the metrics table of a readout.

    Attributes:
        metric: Metric name, or ``"objective"`` for the objective's row.
        role: ``"objective"`` (the objective row, or a metric it weighs),
            ``"guardrail"`` (a constrained metric) or ``"tracked"``.
        mean: Posterior mean of the relative delta vs control.
        sd: Its posterior standard deviation.
        low: Lower end of the 95% interval, ``mean - 1.96 sd``.
        high: Upper end, ``mean + 1.96 sd``.
        threshold: The metric's guardrail(s), e.g. ``">= -0.50%"``, or ``None``;
            the objective row: what a launch needs (``"> 0, P >= 0.95"``).
        p_feasible: Posterior probability its guardrails hold (the objective row:
            that every guardrail holds); ``None`` for an unconstrained metric.
        observed: The recommended arm's own aggregate of this metric, if any.
    """

    metric: str
    role: str
    mean: float
    sd: float
    low: float
    high: float
    threshold: str | None = None
    p_feasible: float | None = None
    observed: ArmEstimate | None = None


@dataclass(frozen=True)
class WeightRow:
    """One weight, recommended against control.

    Attributes:
        name: Parameter name.
        recommended: The recommended arm's value.
        control: The production (base) value.
        ratio: ``recommended / control`` (``None`` when control is 0).
    """

    name: str
    recommended: float
    control: float
    ratio: float | None


def pct(x: float | None, digits: int = 2) -> str:
    """A relative delta in signed percent (``0.0123 -> "+1.23%"``; ``None -> "-"``)."""
    if x is None or not math.isfinite(x):
        return "-"
    value = round(100 * x, digits)
    return f"{value if value != 0 else 0.0:+.{digits}f}%"  # never "-0.00%"


def objective_sd(rec: Recommendation) -> float:
    """Posterior sd of the objective, from its mean and one-sided 95% lower bound."""
    return max(rec.objective_mean - rec.objective_lcb, 0.0) / Z95_ONE_SIDED


def objective_interval(rec: Recommendation) -> tuple[float, float]:
    """The objective's two-sided 95% interval ``(low, high)`` (relative deltas)."""
    sd = objective_sd(rec)
    return rec.objective_mean - Z95 * sd, rec.objective_mean + Z95 * sd


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def constraint_probability(spec: ConstraintSpec, mean: float, sd: float) -> float:
    """Posterior probability that one guardrail holds for a normal delta ``N(mean, sd^2)``."""
    slack = spec.sense * (mean - spec.bound)
    if sd <= 0:
        return 1.0 if slack >= 0 else 0.0
    return _normal_cdf(slack / sd)


def constraint_text(specs: list[ConstraintSpec]) -> str:
    """The guardrails of one metric, e.g. ``">= -0.50%"`` or ``">= -1.00% and <= +2.00%"``."""
    return " and ".join((">= " if s.min_delta is not None else "<= ") + pct(s.bound)
                        for s in specs)


def _and(items: list[str]) -> str:
    """``["a", "b", "c"] -> "a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def objective_text(config: TuningConfig) -> str:
    """The objective in words.

    E.g. ``"maximize views"``, ``"maximize 1*views + 0.5*likes"`` or, for a
    Pareto objective, ``"Pareto trade-off of views (maximize) and watch_time
    (maximize), preference views 70% / watch_time 30%"`` (``"equal
    preference"`` when the config gives none).
    """
    spec = config.objective
    if spec.is_pareto:
        traded = _and([f"{m} ({spec.direction_of(m)})" for m in spec.pareto])
        shares = spec.preference_shares
        preference = ("equal preference" if spec.preference is None else "preference "
                      + " / ".join(f"{m} {100 * shares[m]:.0f}%" for m in spec.pareto))
        return f"Pareto trade-off of {traded}, {preference}"
    weights = spec.weights
    if len(weights) == 1 and next(iter(weights.values())) == 1:
        what = next(iter(weights))
    else:
        what = " + ".join(f"{w:g}*{m}" for m, w in weights.items())
    return f"{config.objective.direction} {what}"


def metric_rows(config: TuningConfig, rec: Recommendation) -> list[MetricRow]:
    """The objective's row, then one row per modelled metric in config order.

    Args:
        config: The job's config (objective, guardrails, metric order).
        rec: The readout.

    Returns:
        ``1 + len(config.metrics)`` rows (metrics the readout lacks are skipped).
    """
    sd = objective_sd(rec)
    low, high = objective_interval(rec)
    needs = config.optimizer.feasibility_threshold
    rows = [MetricRow("objective", "objective", rec.objective_mean, sd, low, high,
                      threshold=f"> 0, P >= {needs:g}",
                      p_feasible=rec.p_feasible if config.constraints else None)]
    for metric in config.metrics:
        post = rec.metrics.get(metric)
        if post is None:
            continue
        specs = [c for c in config.constraints if c.metric == metric]
        role = ("objective" if metric in config.objective.metric_names
                else "guardrail" if specs else "tracked")
        p = math.prod(constraint_probability(s, post.mean, post.sd) for s in specs) \
            if specs else None
        rows.append(MetricRow(metric, role, post.mean, post.sd, post.mean - Z95 * post.sd,
                              post.mean + Z95 * post.sd,
                              threshold=constraint_text(specs) if specs else None,
                              p_feasible=p, observed=rec.observed.get(metric)))
    return rows


def weight_rows(config: TuningConfig, rec: Recommendation) -> list[WeightRow]:
    """Each tuned weight: recommended value, control value and their ratio."""
    rows = []
    for name, control in config.base_params.items():
        value = float(rec.params.get(name, control))
        rows.append(WeightRow(name, value, control, value / control if control else None))
    return rows


def arm_gain(config: TuningConfig, estimates: Mapping[str, ArmEstimate]
             ) -> tuple[float, float] | None:
    """An arm's objective delta from its own data: ``(mean, sem)``, or ``None`` if incomplete.

    For a weighted-sum objective, its weighted sum (signed so higher is
    better) of the arm's per-metric aggregates, the sems combined as if
    independent. For a Pareto objective over ``k`` metrics with signs ``s`` and
    preference shares ``lam``, the weighted Chebyshev value
    ``min_i s_i d_i / (k lam_i)`` of the aggregates ``d`` (as
    :mod:`hz_ray.outcomes` scores it) and the sem of its smallest term.

    Args:
        config: The job's config.
        estimates: The arm's own aggregates by metric.

    Returns:
        ``(mean, sem)``, or ``None`` when an objective metric has no estimate.
    """
    if config.objective.is_pareto:
        return _chebyshev_gain(config, estimates)
    weights = config.objective.weights
    if any(m not in estimates for m in weights):
        return None
    sign = config.objective.sign
    mean = sum(sign * w * estimates[m].mean for m, w in weights.items())
    sem = math.sqrt(sum((w * estimates[m].sem) ** 2 for m, w in weights.items()))
    return mean, sem


def _chebyshev_gain(config: TuningConfig, estimates: Mapping[str, ArmEstimate]
                    ) -> tuple[float, float] | None:
    names = config.objective.pareto
    if any(m not in estimates for m in names):
        return None
    signs, shares, k = config.objective.signs, config.objective.preference_shares, len(names)
    terms = [(signs[m] * estimates[m].mean / (k * shares[m]), estimates[m].sem / (k * shares[m]))
             for m in names]
    return min(terms, key=lambda t: t[0])


def arm_label(arm_id: str, job_id: str) -> str:
    """The arm's id without its job's prefix (``"job-7f3a.s00-0002" -> "s00-0002"``)."""
    prefix = f"{job_id}."
    return arm_id[len(prefix):] if arm_id.startswith(prefix) else arm_id


def recommendation_lines(config: TuningConfig, rec: Recommendation) -> list[str]:
    """The readout proper: the pick, weights vs control, and every metric's posterior."""
    lines = []
    threshold = config.optimizer.feasibility_threshold
    if rec.is_control:
        lines.append("Recommendation: keep the production weights (control). No arm beats "
                     f"control with P(feasible) >= {threshold:g} and enough hours of data.")
    else:
        lines.append(f"Recommended arm: {rec.arm_id}")
    low, high = objective_interval(rec)
    lines.append(f"Objective ({objective_text(config)}): {pct(rec.objective_mean)} "
                 f"[95% {pct(low)}, {pct(high)}]; one-sided 95% LCB {pct(rec.objective_lcb)}; "
                 f"P(feasible) = {rec.p_feasible:.3f} (needs >= {threshold:g})")
    lines.append("")
    lines.append(f"{'weight':<16}{'recommended':>12}{'control':>10}{'ratio':>8}")
    for w in weight_rows(config, rec):
        ratio = f"x{w.ratio:.3f}" if w.ratio is not None else "-"
        lines.append(f"{w.name:<16}{w.recommended:>12.4g}{w.control:>10.4g}{ratio:>8}")
    lines.append("")
    lines.append(f"{'metric':<14}{'role':<11}{'delta':>9}{'95% interval':>22}"
                 f"{'P(feasible)':>13}  {'threshold':<16}{'arm data':>10}{'hours':>6}")
    for row in metric_rows(config, rec):
        interval = f"[{pct(row.low)}, {pct(row.high)}]"
        p = f"{row.p_feasible:.3f}" if row.p_feasible is not None else "-"
        obs = row.observed
        lines.append(f"{row.metric:<14}{row.role:<11}{pct(row.mean):>9}{interval:>22}{p:>13}  "
                     f"{row.threshold or '-':<16}{pct(obs.mean) if obs else '-':>10}"
                     f"{obs.hours if obs else '-':>6}")
    return lines


@dataclass(frozen=True)
class ParetoRow:
    """One arm of a Pareto readout's table.

    Attributes:
        arm_id: The arm's id (``"control"`` for the control's row).
        label: The arm's id without its job's prefix.
        deltas: Per objective, in the readout's order: the posterior
            ``(mean, sd)`` of its relative delta vs control, or ``None`` when
            the readout lacks it.
        p_feasible: Posterior probability that every guardrail holds.
        chebyshev: Its weighted Chebyshev value at the preference.
        preferred: True for the arm the preference picks.
    """

    arm_id: str
    label: str
    deltas: tuple[tuple[float, float] | None, ...]
    p_feasible: float
    chebyshev: float
    preferred: bool


def pareto_rows(readout: ParetoReadout, job_id: str = "") -> list[ParetoRow]:
    """The front's arms in the readout's order, then the control's row when it is preferred.

    Args:
        readout: The Pareto readout.
        job_id: The job's id, cut from the arms' labels.

    Returns:
        One :class:`ParetoRow` per front arm (plus the control when the
        preference picks it).
    """
    rows = []
    recs = list(readout.front)
    if readout.preferred.is_control:
        recs.append(readout.preferred)
    for rec in recs:
        deltas = tuple((rec.metrics[m].mean, rec.metrics[m].sd) if m in rec.metrics
                       else ((0.0, 0.0) if rec.is_control else None)
                       for m in readout.objectives)
        rows.append(ParetoRow(rec.arm_id, CONTROL_ARM_ID if rec.is_control
                              else arm_label(rec.arm_id, job_id), deltas, rec.p_feasible,
                              rec.objective_mean, rec.arm_id == readout.preferred.arm_id))
    return rows


def pareto_lines(config: TuningConfig, readout: ParetoReadout, job_id: str = "") -> list[str]:
    """The Pareto front as a text table, the preferred arm marked ``*``.

    Args:
        config: The job's config (its objective and feasibility threshold).
        readout: The Pareto readout.
        job_id: The job's id, cut from the arms' labels.

    Returns:
        Lines: a heading, then one row per front arm with each objective's
        delta and its 95% interval (``+1.23% +- 0.40%``), P(feasible) and the
        Chebyshev value, then which arm the preference picks.
    """
    needs = config.optimizer.feasibility_threshold
    lines = [f"Pareto front ({objective_text(config)}): {len(readout.front)} arms on the front "
             f"of {len(readout.qualified)} qualifying (P(feasible) >= {needs:g})"]
    if not readout.front:
        lines.append("No arm qualifies yet: none has enough hours of data and "
                     f"P(feasible) >= {needs:g}.")
    rows = pareto_rows(readout, job_id)
    width = max([len("arm")] + [len(r.label) for r in rows]) + 2
    heads = [f"{m} ({'higher' if readout.signs.get(m, 1.0) > 0 else 'lower'} is better)"
             for m in readout.objectives]
    cols = [max(len(h), 18) + 2 for h in heads]
    lines.append(f"  {'arm':<{width}}" + "".join(f"{h:>{c}}" for h, c in zip(heads, cols,
                                                                           strict=True))
                 + f"{'P(feasible)':>13}{'Chebyshev':>11}")
    for row in rows:
        cells = [f"{pct(d[0])} +- {100 * Z95 * d[1]:.2f}%" if d is not None else "-"
                 for d in row.deltas]
        lines.append(f"{'*' if row.preferred else ' '} {row.label:<{width}}"
                     + "".join(f"{v:>{c}}" for v, c in zip(cells, cols, strict=True))
                     + f"{row.p_feasible:>13.3f}{pct(row.chebyshev):>11}")
    pick = readout.preferred
    if pick.is_control:
        lines.append("Preferred (*): control: no arm on the front has a positive Chebyshev "
                     "value at the preference.")
    else:
        lines.append(f"Preferred (*): {pick.arm_id} (the largest Chebyshev value on the front).")
    return lines


def _arm_lines(record: RunRecord, rec: Recommendation | None) -> list[str]:
    arms = record.arms
    if not arms:
        return ["Arms: none launched yet."]
    reasons = Counter(a.stop_reason or "live" for a in arms)
    lines = ["Arms: " + ", ".join(f"{n} {why}" for why, n in reasons.most_common())]
    lines.append(f"  {'arm':<20}{'slot':>5}{'launched':>9}{'stopped':>8}  {'why':<15}"
                 f"{'hours':>6}{'units':>11}{'objective (own data)':>22}")
    shown: list[ArmRow] = list(arms[:TEXT_ARM_ROWS])
    picked = record.arm(rec.arm_id) if rec is not None else None
    if picked is not None and picked not in shown:
        shown.append(picked)
    for arm in shown:
        gain = arm_gain(record.config, arm.estimates)
        own = f"{pct(gain[0])} +- {100 * Z95 * gain[1]:.2f}%" if gain else "-"
        mark = "*" if rec is not None and arm.arm_id == rec.arm_id else " "
        lines.append(f"{mark} {arm_label(arm.arm_id, record.job_id):<20}"
                     f"{'-' if arm.slot is None else arm.slot:>5}{arm.launched_hour:>9}"
                     f"{'-' if arm.stopped_hour is None else arm.stopped_hour:>8}  "
                     f"{arm.stop_reason or 'live':<15}{arm.hours_observed:>6}{arm.units:>11,}"
                     f"{own:>22}")
    if len(arms) > len(shown):
        lines.append(f"  ... {len(arms) - len(shown)} more arms (report.html lists them all)")
    return lines


def readout_text(record: RunRecord, recommendation: Recommendation | None = None,
                 *, heading: str = "hz-ray readout") -> str:
    """The launch readout of a run folder.

    Args:
        record: The folder, from :func:`~hz_ray.readout.folder.load_run`.
        recommendation: Print this readout instead of the newest logged one
            (e.g. the one :func:`~hz_ray.readout.replay.replay_run` rebuilt).
        heading: The first line's title.

    Returns:
        Lines of text: the job, the pick and its weights vs control, every
        metric's delta with its 95% interval and P(feasible) against its
        threshold, hours and traffic used, and the arms.
    """
    rec = recommendation if recommendation is not None else record.recommendation
    totals = record.totals
    lines = [f"=== {heading}: {record.name} ({record.job_id}) ==="]
    if totals.last_hour is None:
        lines.append("No readout logged yet: the job has not finished its first hour.")
    else:
        lines.append(f"As of job hour {totals.last_hour}: {totals.hours_run} job hours "
                     f"({totals.first_hour}-{totals.last_hour}), {totals.arms_live} arms live.")
    if record.alarm:
        lines.append(f"ALARM: {record.alarm} (the job stopped launching arms)")
    if rec is not None:
        lines.append("")
        lines += recommendation_lines(record.config, rec)
        picked = record.arm(rec.arm_id)
        if picked is not None:
            lines.append(f"The arm ran in slot {picked.slot} from hour {picked.launched_hour}"
                         + (f" to {picked.stopped_hour} ({picked.stop_reason})"
                            if picked.stopped_hour is not None else " and is live")
                         + f": {picked.hours_observed} hours of data, {picked.units:,} units.")
    lines.append("")
    lines.append(f"Traffic: {totals.units:,} test units over {totals.arms_launched} arms; "
                 f"{totals.deltas_accepted} hourly deltas accepted, {totals.deltas_rejected} "
                 "records rejected (kept in the log).")
    lines += _arm_lines(record, rec)
    return "\n".join(lines)
