"""The HyperZero optimiser facade: observe, refresh, suggest, recommend.

A plain, deterministic, in-memory object (Vizier's ``Designer`` rule): the
local driver and the Ray posterior actor wrap the same class.

- :meth:`Optimizer.observe` ingests hourly deltas (cheap, idempotent).
- :meth:`Optimizer.refresh` rebuilds the posterior snapshot from the ledger,
  refitting GP hyperparameters only when the refit policy says so. The Ray
  actor runs it in the background; the local driver calls it every hour.
- :meth:`Optimizer.suggest` draws new arms by constrained Thompson sampling
  from the latest snapshot. It never changes the optimiser's state.
- :meth:`Optimizer.recommend` is the launch readout.

The control arm is a training point of every metric GP with delta exactly 0
(by definition) and a tiny noise: it anchors the posterior at the base weights.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hz_ray.config import TuningConfig, config_from_mapping
from hz_ray.errors import StateError, field_error
from hz_ray.ledger import IngestResult, Ledger
from hz_ray.outcomes import Z95_ONE_SIDED, Outcomes, nondominated
from hz_ray.records import (
    CONTROL_ARM_ID,
    HourlyDelta,
    MetricPosterior,
    ParetoReadout,
    Recommendation,
)
from hz_ray.space import DTYPE, ParameterSpace
from hz_ray.surrogate import PosteriorSnapshot, RefitPolicy, Surrogate
from hz_ray.thompson import (
    Objective,
    choose_by_counts,
    local_search,
    pick_counts,
    propose_candidates,
)

STATE_SCHEMA_VERSION = 1
CONTROL_VAR_FRACTION = 1e-3  # control's noise as a fraction of var_floor: "known exactly"
PROPOSAL_ANCHORS = 3
CONTENDER_DRAWS = 256  # draws of the light plan behind contender stops
CERTIFY_POINTS = 128  # perturbations per round of the certifiable-optimum search
READOUT_CHUNK = 256  # arms whose P(feasible) the readout computes at a time, best gain first
PREFERENCE_SALT = 0x5EED_C4EB  # seeds the per-draw Pareto preferences from a draw seed


@dataclass(frozen=True)
class Suggestion:
    """One arm to launch.

    Attributes:
        params: Weights by name.
        x: The point in the unit cube (``dim`` floats).
        pick_share: Fraction of the K Thompson draws that picked this point.
        model_version: Ledger version of the snapshot it was drawn from.
        source: ``"bucket"``, ``"arm"`` (re-run of an earlier arm's weights)
            or ``"proposal"``.
    """

    params: Mapping[str, float]
    x: tuple[float, ...]
    pick_share: float
    model_version: int
    source: str


@dataclass(frozen=True)
class ArmAssessment:
    """The posterior view of one arm, for lifecycle decisions and readouts."""

    arm_id: str
    hours: int
    gain_mean: float
    gain_sd: float
    p_feasible: float


@dataclass(frozen=True)
class DataView:
    """An immutable copy of what the posterior is built from.

    Taken under the caller's lock in microseconds-milliseconds, so a refit can
    run outside it while new deltas keep arriving.

    Attributes:
        version: Ledger version when the view was taken.
        arm_ids: Every registered arm, in registration order.
        arm_params: Their weights.
        arm_hours: Their distinct hours of data.
        train_ids: Rows of ``X``: the control first, then arms with data on
            every metric.
        X: ``n x dim`` unit-cube points of the training rows.
        Y: ``n x m`` aggregated deltas.
        Yvar: ``n x m`` their variances (squared standard errors).
        loadings: ``m x n x H`` loadings of the rows on the control error of
            each of ``H`` job hours (:meth:`Ledger.control_loadings`; zero for
            the control row and for rows without the control's share of the
            variance), or None when no row has it or the option is off.
    """

    version: int
    arm_ids: tuple[str, ...]
    arm_params: tuple[Mapping[str, float], ...]
    arm_hours: tuple[int, ...]
    train_ids: tuple[str, ...]
    X: torch.Tensor
    Y: torch.Tensor
    Yvar: torch.Tensor
    loadings: torch.Tensor | None = None


@dataclass(frozen=True)
class SelectionPlan:
    """The Thompson pick distribution of one snapshot (Algorithm 1's counts).

    Attributes:
        candidates: ``N x dim`` candidate points.
        sources: Per candidate, ``"bucket"``, ``"arm"``, ``"proposal"`` or
            ``"certify"`` (the certifiable optimum, ``optimizer.certify_share``).
        counts: ``N`` pick counts over the K draws (the certifiable optimum's
            count is the reserved share, not picks).
        model_version: Ledger version of the snapshot.
        seed: Seed the plan was drawn with.
    """

    candidates: torch.Tensor
    sources: tuple[str, ...]
    counts: torch.Tensor
    model_version: int
    seed: int

    def choose(self, n: int, space: ParameterSpace, seed: int,
               exclude: Sequence[int] = ()) -> list[tuple[int, Suggestion]]:
        """Draw ``n`` candidates in proportion to their pick counts.

        Args:
            n: Number of arms.
            space: Decodes candidates to weights.
            seed: Seed of the draw.
            exclude: Candidate indices already handed out under this plan;
                they are skipped while other picked candidates remain.

        Returns:
            ``(candidate index, Suggestion)`` pairs.
        """
        counts = self.counts.clone()
        if exclude:
            remaining = counts.clone()
            remaining[list(exclude)] = 0
            if int((remaining > 0).sum()) >= n:
                counts = remaining
        total = float(self.counts.sum())
        chosen = choose_by_counts(counts, n, seed=seed)
        return [
            (i, Suggestion(
                params=space.decode(self.candidates[i]),
                x=tuple(float(v) for v in self.candidates[i]),
                pick_share=float(self.counts[i]) / total,
                model_version=self.model_version,
                source=self.sources[i],
            ))
            for i in chosen
        ]


def _derive_seed(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 62) - 1)


class Optimizer:
    """HyperZero: GP per metric delta + constrained Thompson sampling.

    Args:
        config: The tuning job.
    """

    def __init__(self, config: TuningConfig) -> None:
        self.config = config
        self.space = ParameterSpace.from_config(config)
        self.outcomes = Outcomes.from_config(config)
        self.metrics = config.metrics
        opt = config.optimizer
        self.ledger = Ledger.for_job(self.metrics, opt)
        self.surrogate = Surrogate(
            self.metrics, self.space.dim,
            RefitPolicy(min_new_points=opt.refit_min_new_points, growth=opt.refit_growth),
        )
        self.bucket = self._initial_bucket()
        self._snapshot: PosteriorSnapshot | None = None
        self._view: DataView | None = None

    # ----------------------------------------------------------------- data
    def _initial_bucket(self) -> torch.Tensor:
        """The initial candidates, ``bucket_size x dim``, seeded.

        Half scrambled Sobol points over the whole cube (global search), half
        a Gaussian cloud around the control (sd ``local_scale`` in cube units).
        Guardrails relative to control usually leave a small feasible region
        around the production weights, so the local half finds the first
        feasible lifts early while the global half keeps exploring.
        """
        opt = self.config.optimizer
        n_local = opt.bucket_size // 2
        engine = torch.quasirandom.SobolEngine(self.space.dim, scramble=True, seed=opt.seed)
        global_points = engine.draw(opt.bucket_size - n_local, dtype=DTYPE)
        generator = torch.Generator().manual_seed(opt.seed)
        noise = torch.randn(n_local, self.space.dim, generator=generator, dtype=DTYPE)
        local_points = (self.space.control_point() + opt.local_scale * noise).clamp(0.0, 1.0)
        return torch.cat([global_points, local_points])

    def register_arm(
        self, arm_id: str, params: Mapping[str, float], hour: int | None = None
    ) -> None:
        """Record that an arm was launched with these weights (idempotent)."""
        if arm_id == CONTROL_ARM_ID:
            raise field_error(StateError, "arm_id", arm_id, "not the reserved control id")
        self.ledger.register_arm(arm_id, {k: float(v) for k, v in params.items()}, hour)

    def retire_arm(self, arm_id: str, reason: str) -> None:
        """Record that an arm stopped; its data stay in the model."""
        self.ledger.retire_arm(arm_id, reason)

    def observe(self, deltas: Iterable[HourlyDelta]) -> IngestResult:
        """Ingest hourly deltas; idempotent per ``(arm_id, metric, hour)``.

        Returns:
            What was accepted, what was a duplicate and what was rejected (with
            the reason); rejected records never stop the accepted ones.
        """
        return self.ledger.ingest(deltas)

    @property
    def data_version(self) -> int:
        """Version of the ledger; bumps on every accepted record."""
        return self.ledger.version

    def view(self) -> DataView:
        """Copy what the posterior is built from (cheap; take it under a lock).

        Arms enter the training rows once they have data on every metric; the
        control is always the first row, with delta 0 and a tiny variance.
        """
        arms = self.ledger.arms
        arm_ids = tuple(arms)
        train_ids = [CONTROL_ARM_ID]
        xs = [self.space.control_point()]
        control_var = self.config.optimizer.var_floor * CONTROL_VAR_FRACTION
        ys = [[0.0] * len(self.metrics)]
        yvars = [[control_var] * len(self.metrics)]
        units: list[list[int]] = []  # N and hours of each arm's estimates, for pooled_noise
        hours: list[list[int]] = []
        for arm_id, info in arms.items():
            estimates = self.ledger.estimates(arm_id)
            if any(m not in estimates for m in self.metrics):
                continue
            train_ids.append(arm_id)
            xs.append(self.space.encode(info.params))
            ys.append([estimates[m].mean for m in self.metrics])
            yvars.append([estimates[m].sem ** 2 for m in self.metrics])
            units.append([estimates[m].n for m in self.metrics])
            hours.append([estimates[m].hours for m in self.metrics])
        Yvar = torch.tensor(yvars, dtype=DTYPE)
        if self.config.optimizer.pooled_noise and units:
            Yvar[1:] = self._pooled_variances(Yvar[1:], torch.tensor(units, dtype=DTYPE),
                                              torch.tensor(hours, dtype=DTYPE))
        loadings = (self._control_loadings(train_ids, Yvar)
                    if self.config.optimizer.shared_control_noise else None)
        return DataView(
            version=self.ledger.version,
            arm_ids=arm_ids,
            arm_params=tuple(dict(arms[a].params) for a in arm_ids),
            arm_hours=tuple(self.ledger.hours_observed(a) for a in arm_ids),
            train_ids=tuple(train_ids),
            X=torch.stack(xs),
            Y=torch.tensor(ys, dtype=DTYPE),
            Yvar=Yvar,
            loadings=loadings,
        )

    def _pooled_variances(self, Yvar: torch.Tensor, units: torch.Tensor,
                          hours: torch.Tensor) -> torch.Tensor:
        """``n x m`` variances of the arms' estimates from the per-unit variance pooled over arms.

        Arm ``i``'s own ``sem_i**2`` times its units ``N_i`` estimates one per-unit
        variance; its mean over the arms, over ``N_i``, is the arm's variance, floored at
        ``var_floor / hours_i`` as the ledger's own estimate is
        (:meth:`hz_ray.delta.DeltaSummary.estimate`). See ``optimizer.pooled_noise``.

        Args:
            Yvar: ``n x m`` the training arms' own variances (squared standard errors; the
                control's row left out).
            units: ``n x m`` their test units ``N_i`` (:attr:`hz_ray.records.ArmEstimate.n`).
            hours: ``n x m`` their hours of data.
        """
        per_unit = (Yvar * units).mean(dim=0)
        return torch.maximum(per_unit / units, self.config.optimizer.var_floor / hours)

    def _control_loadings(self, train_ids: Sequence[str], Yvar: torch.Tensor
                          ) -> torch.Tensor | None:
        """``m x n x H`` loadings of the training rows on each hour's control error.

        Every arm of an hour is compared with the same control group, so the
        control's sampling error of that hour is shared by their deltas; the
        GP gets the noise covariance ``diag + U U^T`` (see
        :class:`hz_ray.surrogate.PosteriorSnapshot`). A row's shared variance
        is capped at its total variance (the floors only ever raise the total).
        """
        metric_idx: list[int] = []
        row_idx: list[int] = []
        hour_of: list[int] = []
        values: list[float] = []
        for i, arm_id in enumerate(train_ids):
            if arm_id == CONTROL_ARM_ID:
                continue
            for j, metric in enumerate(self.metrics):
                loads = self.ledger.control_loadings(arm_id, metric)
                if loads:
                    metric_idx += [j] * len(loads)
                    row_idx += [i] * len(loads)
                    hour_of += loads.keys()
                    values += loads.values()
        if not values:
            return None
        hours, column = torch.unique(torch.tensor(hour_of), return_inverse=True)
        U = torch.zeros(len(self.metrics), len(train_ids), hours.numel(), dtype=DTYPE)
        U[torch.tensor(metric_idx), torch.tensor(row_idx), column] = torch.tensor(
            values, dtype=DTYPE)
        shared = (U * U).sum(dim=-1).T  # n x m
        cap = torch.where(shared > Yvar, (Yvar / shared.clamp_min(1e-300)).sqrt(),
                          torch.ones_like(shared))
        return U * cap.T.unsqueeze(-1)

    # ------------------------------------------------------------ posterior
    def refresh(
        self, view: DataView | None = None, force_refit: bool = False
    ) -> PosteriorSnapshot:
        """Rebuild the posterior snapshot.

        Hyperparameters are refit by marginal likelihood only when the refit
        policy says so (or ``force_refit``); otherwise the GPs are re-conditioned
        on the new aggregates under the stored hyperparameters. Only this
        method touches the surrogate, so a background thread may run it on a
        ``view`` taken under a lock while ``observe`` goes on.

        Args:
            view: Data to build from; default a fresh :meth:`view`.
            force_refit: Refit hyperparameters whatever the policy says.

        Returns:
            The new snapshot (also kept as the optimiser's current one).
        """
        view = self.view() if view is None else view
        snapshot = self.surrogate.update(view.X, view.Y, view.Yvar, force_refit=force_refit,
                                         loadings=view.loadings)
        self._snapshot, self._view = snapshot, view
        return snapshot

    def snapshot(self) -> PosteriorSnapshot:
        """The latest snapshot; raises StateError before the first refresh."""
        if self._snapshot is None or self._view is None:
            raise StateError("The optimizer has no posterior yet.",
                             "Call refresh() after observe() and before suggest()/recommend().")
        return self._snapshot

    @property
    def snapshot_version(self) -> int:
        """Ledger version of the latest posterior snapshot (-1 before any)."""
        return -1 if self._view is None else self._view.version

    @property
    def is_stale(self) -> bool:
        """True when data arrived after the latest snapshot."""
        return self.snapshot_version != self.ledger.version

    def assess(self, arm_ids: Sequence[str] | None = None) -> list[ArmAssessment]:
        """Posterior gain and P(feasible) of registered arms (pooled through the GP).

        Args:
            arm_ids: Arms to assess; default all registered arms.
        """
        snapshot = self.snapshot()
        ids = list(self.ledger.arms) if arm_ids is None else list(arm_ids)
        if not ids:
            return []
        arms = self.ledger.arms  # a copy: take it once
        X = self.space.encode_many([arms[a].params for a in ids])
        return self._assess_points(snapshot, ids, X,
                                   [self.ledger.hours_observed(a) for a in ids])

    def _assess_points(self, snapshot: PosteriorSnapshot, ids: Sequence[str], X: torch.Tensor,
                       hours: Sequence[int]) -> list[ArmAssessment]:
        mean, var = snapshot.mean_and_var(X)
        gain_mean, gain_sd = self.outcomes.gain_posterior(mean, var)
        p_feas = self.outcomes.p_feasible(mean, var)
        return [
            ArmAssessment(a, int(hours[i]), float(gain_mean[i]), float(gain_sd[i]),
                          float(p_feas[i]))
            for i, a in enumerate(ids)
        ]

    # -------------------------------------------------------------- suggest
    def _fantasized(
        self, snapshot: PosteriorSnapshot, view: DataView, live_arms: Sequence[str]
    ) -> tuple[PosteriorSnapshot, dict[str, int]]:
        """Add live arms that have no data yet as partial observations.

        A live arm without data will be observed soon; treating it as a
        pseudo-observation at the posterior mean with the noise it will have
        after ``min_hours`` stops Thompson sampling from piling more arms onto
        the same spot (the kriging believer, with realistic noise).

        Returns:
            The snapshot, and the training row of each arm (and the control) in it.
        """
        rows = {a: i for i, a in enumerate(view.train_ids)}
        index = {a: i for i, a in enumerate(view.arm_ids)}
        pending = [a for a in live_arms if a in index and a not in rows]
        if not pending:
            return snapshot, rows
        X = self.space.encode_many([view.arm_params[index[a]] for a in pending])
        mean, _ = snapshot.mean_and_var(X)
        var = self._hourly_variance(view) / self.config.arms.min_hours
        for k, a in enumerate(pending):
            rows.setdefault(a, len(view.train_ids) + k)
        return snapshot.condition(X, mean, var.expand_as(mean).clone()), rows

    def _hourly_variance(self, view: DataView) -> torch.Tensor:
        """Typical variance of one hour's delta, per metric (``m``-vector).

        The median over observed arms of ``sem^2 * hours``; ``var_floor``
        before any arm has data.
        """
        index = {a: i for i, a in enumerate(view.arm_ids)}
        rows = [r for r, a in enumerate(view.train_ids) if a in index]
        floor = torch.full((len(self.metrics),), self.config.optimizer.var_floor, dtype=DTYPE)
        if not rows:
            return floor
        hours = torch.tensor([view.arm_hours[index[view.train_ids[r]]] for r in rows],
                             dtype=DTYPE).clamp_min(1)
        per_hour = view.Yvar[rows] * hours.unsqueeze(-1)
        return per_hour.median(dim=0).values

    def _anchors(self, snapshot: PosteriorSnapshot, view: DataView, arm_X: torch.Tensor,
                 arm_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Incumbent arms (best posterior gain, P(feasible) >= 0.5) plus the control.

        ``arm_rows``: each arm's training row in ``snapshot`` or -1 (optional, for speed).
        """
        points = [self.space.control_point()]
        rows = [i for i, hours in enumerate(view.arm_hours) if hours > 0]
        if rows:
            best = self._best_feasible(snapshot, arm_X, rows, 0.5, PROPOSAL_ANCHORS,
                                       tie_key=lambda i: -i, training_rows=arm_rows)
            points += [arm_X[i] for i in best]
        return torch.stack(points)

    def _best_feasible(self, snapshot: PosteriorSnapshot, X: torch.Tensor, rows: Sequence[int],
                       threshold: float, count: int, tie_key: Any,
                       positive_gain: bool = False,
                       training_rows: torch.Tensor | None = None) -> list[int]:
        """The ``count`` rows of ``X`` with the largest posterior gain and P(feasible) >= threshold.

        The same answer as assessing every row and ranking, at the cost of the means of all
        rows (``O(N n)``) and the variances of the best rows only (``O(n^2)`` each), taken
        :data:`READOUT_CHUNK` at a time in descending order of gain until ``count`` qualify.

        Args:
            snapshot: The posterior.
            X: ``N x d`` points (unit cube).
            rows: Rows of ``X`` that may qualify.
            threshold: Smallest P(feasible).
            count: Rows wanted.
            tie_key: Key of a row that breaks ties in gain (larger first).
            positive_gain: Only rows with a posterior gain > 0 qualify.
            training_rows: Optional ``N`` indices: the training row that ``X[i]`` is, or -1
                (see :meth:`PosteriorSnapshot.mean`).

        Returns:
            Up to ``count`` row indices, best first.
        """
        if not rows:
            return []
        index = torch.tensor(list(rows), dtype=torch.long)
        known = None if training_rows is None else training_rows[index]
        gain = self.outcomes.gain(snapshot.mean(X[index], known)).tolist()
        order = sorted(range(len(rows)), key=lambda r: (gain[r], tie_key(rows[r])),
                       reverse=True)
        if positive_gain:
            order = [r for r in order if gain[r] > 0]
        found: list[int] = []
        for start in range(0, len(order), READOUT_CHUNK):
            chunk = [rows[r] for r in order[start:start + READOUT_CHUNK]]
            mean, var = snapshot.mean_and_var(X[torch.tensor(chunk, dtype=torch.long)])
            p_feas = self.outcomes.p_feasible(mean, var).tolist()
            found += [row for row, p in zip(chunk, p_feas, strict=True) if p >= threshold]
            if len(found) >= count:
                break
        return found[:count]

    def plan(self, live_arms: Sequence[str] = (), salt: int = 0, *,
             with_proposals: bool = True, num_draws: int | None = None) -> SelectionPlan:
        """Run Algorithm 1 (with Algorithm 3's proposals) on the latest snapshot.

        The candidates are the initial bucket, every arm launched so far and,
        with probability ``proposal_probability``, GP-scored proposals around
        the incumbents and globally. K joint posterior draws give, per draw,
        the feasible argmax of the gain (else the least violation); the pick
        counts estimate each candidate's probability of being the best
        feasible one. Reads only the snapshot's :class:`DataView`, never the
        live ledger, and does not change state.

        Args:
            live_arms: Arms live now; those without data count as partly
                observed.
            salt: Extra entropy for callers that plan several times on the
                same data.
            with_proposals: Allow Algorithm 3's proposals (False: bucket and
                arms only, e.g. for :meth:`contender_shares`).
            num_draws: Thompson draws K; default ``optimizer.thompson_draws``.
        """
        snapshot, view = self.snapshot(), self._view
        assert view is not None  # narrowed by snapshot()
        opt = self.config.optimizer
        snapshot, row_of = self._fantasized(snapshot, view, live_arms)
        seed = _derive_seed(opt.seed, view.version, len(view.arm_ids),
                            self._ordinals(live_arms), salt)
        rng = random.Random(seed)
        arm_X = self.space.encode_many(view.arm_params)
        arm_rows = torch.tensor([row_of.get(a, -1) for a in view.arm_ids], dtype=torch.long)
        sources = ["bucket"] * self.bucket.shape[0] + ["arm"] * arm_X.shape[0]
        candidates = torch.cat([self.bucket, arm_X])
        rows = torch.cat([torch.full((self.bucket.shape[0],), -1, dtype=torch.long), arm_rows])
        if (with_proposals and opt.proposal_probability > 0
                and rng.random() < opt.proposal_probability):
            proposal_seed = rng.getrandbits(62)
            proposals = propose_candidates(
                snapshot, candidates, self._anchors(snapshot, view, arm_X, arm_rows),
                self.outcomes.thompson_objective(proposal_seed ^ PREFERENCE_SALT),
                self.outcomes.constraint_matrix,
                self.outcomes.constraint_bounds, num_proposals=opt.proposals,
                num_draws=opt.proposal_draws, max_added=opt.max_proposals_added,
                local_scale=opt.local_scale, seed=proposal_seed,
                refine=opt.refine_proposals, num_features=opt.proposal_features,
                training_rows=rows)
            candidates = torch.cat([candidates, proposals])
            rows = torch.cat([rows, torch.full((proposals.shape[0],), -1, dtype=torch.long)])
            sources += ["proposal"] * proposals.shape[0]
        draw_seed = rng.getrandbits(62)
        certify_seed = rng.getrandbits(62)
        k = opt.thompson_draws if num_draws is None else num_draws
        objective = self.outcomes.thompson_objective(draw_seed ^ PREFERENCE_SALT)
        if opt.picks_beat_control:
            with_control = torch.cat([self.space.control_point().unsqueeze(0), candidates])
            control_row = torch.tensor([row_of.get(CONTROL_ARM_ID, -1)], dtype=torch.long)
            draws = snapshot.sample(with_control, k, seed=draw_seed,
                                    training_rows=torch.cat([control_row, rows]))
            counts = self._counts_beating_control(draws, objective)
        else:
            draws = snapshot.sample(candidates, k, seed=draw_seed, training_rows=rows)
            counts = pick_counts(draws, objective, self.outcomes.constraint_matrix,
                                 self.outcomes.constraint_bounds)
        if with_proposals and opt.certify_share > 0:
            point = self._certifiable_optimum(snapshot, candidates, certify_seed, rows)
            if point is not None:
                total = int(counts.sum())
                reserved = max(1, round(opt.certify_share * total / (1 - opt.certify_share)))
                candidates = torch.cat([candidates, point.unsqueeze(0)])
                counts = torch.cat([counts, torch.tensor([reserved], dtype=counts.dtype)])
                sources.append("certify")
        return SelectionPlan(candidates, tuple(sources), counts, view.version, seed)

    def _certifiable_optimum(self, snapshot: PosteriorSnapshot, candidates: torch.Tensor,
                             seed: int, training_rows: torch.Tensor | None = None
                             ) -> torch.Tensor | None:
        """The point the readout would want to have run: best posterior gain, certified.

        Thompson picks, refined on their draws, sit on the guardrail boundary of
        each draw, where no arm can reach P(feasible) >= ``feasibility_threshold``.
        The certifiable optimum is the candidate with the largest posterior mean
        gain among those the posterior already gives that probability (and a
        gain > 0), moved by :func:`~hz_ray.thompson.local_search` (three rounds
        of :data:`CERTIFY_POINTS` perturbations) to the best certified point
        near it. Running it is what lets the readout recommend
        it. None when no candidate is certified with a positive gain.
        """
        opt = self.config.optimizer
        threshold = opt.feasibility_threshold

        def score(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """``(gain, shortfall of P(feasible) below the threshold)``, each ``X.shape[:-1]``."""
            mean, var = snapshot.mean_and_var(X.reshape(-1, X.shape[-1]))
            gain, _ = self.outcomes.gain_posterior(mean, var)
            shortfall = (threshold - self.outcomes.p_feasible(mean, var)).clamp_min(0.0)
            return gain.reshape(X.shape[:-1]), shortfall.reshape(X.shape[:-1])

        best = self._best_feasible(snapshot, candidates, range(candidates.shape[0]), threshold,
                                   1, tie_key=lambda i: -i, positive_gain=True,
                                   training_rows=training_rows)
        if not best:
            return None
        start = candidates[best[0]]
        return local_search(score, start.unsqueeze(0), opt.local_scale, seed,
                            points_per_round=CERTIFY_POINTS)[0]

    def _counts_beating_control(self, draws: torch.Tensor, objective: Objective
                                ) -> torch.Tensor:
        """Algorithm 1 counts with the control as a rival that is never launched.

        Args:
            draws: ``K x (1 + N) x m`` draws; index 0 is the control, whose
                deltas are zero by definition (set here exactly, in place: the
                caller's draws are changed, to spare a copy of ``K N m``).
            objective: The draws' objective (:meth:`Outcomes.thompson_objective`).

        Returns:
            ``N`` counts: draws each candidate wins against the control and the
            others; the plain counts over the ``N`` if the control wins all.
        """
        draws[:, 0, :] = 0.0
        w, G, b = objective, self.outcomes.constraint_matrix, self.outcomes.constraint_bounds
        counts = pick_counts(draws, w, G, b)[1:]
        if int(counts.sum()) == 0:
            counts = pick_counts(draws[:, 1:, :], w, G, b)
        return counts

    def suggest(self, n: int, live_arms: Sequence[str] = (), salt: int = 0) -> list[Suggestion]:
        """Draw ``n`` arms to launch by constrained Thompson sampling.

        :meth:`plan` then ``n`` distinct picks sampled in proportion to their
        counts (traffic in proportion to Thompson picks). Does not change state.

        Args:
            n: Number of arms, >= 1.
            live_arms: Arms live now; those without data count as partly
                observed.
            salt: Extra entropy, e.g. the job hour.

        Returns:
            ``n`` suggestions (when fewer candidates were picked, the most
            picked repeat).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise field_error(StateError, "n", n, "an integer >= 1")
        plan = self.plan(live_arms, salt)
        return [s for _, s in plan.choose(n, self.space, seed=plan.seed + 1,
                                          exclude=self.live_candidates(plan, live_arms))]

    def contender_shares(self, live_arms: Sequence[str], salt: int = 0) -> dict[str, float]:
        """Live arms' Thompson pick shares, for ``arms.contender_stop_share``.

        A light plan: the bucket and the arms, no proposals, at most
        :data:`CONTENDER_DRAWS` draws (shares are compared with a threshold
        of a few percent, so 256 draws resolve them to about 0.4%). Only arms
        with the hours a recommendation needs (``recommend_min_hours``) get a
        share: an arm stopped before that could never be recommended.

        Args:
            live_arms: The live arms.
            salt: Extra entropy, e.g. the job hour.

        Returns:
            ``{arm_id: share}`` for the live arms old enough to be judged.
        """
        need = self.config.optimizer.recommend_min_hours
        judged = [a for a in live_arms if self.ledger.hours_observed(a) >= need]
        if not judged:
            return {}
        k = min(CONTENDER_DRAWS, self.config.optimizer.thompson_draws)
        plan = self.plan(live_arms, salt, with_proposals=False, num_draws=k)
        return self.pick_shares(plan, judged)

    def pick_shares(self, plan: SelectionPlan, arm_ids: Sequence[str]) -> dict[str, float]:
        """Each arm's share of a plan's Thompson picks: P(its weights are the best feasible).

        Picks are summed over every candidate at the arm's weights: the
        candidates hold one entry per launched arm, and re-runs of the same
        weights are separate entries whose draws are identical, so the picks
        fall on whichever comes first.

        Args:
            plan: A plan from :meth:`plan`.
            arm_ids: Registered arms.

        Returns:
            ``{arm_id: share in [0, 1]}``.
        """
        known = self.ledger.arms  # a copy: take it once
        ids = [a for a in arm_ids if a in known]
        if not ids:
            return {}
        same = self._at_arm_weights(plan, ids)  # arms x candidates
        total = float(plan.counts.sum()) or 1.0
        picks = (same.to(plan.counts.dtype) * plan.counts.unsqueeze(0)).sum(dim=1)
        return {a: float(picks[i]) / total for i, a in enumerate(ids)}

    def _ordinals(self, arm_ids: Sequence[str]) -> tuple[int, ...]:
        """Registration positions of arms (-1 if unknown): seeds that ignore the job id."""
        position = {a: i for i, a in enumerate(self.ledger.arms)}
        return tuple(position.get(a, -1) for a in arm_ids)

    def live_candidates(self, plan: SelectionPlan, live_arms: Sequence[str]) -> list[int]:
        """Indices of candidates whose weights are already live in some slot.

        Traffic in proportion to Thompson picks is spread over time (a picked
        arm is re-run after it stops), not by running copies side by side.
        """
        known = self.ledger.arms  # a copy: take it once
        live = [a for a in live_arms if a in known]
        if not live:
            return []
        at_live = self._at_arm_weights(plan, live).any(dim=0)
        return [int(i) for i in torch.nonzero(at_live).flatten()]

    def _at_arm_weights(self, plan: SelectionPlan, arm_ids: Sequence[str]) -> torch.Tensor:
        """``len(arm_ids) x N`` bool: candidate ``j`` has arm ``i``'s weights (registered arms)."""
        arms = self.ledger.arms  # a copy: take it once
        X = self.space.encode_many([arms[a].params for a in arm_ids])
        return torch.cdist(X, plan.candidates) < 1e-9

    # ------------------------------------------------------------ recommend
    def recommend(self) -> Recommendation:
        """The launch readout: best arm by posterior gain with P(feasible) >= threshold.

        Only arms with at least ``recommend_min_hours`` hours of data qualify.
        The gain's posterior pools the evidence of nearby arms through the GP.
        When no arm qualifies with a positive gain, the control is recommended.
        """
        opt = self.config.optimizer
        arms = self.ledger.arms  # a copy: take it once
        ids = list(arms)
        rows = [i for i, a in enumerate(ids)
                if self.ledger.hours_observed(a) >= opt.recommend_min_hours]
        best = []
        if rows:
            X = self.space.encode_many([arms[a].params for a in ids])
            snapshot = self.snapshot()
            assert self._view is not None  # narrowed by snapshot()
            row_of = {a: i for i, a in enumerate(self._view.train_ids)}
            train_rows = torch.tensor([row_of.get(a, -1) for a in ids], dtype=torch.long)
            best = self._best_feasible(snapshot, X, rows, opt.feasibility_threshold, 1,
                                       tie_key=lambda i: ids[i], positive_gain=True,
                                       training_rows=train_rows)
        if not best:
            return self._readout(CONTROL_ARM_ID, self.space.base_params)
        return self._readout(ids[best[0]], arms[ids[best[0]]].params)

    def pareto_readout(self) -> ParetoReadout:
        """The feasible Pareto front among the arms run, and the arm the preference picks.

        An arm qualifies with ``recommend_min_hours`` hours of data and a posterior
        ``P(feasible) >= feasibility_threshold``; the front is the qualifying arms whose
        posterior mean deltas (signed) no other qualifying arm weakly dominates with one
        strict improvement. The preferred arm is :meth:`recommend`'s (the largest
        Chebyshev value at the preference, when positive).

        Raises:
            StateError: When the objective is not a Pareto objective.
        """
        objective = self.config.objective
        if not objective.is_pareto:
            raise field_error(StateError, "objective", objective.to_mapping(),
                              "a pareto objective for a Pareto readout",
                              "Use recommend() for a weighted-sum objective.")
        opt = self.config.optimizer
        arms = self.ledger.arms
        ids = [a for a in arms if self.ledger.hours_observed(a) >= opt.recommend_min_hours]
        qualified: list[Recommendation] = []
        signed: list[list[float]] = []
        if ids:
            snapshot = self.snapshot()
            X = self.space.encode_many([arms[a].params for a in ids])
            for start in range(0, len(ids), READOUT_CHUNK):
                mean, var = snapshot.mean_and_var(X[start:start + READOUT_CHUNK])
                p_feas = self.outcomes.p_feasible(mean, var)
                gain, gain_sd = self.outcomes.gain_posterior(mean, var)
                for j in (p_feas >= opt.feasibility_threshold).nonzero().reshape(-1).tolist():
                    arm_id = ids[start + j]
                    qualified.append(self._recommendation(
                        arm_id, arms[arm_id].params, mean[j], var[j], float(gain[j]),
                        float(gain_sd[j]), float(p_feas[j])))
                    signed.append((mean[j, self.outcomes.pareto_index]
                                   * self.outcomes.pareto_signs).tolist())
        order = sorted(range(len(qualified)), key=lambda i: (signed[i][0], qualified[i].arm_id))
        values = torch.tensor([signed[i] for i in order], dtype=DTYPE).reshape(
            len(order), self.outcomes.pareto_index.numel())
        on_front = nondominated(values)
        ranked = tuple(qualified[i] for i in order)
        return ParetoReadout(
            objectives=tuple(objective.pareto), signs=dict(objective.signs),
            preference=dict(objective.preference_shares),
            front=tuple(r for r, keep in zip(ranked, on_front.tolist(), strict=True) if keep),
            qualified=ranked, preferred=self.recommend())

    def _recommendation(self, arm_id: str, params: Mapping[str, float], mean: torch.Tensor,
                        var: torch.Tensor, gain: float, gain_sd: float,
                        p_feasible: float) -> Recommendation:
        """A readout record of one arm from its posterior (``mean``, ``var``: ``m`` each)."""
        return Recommendation(
            arm_id=arm_id, params=dict(params), objective_mean=gain,
            objective_lcb=gain - Z95_ONE_SIDED * gain_sd, p_feasible=p_feasible,
            metrics={m: MetricPosterior(float(mean[j]), math.sqrt(max(float(var[j]), 0.0)))
                     for j, m in enumerate(self.metrics)},
            observed=self.ledger.estimates(arm_id) if arm_id != CONTROL_ARM_ID else {})

    def _readout(self, arm_id: str, params: Mapping[str, float]) -> Recommendation:
        X = self.space.encode(params).unsqueeze(0)
        mean, var = self.snapshot().mean_and_var(X)
        gain_mean, gain_sd = self.outcomes.gain_posterior(mean, var)
        p_feas = self.outcomes.p_feasible(mean, var)
        if arm_id == CONTROL_ARM_ID:
            gain_mean, gain_sd, p_feas = gain_mean * 0, gain_sd * 0, p_feas * 0 + 1
        return self._recommendation(arm_id, params, mean[0], var[0], float(gain_mean[0]),
                                    float(gain_sd[0]), float(p_feas[0]))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """JSON-safe, versioned state: config, ledger and GP hyperparameters."""
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "config": self.config.to_mapping(),
            "ledger": self.ledger.state_dict(),
            "surrogate": self.surrogate.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Optimizer:
        """Rebuild an optimiser from :meth:`state_dict` (the snapshot is refreshed)."""
        version = state.get("schema_version")
        if version != STATE_SCHEMA_VERSION:
            raise field_error(StateError, "schema_version", version,
                              f"{STATE_SCHEMA_VERSION}", "The state was written by another "
                              "hz-ray version; replay the Parquet log instead.")
        optimizer = cls(config_from_mapping(state["config"]))
        optimizer.ledger = Ledger.from_state_dict(state["ledger"])
        optimizer.surrogate.load_state_dict(state["surrogate"])
        optimizer.refresh()
        return optimizer
