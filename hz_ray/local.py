"""``run_local``: the single-process, deterministic, hour-by-hour driver.

Every job hour it (1) fetches what each arm's platform published since the
arm's cursor, (2) ingests the deltas (accepted and rejected records go to the
Parquet log), (3) refreshes the posterior, (4) stops arms whose lifecycle
ended, (5) launches Thompson samples into free slots, (6) records the
recommendation, (7) writes the log and an atomic checkpoint, then advances
the clock. The same seed gives the same result; a run resumes from its
checkpoint plus the log.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hz_ray.arm_feed import ArmFeed
from hz_ray.backends.base import ArmBackend
from hz_ray.clock import AcceleratedClock, Clock, SimClock, current_hour
from hz_ray.config import TuningConfig
from hz_ray.errors import StateError, field_error
from hz_ray.lifecycle import stop_reason
from hz_ray.optimizer import Optimizer
from hz_ray.records import Recommendation
from hz_ray.result import ArmSummary, RunResult
from hz_ray.storage import EventLog, load_checkpoint, replay_into, save_checkpoint
from hz_ray.torch_threads import torch_threads

logger = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.json"
OptimizerFactory = Callable[[TuningConfig], Optimizer]
LOG_DIR_NAME = "log"


@dataclass(frozen=True)
class HourProgress:
    """What happened in one job hour (passed to the progress callback)."""

    hour: int
    live_arms: int
    accepted: int
    rejected: int
    launched: tuple[str, ...]
    stopped: tuple[tuple[str, str], ...]
    recommendation: Recommendation


@dataclass
class _ArmState:
    arm_id: str
    params: dict[str, float]
    launched_hour: int
    feed: ArmFeed
    stopped_hour: int | None = None
    stop_reason: str | None = None

    def to_json(self) -> dict:
        return {"arm_id": self.arm_id, "params": self.params,
                "launched_hour": self.launched_hour, "feed": self.feed.state(),
                "stopped_hour": self.stopped_hour, "stop_reason": self.stop_reason}

    @classmethod
    def from_json(cls, raw: dict) -> _ArmState:
        return cls(raw["arm_id"], dict(raw["params"]), int(raw["launched_hour"]),
                   ArmFeed.from_state(raw["feed"]), raw["stopped_hour"], raw["stop_reason"])


class LocalDriver:
    """The state machine behind :func:`run_local` (one process, one clock).

    Args:
        config: The tuning job.
        backend: The platform or simulated world.
        clock: Shared with the backend; advanced by the driver when it is a
            :class:`SimClock`.
        run_dir: Folder for the event log and the checkpoint.
        optimizer_factory: Builds the optimiser from the config (default
            :class:`Optimizer`); benchmarks plug baselines in here.
    """

    def __init__(self, config: TuningConfig, backend: ArmBackend, clock: Clock,
                 run_dir: Path, optimizer_factory: OptimizerFactory | None = None) -> None:
        self.config = config
        self.backend = backend
        self.clock = clock
        self.run_dir = run_dir
        self.log = EventLog(run_dir / LOG_DIR_NAME)
        self.checkpoint_path = run_dir / CHECKPOINT_NAME
        self.optimizer_factory = optimizer_factory or Optimizer
        self.optimizer = self.optimizer_factory(config)
        self.arms: dict[str, _ArmState] = {}
        self.recommendations: list[tuple[int, Recommendation]] = []
        self.rejected = 0

    # ------------------------------------------------------------ persistence
    def save(self, hour: int) -> None:
        """Flush the log, then write the checkpoint atomically."""
        self.log.flush()
        save_checkpoint(self.checkpoint_path, {
            "hour": hour,
            "log_seq": self.log.last_seq,
            "optimizer": self.optimizer.state_dict(),
            "arms": [a.to_json() for a in self.arms.values()],
            "rejected": self.rejected,
            "recommendations": [(h, dataclasses.asdict(r)) for h, r in self.recommendations],
        })

    def restore(self) -> int | None:
        """Load the checkpoint and replay the log after it; returns the next hour."""
        state = load_checkpoint(self.checkpoint_path)
        if state is None:
            return None
        self.optimizer = type(self.optimizer).from_state_dict(state["optimizer"])
        replay_into(self.optimizer.ledger, self.log, since_seq=state["log_seq"])
        self.optimizer.refresh()
        self.arms = {raw["arm_id"]: _ArmState.from_json(raw) for raw in state["arms"]}
        self.rejected = int(state["rejected"])
        self.recommendations = [(int(h), _recommendation_from_json(r))
                                for h, r in state["recommendations"]]
        return int(state["hour"]) + 1

    # ------------------------------------------------------------------ hour
    def _poll(self, hour: int) -> tuple[int, int]:
        """Fetch and ingest what every arm published; returns (accepted, rejected)."""
        accepted = rejected = 0
        for arm in self.arms.values():
            if arm.stopped_hour is not None and (
                arm.feed.complete_before(arm.stopped_hour)
                or hour > arm.stopped_hour + self.config.arms.late_data_hours
            ):
                continue
            readings = self.backend.fetch(arm.arm_id, arm.feed.since_hour)
            deltas, rejections = arm.feed.absorb(readings)
            for bad in rejections:
                self.log.append_rejected(bad.payload, bad.reason)
            result = self.optimizer.observe(deltas)
            self.log.append_accepted(result.accepted)
            for record in result.rejected:
                self.log.append_rejected(record.record, record.reason)
            accepted += len(result.accepted)
            rejected += len(rejections) + len(result.rejected)
        self.rejected += rejected
        return accepted, rejected

    def _retire(self, hour: int) -> list[tuple[str, str]]:
        live = [a for a in self.arms.values() if a.stopped_hour is None]
        if not live:
            return []
        live_ids = [a.arm_id for a in live]
        assessed = {a.arm_id: a for a in self.optimizer.assess(live_ids)}
        shares: dict[str, float] = {}
        if self.config.arms.contender_stop_share > 0:
            shares = self.optimizer.contender_shares(live_ids, salt=hour)
        stopped = []
        for arm in live:
            view = assessed[arm.arm_id]
            reason = stop_reason(self.config.arms, hour - arm.launched_hour,
                                 arm.feed.hours_complete, view.p_feasible,
                                 shares.get(arm.arm_id))
            if reason is None:
                continue
            self.backend.stop(arm.arm_id)
            arm.stopped_hour, arm.stop_reason = hour, reason
            self.optimizer.retire_arm(arm.arm_id, reason)
            self.log.append_retired(arm.arm_id, reason, hour)
            stopped.append((arm.arm_id, reason))
        return stopped

    def _launch(self, hour: int) -> list[str]:
        live = [a.arm_id for a in self.arms.values() if a.stopped_hour is None]
        free = self.config.arms.slots - len(live)
        if free <= 0 or (self.config.arms.synchronous and live):
            return []
        launched = []
        for _ in range(free):
            # One slot at a time: each launched arm is a pending observation for the next.
            suggestion = self.optimizer.suggest(1, live_arms=live, salt=hour)[0]
            arm_id = f"arm-{len(self.arms):04d}"
            params = dict(suggestion.params)
            self.optimizer.register_arm(arm_id, params, hour)
            self.log.append_arm(arm_id, params, hour)
            self.log.append_suggestion(arm_id, params, suggestion.model_version)
            self.backend.launch(arm_id, params)
            self.arms[arm_id] = _ArmState(arm_id, params, hour,
                                          ArmFeed(arm_id, self.optimizer.metrics, hour))
            launched.append(arm_id)
            live.append(arm_id)
        return launched

    def step(self, hour: int) -> HourProgress:
        """Run one job hour."""
        accepted, rejected = self._poll(hour)
        self.optimizer.refresh()
        stopped = self._retire(hour)
        launched = self._launch(hour)
        recommendation = self.optimizer.recommend()
        self.recommendations.append((hour, recommendation))
        self.save(hour)
        live = sum(1 for a in self.arms.values() if a.stopped_hour is None)
        return HourProgress(hour, live, accepted, rejected, tuple(launched), tuple(stopped),
                            recommendation)

    def result(self) -> RunResult:
        """The result object of the run so far."""
        ledger = self.optimizer.ledger
        arms = {
            a.arm_id: ArmSummary(a.arm_id, a.params, a.launched_hour, a.stopped_hour,
                                 a.stop_reason, ledger.hours_observed(a.arm_id),
                                 ledger.estimates(a.arm_id))
            for a in self.arms.values()
        }
        final = self.recommendations[-1][1] if self.recommendations else self.optimizer.recommend()
        return RunResult(final, list(self.recommendations), arms, self.log.directory,
                         self.checkpoint_path, self.rejected)


def _recommendation_from_json(raw: dict) -> Recommendation:
    from hz_ray.records import ArmEstimate, MetricPosterior

    return Recommendation(
        arm_id=raw["arm_id"], params=raw["params"], objective_mean=raw["objective_mean"],
        objective_lcb=raw["objective_lcb"], p_feasible=raw["p_feasible"],
        metrics={k: MetricPosterior(**v) for k, v in raw["metrics"].items()},
        observed={k: ArmEstimate(**v) for k, v in raw["observed"].items()},
    )


def run_local(
    config: TuningConfig,
    backend: ArmBackend,
    clock: Clock | None = None,
    hours: int = 72,
    seed: int | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[HourProgress], None] | None = None,
    optimizer_factory: OptimizerFactory | None = None,
) -> RunResult:
    """Run a tuning job in this process, one job hour per step.

    Args:
        config: The tuning job.
        backend: The platform or simulated world; a simulated one must share
            ``clock``.
        clock: A :class:`SimClock` advanced one hour per step (default: a new
            one at hour 0). Other clocks are read, not advanced.
        hours: Run until this job hour (exclusive).
        seed: Overrides ``config.optimizer.seed`` when given.
        run_dir: Folder for the Parquet log and the checkpoint (default: a new
            temporary folder).
        resume: Continue from ``run_dir``'s checkpoint and log.
        progress: Called after every hour with an :class:`HourProgress`.
        optimizer_factory: Builds the optimiser (default :class:`Optimizer`);
            benchmarks use it to drive baselines through the same loop.

    Returns:
        The :class:`RunResult`, with the recommendation after every hour.
    """
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
        raise field_error(StateError, "hours", hours, "an integer >= 1")
    if seed is not None:
        config = dataclasses.replace(
            config, optimizer=dataclasses.replace(config.optimizer, seed=seed))
    clock = clock if clock is not None else SimClock()
    folder = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="hz-ray-"))
    folder.mkdir(parents=True, exist_ok=True)
    driver = LocalDriver(config, backend, clock, folder, optimizer_factory)
    with torch_threads(1):
        return _drive(driver, clock, hours, resume, progress)


def _drive(driver: LocalDriver, clock: Clock, hours: int, resume: bool,
           progress: Callable[[HourProgress], None] | None) -> RunResult:
    hour = current_hour(clock)
    next_hour = driver.restore() if resume else None
    if next_hour is None:
        driver.optimizer.refresh()
    elif isinstance(clock, SimClock) and next_hour > hour:
        clock.advance(next_hour - hour)
        hour = next_hour
    while hour < hours:
        report = driver.step(hour)
        if progress is not None:
            progress(report)
        if isinstance(clock, SimClock):
            clock.advance(1.0)
        elif isinstance(clock, AcceleratedClock):
            time.sleep(clock.seconds_until(hour + 1))
        hour += 1
    return driver.result()
