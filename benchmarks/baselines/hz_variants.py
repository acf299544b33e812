"""hz-ray variants for method studies (subclasses; hz_ray itself is not edited).

:class:`ReadoutStudyOptimizer` is hz-ray unchanged in its search, but every hour
it also computes several alternative readout rules and logs their picks in
``readout_log`` (``{rule: [(hour_index, arm_id, params), ...]}``). Readouts do
not feed back into the search, so one run scores every rule on identical data;
``benchmarks/quality.py`` scores the logged picks against the truth. The
official recommendation is hz-ray's own rule.

Rules (all over arms with at least ``recommend_min_hours`` hours of data, and
the control; posterior = the shared per-metric GP, which pools nearby arms):

- ``hz``: hz-ray's own :meth:`Optimizer.recommend` (whatever it is now).
- ``p95`` / ``p90`` / ``p99``: max posterior mean gain with P(feasible) >= 0.95 / 0.90 / 0.99.
- ``lcb-p95``: max one-sided 95% lower bound of the gain with P(feasible) >= 0.95.
- ``pbest``: the arm (or control) most often best-and-feasible in 512 joint
  posterior draws over the eligible arms (probability of being the best feasible).
- ``pbest-f95``: the same, among arms with P(feasible) >= 0.95.
- ``sticky-p95``: ``p95``, but the previous pick is kept unless the new one's
  posterior gain is higher by more than one posterior sd of the difference
  (independence approximation) or the previous one drops below P(feasible) 0.95.
- ``p95-h3``: ``p95`` with arms of >= 3 hours eligible.
- ``p95-pooled`` / ``p90-pooled``: ``p95`` / ``p90`` with eligibility by the hours of
  every arm that ran the same weights (re-runs of a Thompson favourite add up).
"""

from __future__ import annotations

import math

import torch

from hz_ray.optimizer import Optimizer
from hz_ray.records import CONTROL_ARM_ID, Recommendation
from hz_ray.thompson import pick_counts

READOUT_RULES = ("hz", "p95", "p90", "p99", "lcb-p95", "pbest", "pbest-f95", "sticky-p95",
                 "p95-h3", "p95-pooled", "p90-pooled")
PBEST_DRAWS = 512
Z95 = 1.6448536269514722


class ReadoutStudyOptimizer(Optimizer):
    """hz-ray with extra readout rules logged every hour (see the module docstring)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.readout_log: dict[str, list] = {r: [] for r in READOUT_RULES}
        self._calls = 0
        self._sticky: str | None = None

    def _eligible(self, min_hours: int) -> list[str]:
        return [a for a in self.ledger.arms if self.ledger.hours_observed(a) >= min_hours
                and len(self.ledger.estimates(a)) == len(self.metrics)]

    def _pooled_eligible(self, min_hours: int) -> list[str]:
        """One arm per distinct weight vector whose arms' hours add up to ``min_hours``."""
        groups: dict[tuple, list[str]] = {}
        for a in self.ledger.arms:
            if len(self.ledger.estimates(a)) != len(self.metrics):
                continue
            key = tuple(round(float(v), 9) for v in self.space.encode(self.ledger.arms[a].params))
            groups.setdefault(key, []).append(a)
        out = []
        for members in groups.values():
            hours = [self.ledger.hours_observed(a) for a in members]
            if sum(hours) >= min_hours:
                out.append(members[max(range(len(members)), key=hours.__getitem__)])
        return out

    def _log(self, rule: str, arm_id: str | None) -> None:
        arm_id = arm_id or CONTROL_ARM_ID
        params = (self.space.base_params if arm_id == CONTROL_ARM_ID
                  else dict(self.ledger.arms[arm_id].params))
        self.readout_log[rule].append((self._calls, arm_id, params))

    def recommend(self) -> Recommendation:
        official = super().recommend()
        try:
            self._study(official)
        finally:
            self._calls += 1
        return official

    def _study(self, official: Recommendation) -> None:
        self._log("hz", official.arm_id)
        opt = self.config.optimizer
        snap = self.snapshot()
        for rule, hours in (("main", opt.recommend_min_hours),
                            ("h3", min(3, opt.recommend_min_hours)),
                            ("pooled", opt.recommend_min_hours)):
            ids = (self._pooled_eligible(hours) if rule == "pooled"
                   else self._eligible(hours))
            if not ids:
                if rule == "main":
                    for r in READOUT_RULES[1:-3]:
                        self._log(r, None)
                    self._sticky = None
                elif rule == "h3":
                    self._log("p95-h3", None)
                else:
                    self._log("p95-pooled", None)
                    self._log("p90-pooled", None)
                continue
            X = self.space.encode_many([self.ledger.arms[a].params for a in ids])
            mean, var = snap.mean_and_var(X)
            gain, sd = self.outcomes.gain_posterior(mean, var)
            pf = self.outcomes.p_feasible(mean, var)

            def best(score: torch.Tensor, ok: torch.Tensor, ids=ids) -> str | None:
                s = score.masked_fill(~ok, -math.inf)
                i = int(torch.argmax(s))
                return ids[i] if math.isfinite(float(s[i])) and float(s[i]) > 0 else None

            if rule == "h3":
                self._log("p95-h3", best(gain, pf >= 0.95))
                continue
            if rule == "pooled":
                self._log("p95-pooled", best(gain, pf >= 0.95))
                self._log("p90-pooled", best(gain, pf >= 0.90))
                continue
            self._log("p95", best(gain, pf >= 0.95))
            self._log("p90", best(gain, pf >= 0.90))
            self._log("p99", best(gain, pf >= 0.99))
            self._log("lcb-p95", best(gain - Z95 * sd, pf >= 0.95))
            # Probability of being the best feasible (control as candidate 0, delta 0).
            Xc = torch.cat([self.space.control_point().unsqueeze(0), X])
            draws = snap.sample(Xc, PBEST_DRAWS, seed=1000 + self._calls)
            draws[:, 0, :] = 0.0
            w, G, b = (self.outcomes.objective_weights, self.outcomes.constraint_matrix,
                       self.outcomes.constraint_bounds)
            counts = pick_counts(draws, w, G, b)
            i = int(torch.argmax(counts))
            self._log("pbest", None if i == 0 else ids[i - 1])
            # The same draws, among the control and the arms with P(feasible) >= 0.95.
            keep = torch.cat([torch.tensor([True]), pf >= 0.95])
            allowed = torch.nonzero(keep).flatten()
            sub = pick_counts(draws[:, allowed, :], w, G, b)
            j = int(allowed[int(torch.argmax(sub))])
            self._log("pbest-f95", None if j == 0 else ids[j - 1])
            # Sticky p95.
            new = best(gain, pf >= 0.95)
            prev = self._sticky
            if prev is not None and prev in ids and new is not None and new != prev:
                k, n = ids.index(prev), ids.index(new)
                diff_sd = math.sqrt(float(sd[k]) ** 2 + float(sd[n]) ** 2)
                if float(pf[k]) >= 0.95 and float(gain[n] - gain[k]) <= diff_sd:
                    new = prev
            self._sticky = new
            self._log("sticky-p95", new)
