"""How much memory one selection of the optimiser needs, estimated from the config alone.

:func:`check_memory` runs when a config is validated, so sizes that would end
in an out-of-memory error hours into a job (``optimizer.thompson_draws: 1e6``)
are refused at once, with the largest size that fits in the message. It
imports no torch: the optimiser's constants it needs are mirrored here (a
unit test checks they match).
"""

from __future__ import annotations

from dataclasses import replace

from hz_ray.config import OptimizerSpec, TuningConfig
from hz_ray.errors import ConfigError, field_error

#: Largest estimated peak memory of one selection (:func:`estimate_plan_bytes`), bytes.
MEMORY_CAP_BYTES = 2 * 1024**3
#: Arms assumed by the estimate: GP training points and candidates (a few-day job has fewer).
ESTIMATE_ARMS = 512
# Mirrors of the optimiser's constants (importing them would load torch; a test checks them).
EXACT_SAMPLE_LIMIT = 1024  # hz_ray.surrogate: exact draws up to this many points
PATHWISE_NUM_FEATURES = 1024  # hz_ray.surrogate: Fourier features of the plan's pathwise draws
REFINE_POINTS = 64  # hz_ray.thompson: perturbations per draw and local-search round
CERTIFY_POINTS = 128  # hz_ray.optimizer: perturbations of the certifiable-optimum search
# BoTorch's posterior at N points holds about six N x N float64 matrices at its peak
# (covariance, its factors and copies; measured: 1.6 GB more peak memory at N = 6000).
_POSTERIOR_SQUARES = 6
# Random Fourier features of N points peak at about 2.5 N x F matrices (projection, cos, sin,
# their concatenation; measured at N = 60000, F = 512 and 1024).
_FEATURE_COPIES = 3
SIZE_KNOBS = ("thompson_draws", "proposals", "proposal_draws", "proposal_features",
              "bucket_size")


def _draws(N: int, K: int, m: int, c: int, n: int, F: int) -> int:
    """Float64 elements at the peak of ``PosteriorSnapshot.sample`` plus the picks."""
    if N <= EXACT_SAMPLE_LIMIT:  # one metric at a time: the posterior at N points; z, z L^T
        one = _POSTERIOR_SQUARES * N * N + 2 * K * N
    else:  # pathwise: features N x F, cross-covariance N x n, f and f^T; K x F weights; n x K
        one = _FEATURE_COPIES * N * F + N * n + 2 * K * N + K * F + 3 * n * K
    # The earlier metrics' draws stay while one is drawn; then the stacked K x N x m draws,
    # their copy (the control zeroed), G d (c K N twice) and four K x N scores and masks.
    return max((m - 1) * K * N + one, 2 * m * K * N + (2 * c + 4) * K * N)


def _refined(C: int, D: int, F: int, m: int, c: int, n: int, d: int) -> int:
    """Float64 elements at the peak of refined proposals (pathwise draws, local search)."""
    R = REFINE_POINTS
    kept = m * (D * F + n * D)  # every metric's path weights D x F and alpha n x D
    return kept + max(
        _FEATURE_COPIES * n * F + 2 * n * D + 2 * n * n,  # building one metric's paths
        (m - 1) * D * C + _FEATURE_COPIES * C * F + C * n + 2 * C * D,  # one metric at C points
        2 * m * D * C + (2 * c + 4) * D * C,  # the stacked draws and their picks
        m * D * C + D * R * (_FEATURE_COPIES * F + n + 4 + d) + 2 * m * D * R,  # a search round
    )


