"""Shared pieces of the baseline optimisers.

Every baseline subclasses :class:`hz_ray.optimizer.Optimizer`, so ``run_local``
drives it through the same control plane (``optimizer_factory=``). It keeps the base class's data
path: the same ledger of per-arm delta aggregates (N-weighted mean and
delta-method standard error of every metric, the control as a row with delta 0),
the same :meth:`view`, and the base class's per-metric GP snapshot, which the
driver also uses for its guardrail stops. A baseline overrides how arms are
proposed (:meth:`BatchedOptimizer._generate`) and, where it has its own rule,
how the final arm is read out (:meth:`recommend`).

The posterior service launches every arm from the optimiser's
:meth:`~hz_ray.optimizer.Optimizer.plan` (a pick from its candidates). A batch
baseline's plan is its current batch: one generated for every free slot
(``slots - len(live_arms)``, the way an A/B platform launches a batch) when the
data changed or the batch is used up, each point picked at most once; a point
leaves the batch when an arm is registered at it. The light plans behind
contender stops (``with_proposals=False``) stay hz-ray's, as the guardrail
stops do.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import torch

from hz_ray.config import TuningConfig
from hz_ray.optimizer import Optimizer, SelectionPlan
from hz_ray.outcomes import Z95_ONE_SIDED
from hz_ray.records import CONTROL_ARM_ID, MetricPosterior, Recommendation

DTYPE = torch.float64


def derive_seed(*parts: object) -> int:
    """A 62-bit seed from any parts (stable across processes)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 62) - 1)


