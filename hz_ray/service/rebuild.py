"""The posterior side of the service: the reader optimizer, its rebuilds and plans.

:class:`PosteriorRebuilder` owns the *reader* :class:`~hz_ray.optimizer.Optimizer`
(the GP) behind one lock. The service drains its queued changes into it and
asks for a rebuild (posterior, live-arm assessments, contender shares, readout
and, unless plans are made on demand, a Thompson plan); the result is a
:class:`Published` snapshot that the request path reads without the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hz_ray.optimizer import ArmAssessment, Optimizer, SelectionPlan
from hz_ray.records import Recommendation

PLANS_PER_HOUR_SALT = 1 << 20  # plan salt = hour * this + the plan's rank in the hour


@dataclass
class Published:
    """What a rebuild publishes; replaced as a whole, never edited (but ``used``).

    Attributes:
        plan: Thompson pick counts over the candidates (``None``: not made yet).
        assessments: Live arms' posterior views at this snapshot.
        recommendation: The readout at this snapshot.
        version: Data (ledger) version of the snapshot.
        pick_shares: Live arms' Thompson pick shares from the light plan of
            :meth:`~hz_ray.optimizer.Optimizer.contender_shares` (empty when the
            job does not stop arms that cannot win).
        used: Candidate indices not to hand out again under ``plan``: those
            at a live arm's weights when it was made, and those handed out
            since (guarded by the service lock).
        plan_inputs: The service's arm-change counter when ``plan`` was made.
    """

    plan: SelectionPlan | None
    assessments: Mapping[str, ArmAssessment]
    recommendation: Recommendation
    version: int
    pick_shares: Mapping[str, float] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)
    plan_inputs: int = -1


@dataclass(frozen=True)
class RebuildStats:
    """What one rebuild cost (for telemetry).

    Attributes:
        seconds: Wall seconds of the rebuild.
        refit: Whether GP hyperparameters were refit.
        train_rows: Observed arms the GP was conditioned on.
    """

    seconds: float
    refit: bool
    train_rows: int


class PosteriorRebuilder:
    """The reader optimizer and everything computed from it; hold :attr:`lock` to use it.

    Args:
        reader: The reader optimizer (its own ledger, fed from the service's queue).
    """

    def __init__(self, reader: Optimizer) -> None:
        self.reader = reader
        self.lock = threading.Lock()
        self.refreshes = 0
        self.refits = 0
        self.last_refresh_s: float | None = None
        self._plan_hour = -1
        self._plans = 0  # plans made in job hour _plan_hour

    def apply(self, events: Iterable[tuple[str, Any]]) -> None:
        """Feed drained changes (``deltas``, ``arm``, ``retire``) to the reader, in order."""
        for kind, payload in events:
            if kind == "deltas":
                self.reader.observe(payload)
            elif kind == "arm":
                self.reader.register_arm(*payload)
            else:
                self.reader.retire_arm(*payload)

    def plan(self, live: Sequence[str], hour: int) -> tuple[SelectionPlan, set[int]]:
        """A Thompson plan for the live arms and the candidates at their weights.

        Its salt is the job hour and the plan's rank within the hour, so a
        resumed job draws what the uninterrupted one would have drawn.
        """
        if hour != self._plan_hour:
            self._plan_hour, self._plans = hour, 0
        plan = self.reader.plan(live, salt=hour * PLANS_PER_HOUR_SALT + self._plans)
        self._plans += 1
        return plan, set(self.reader.live_candidates(plan, live))

    def rebuild(self, live: Sequence[str], hour: int, plan_inputs: int, *, with_plan: bool,
                with_shares: bool, force_refit: bool = False
                ) -> tuple[Published, RebuildStats]:
        """Rebuild the posterior and what the request path reads from it.

        Args:
            live: The live arms.
            hour: The newest job hour (salts of the plan and the contender shares).
            plan_inputs: The service's arm-change counter the live set reflects.
            with_plan: Make a Thompson plan too.
            with_shares: Compute the live arms' contender pick shares.
            force_refit: Refit the GP hyperparameters whatever the policy says.
        """
        reader = self.reader
        started = time.perf_counter()
        refits_before = reader.surrogate.num_refits
        view = reader.view()
        reader.refresh(view, force_refit=force_refit)
        plan, used = self.plan(live, hour) if with_plan else (None, set())
        assessments = {a.arm_id: a for a in reader.assess(list(live))} if live else {}
        shares = reader.contender_shares(live, salt=hour) if with_shares and live else {}
        recommendation = reader.recommend()
        elapsed = time.perf_counter() - started
        refit = reader.surrogate.num_refits > refits_before
        self.refreshes += 1
        self.refits += int(refit)
        self.last_refresh_s = elapsed
        published = Published(plan, assessments, recommendation, view.version, shares, used,
                              plan_inputs if plan is not None else -1)
        return published, RebuildStats(elapsed, refit, len(view.train_ids) - 1)