def estimate_plan_bytes(config: TuningConfig, *, optimizer: OptimizerSpec | None = None,
                        num_arms: int = ESTIMATE_ARMS) -> int:
    """Estimated peak memory of one Thompson selection (``Optimizer.plan``), in bytes.

    Counts the float64 tensors that grow with the size knobs (:data:`SIZE_KNOBS`), by
    phase, and returns the largest phase: Algorithm 3's proposals (``B + n + proposals``
    candidates, ``proposal_draws`` draws, ``proposal_features`` features when refined,
    ``REFINE_POINTS`` perturbations per draw), the plan (``thompson_draws`` draws at the
    control, bucket, arms and added proposals; exact draws up to ``EXACT_SAMPLE_LIMIT``
    points, else pathwise) and the certifiable-optimum search. Checked against the peak
    memory one plan adds (no arms, thousands of draws or proposals): within about 25%.
    Not counted: the GP fits (``n x n`` per metric), the models and the interpreter, so
    this is meant to catch configs that cannot fit, not to size a machine. The
    contender-stop plan (``CONTENDER_DRAWS`` draws, no proposals) is never the largest.

    Args:
        config: The job (metrics, constraints and parameters count).
        optimizer: Knobs to estimate instead of ``config.optimizer``.
        num_arms: Arms ``n`` assumed (training points, and candidates).

    Returns:
        Bytes.
    """
    opt = config.optimizer if optimizer is None else optimizer
    m, c, d, n = len(config.metrics), len(config.constraints), len(config.parameters), num_arms
    B, K, D = opt.bucket_size, opt.thompson_draws, opt.proposal_draws
    added = opt.max_proposals_added if opt.proposal_probability > 0 else 0
    plan_points = 1 + B + n + added  # the control, bucket, arms and added proposals
    phases = [_draws(plan_points, K, m, c, n, PATHWISE_NUM_FEATURES)]
    if opt.certify_share > 0:  # mean and variance at every candidate, then a local search
        phases.append(_POSTERIOR_SQUARES * max(plan_points, CERTIFY_POINTS) ** 2
                      + (n + 2 * m) * plan_points)
    if opt.proposal_probability > 0:
        C = B + n + opt.proposals
        phases.append(_refined(C, D, opt.proposal_features, m, c, n, d) if opt.refine_proposals
                      else _draws(C, D, m, c, n, PATHWISE_NUM_FEATURES))
        phases[-1] += C * d  # the proposals themselves
    return 8 * (max(phases) + plan_points * d)


def _largest_fitting(config: TuningConfig, knob: str) -> int | None:
    """The largest value of one knob (the others as set) whose estimate fits the cap."""
    opt = config.optimizer
    lo, hi = 1, getattr(opt, knob) - 1  # every value in [1, lo] fits once lo is checked
    if estimate_plan_bytes(config, optimizer=replace(opt, **{knob: lo})) > MEMORY_CAP_BYTES:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        fits = estimate_plan_bytes(config, optimizer=replace(opt, **{knob: mid}))
        lo, hi = (mid, hi) if fits <= MEMORY_CAP_BYTES else (lo, mid - 1)
    return lo


def check_memory(config: TuningConfig) -> None:
    """Raise ConfigError when one selection would need more than :data:`MEMORY_CAP_BYTES`."""
    need = estimate_plan_bytes(config)
    if need <= MEMORY_CAP_BYTES:
        return
    opt = config.optimizer
    options = {k: _largest_fitting(config, k) for k in SIZE_KNOBS}
    fixes = {k: v for k, v in options.items() if v is not None}
    # The knob that a single, relatively smallest cut brings within the cap.
    knob = min(fixes, key=lambda k: getattr(opt, k) / fixes[k]) if fixes else "thompson_draws"
    others = ", ".join(f"{k}={getattr(opt, k)}" for k in SIZE_KNOBS if k != knob)
    hint = (f"Lower optimizer.{knob} to <= {fixes[knob]} at {others}" if fixes else
            f"Lower the sizes ({others})")
    raise field_error(
        ConfigError, f"optimizer.{knob}", getattr(opt, knob),
        f"small enough that one selection fits in {MEMORY_CAP_BYTES / 2**30:.1f} GiB "
        f"(estimated {need / 2**30:.2f} GiB for {len(config.metrics)} metrics and "
        f"{ESTIMATE_ARMS} arms)", hint + " (hz_ray.config.estimate_plan_bytes).")