class BatchedOptimizer(Optimizer):
    """An Optimizer whose arms come in batches from :meth:`_generate`.

    Subclasses implement ``_generate(k, live_arms, seed) -> k x dim`` points of the
    unit cube (or fewer) and may override :meth:`recommend`.
    """

    #: Name of the readout rule, for the benchmark report.
    readout_rule = "hz-ray's (posterior mean gain, P(feasible) >= threshold)"

    def __init__(self, config: TuningConfig) -> None:
        super().__init__(config)
        self._queue: list[torch.Tensor] = []
        self._queue_key: tuple | None = None
        self._batches = 0

    # ------------------------------------------------------------------- plan
    def plan(self, live_arms: Sequence[str] = (), salt: int = 0, *,
             with_proposals: bool = True, num_draws: int | None = None) -> SelectionPlan:
        """The current batch as a plan (every point one pick), generated when needed."""
        if not with_proposals or num_draws is not None:  # contender shares: hz-ray's GP plan
            return super().plan(live_arms, salt, with_proposals=with_proposals,
                                num_draws=num_draws)
        if self._queue_key != self.ledger.version or not self._queue:
            k = max(1, self.config.arms.slots - len(live_arms))
            seed = derive_seed(self.config.optimizer.seed, type(self).__name__, salt,
                               len(self.ledger.arms), self._batches)
            points = self._generate(k, list(live_arms), seed)
            self._batches += 1
            self._queue = [p.clamp(0.0, 1.0).to(DTYPE) for p in points]
            self._queue_key = self.ledger.version
            if len(self._queue) < k:  # the generator gave fewer: fill at random
                gen = torch.Generator().manual_seed(seed % 2**31)
                self._queue += list(torch.rand(k - len(self._queue), self.space.dim,
                                               generator=gen, dtype=DTYPE))
        candidates = torch.stack(self._queue)
        return SelectionPlan(candidates, (type(self).__name__,) * len(self._queue),
                             torch.ones(len(self._queue), dtype=torch.long),
                             self.ledger.version, derive_seed(salt, self._batches))

    def register_arm(self, arm_id: str, params: Mapping[str, float],
                     hour: int | None = None) -> None:
        """Register the arm; the batch point it was launched at is used up."""
        super().register_arm(arm_id, params, hour)
        if self._queue:
            x = self.space.encode(params)
            gaps = [float((q - x).abs().max()) for q in self._queue]
            best = min(range(len(gaps)), key=gaps.__getitem__)
            if gaps[best] < 1e-9:
                self._queue.pop(best)

    def _generate(self, k: int, live_arms: list[str], seed: int) -> torch.Tensor:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def pending_points(self, live_arms: Sequence[str]) -> torch.Tensor | None:
        """Live arms without data yet (``p x dim``), or None: the pending points."""
        view = self.view()
        trained = set(view.train_ids)
        pending = [a for a in live_arms if a in self.ledger.arms and a not in trained]
        if not pending:
            return None
        return self.space.encode_many([self.ledger.arms[a].params for a in pending])

    def eligible_arms(self) -> list[str]:
        """Arms that completed their minimum run: at least ``min(recommend_min_hours,
        arms.min_hours)`` hours of data, so an arm the driver's guardrail stopped
        early still counts as an observed trial (the BO view of a completed trial)."""
        need = min(self.config.optimizer.recommend_min_hours, self.config.arms.min_hours)
        return [a for a in self.ledger.arms if self.ledger.hours_observed(a) >= need
                and len(self.ledger.estimates(a)) == len(self.metrics)]

    def posterior_at(self, arm_ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance (``n x m``) of the arms under the shared GP."""
        X = self.space.encode_many([self.ledger.arms[a].params for a in arm_ids])
        return self.snapshot().mean_and_var(X)

    def readout(self, arm_id: str, params: Mapping[str, float]) -> Recommendation:
        """A Recommendation for an arm (or the control), from the shared GP."""
        X = self.space.encode(params).unsqueeze(0)
        mean, var = self.snapshot().mean_and_var(X)
        gain_mean, gain_sd = self.outcomes.gain_posterior(mean, var)
        p_feas = self.outcomes.p_feasible(mean, var)
        is_control = arm_id == CONTROL_ARM_ID
        g, s, p = ((0.0, 0.0, 1.0) if is_control
                   else (float(gain_mean[0]), float(gain_sd[0]), float(p_feas[0])))
        return Recommendation(
            arm_id=arm_id, params=dict(params), objective_mean=g,
            objective_lcb=g - Z95_ONE_SIDED * s, p_feasible=p,
            metrics={m: MetricPosterior(float(mean[0, j]), math.sqrt(max(float(var[0, j]), 0.0)))
                     for j, m in enumerate(self.metrics)},
            observed={} if is_control else self.ledger.estimates(arm_id),
        )

    def control_readout(self) -> Recommendation:
        """Keep the production weights."""
        return self.readout(CONTROL_ARM_ID, self.space.base_params)

    # --------------------------------------------------------------- readouts
    def recommend_best_observed(self) -> Recommendation:
        """Best observed arm: largest observed gain among arms whose observed
        (point-estimate) deltas meet every constraint; the control if none gains."""
        best, best_gain = None, 0.0
        G, b = self.outcomes.constraint_matrix, self.outcomes.constraint_bounds
        for arm_id in self.eligible_arms():
            est = self.ledger.estimates(arm_id)
            d = torch.tensor([est[m].mean for m in self.metrics], dtype=DTYPE)
            if G.shape[0] and bool(((G @ d) < b).any()):
                continue
            gain = float(self.outcomes.gain(d))
            if gain > best_gain:
                best, best_gain = arm_id, gain
        if best is None:
            return self.control_readout()
        return self.readout(best, self.ledger.arms[best].params)

    def recommend_posterior(self, *, constrained: str = "probability",
                            penalty: float = 0.0) -> Recommendation:
        """Best arm by the shared GP's posterior mean.

        Args:
            constrained: ``"probability"``: P(feasible) >= the config's
                ``feasibility_threshold``; ``"mean"``: posterior-mean deltas meet
                every constraint; ``"none"``: constraints ignored.
            penalty: Subtract ``penalty * violation(posterior mean)`` from the gain.
        """
        ids = self.eligible_arms()
        if not ids:
            return self.control_readout()
        mean, var = self.posterior_at(ids)
        gain, _ = self.outcomes.gain_posterior(mean, var)
        score = gain - penalty * self.outcomes.violation(mean)
        if constrained == "probability":
            ok = self.outcomes.p_feasible(mean, var) >= self.config.optimizer.feasibility_threshold
        elif constrained == "mean":
            ok = self.outcomes.violation(mean) <= 0
        else:
            ok = torch.ones_like(score, dtype=torch.bool)
        score = score.masked_fill(~ok, -math.inf)
        i = int(torch.argmax(score))
        if not math.isfinite(float(score[i])) or float(score[i]) <= 0:
            return self.control_readout()
        return self.readout(ids[i], self.ledger.arms[ids[i]].params)
