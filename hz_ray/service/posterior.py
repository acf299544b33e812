"""The central posterior service: one job's control plane, a plain thread-safe class.

Both drivers run this class: :func:`hz_ray.local.run_local` calls it in
process, step by step; :class:`actors.posterior.PosteriorActor` wraps it in a
threaded Ray actor. It imports no Ray.

Concurrency model
-----------------
The service may be called from many threads (the Ray actor's concurrency
groups ``ingest``, ``sample`` and ``control``), plus one background *refresh
thread*:

- The request path (:meth:`~PosteriorService.report`,
  :meth:`~PosteriorService.sample`, :meth:`~PosteriorService.retire`) touches
  only a *writer* :class:`~hz_ray.ledger.Ledger`, the event log and the
  :class:`~hz_ray.service.job_state.JobState`, under one short lock. It never
  touches the GP.
- Every change is also queued for the refresh thread, which owns a *reader*
  :class:`~hz_ray.optimizer.Optimizer`: it drains the queue into the reader's
  own ledger, rebuilds the posterior (``view`` -> ``refresh`` -> ``plan``),
  assesses the live arms, computes the readout, and swaps the published
  snapshot (a :class:`Published`) in one reference assignment.
- :meth:`~PosteriorService.sample` answers from the newest published
  :class:`~hz_ray.optimizer.SelectionPlan` (Thompson pick counts over the
  candidates) and so never waits for a refit. Picking a candidate with
  probability ``counts / K`` *is* a Thompson sample from the plan's ``K``
  posterior draws; candidates already handed out under the plan, or at a live
  arm's weights, are excluded.

In process (``background=False, plan_on_demand=True``) the driver calls
:meth:`~PosteriorService.refresh_now` itself, and a sample whose plan is stale
(an arm launched or stopped since) first makes a new plan, so every launch is
drawn from a posterior that knows the arms launched before it.

Durability
----------
Acks are sent only after the events they cover are in a committed Parquet
part file (:class:`~hz_ray.service.commit_log.GroupCommitLog`). So an
acknowledged delta or a handed-out arm survives a crash of the process, and an
unacknowledged one is retried by the slot and de-duplicated by the ledger. In
process, where a crash takes the slots down with the service, reports need not
wait (``durable_reports=False``; the driver commits once per hour), but a
handed-out arm or a retirement always waits: the platform is told only what the
log holds. A restarted service rebuilds itself by replaying the log (the source
of truth) and loading the newest checkpoint, which keeps the GP hyperparameters
(so a restart does not refit) but no copy of the records.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from hz_ray.config import TuningConfig
from hz_ray.errors import InputDataError, StateError, TransientError, field_error
from hz_ray.ledger import Ledger
from hz_ray.optimizer import Optimizer
from hz_ray.reading_checks import to_payload
from hz_ray.records import Recommendation
from hz_ray.result import ArmSummary, RunResult
from hz_ray.run_folder import (
    CHECKPOINT_NAME,
    LOG_DIR_NAME,
    RunFolder,
    config_fingerprint,
    is_held_by,
    job_is_running,
    new_job_id,
)
from hz_ray.service.arm_states import LAUNCHING, STOP_FAILED, STOPPING, effective_state
from hz_ray.service.commit_log import GroupCommitLog
from hz_ray.service.job_state import JobState, rejection_key
from hz_ray.service.memory import peak_rss_bytes, release_memory, rss_bytes
from hz_ray.service.messages import (
    ArmRecord,
    FeedRejectionRecord,
    HourProgress,
    Report,
    ReportAck,
    SampleReply,
    ServiceStatus,
    SlotState,
    arm_id_for,
)
from hz_ray.service.rebuild import PosteriorRebuilder, Published
from hz_ray.service.status_file import job_snapshot, write_status, write_telemetry_address
from hz_ray.storage import EventLog, load_checkpoint, replay_into, save_checkpoint
from hz_ray.telemetry import Telemetry

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hz-ray.posterior/3"
DEFAULT_CHECKPOINT_INTERVAL_S = 10.0
DEFAULT_MIN_REFRESH_INTERVAL_S = 0.25
_REFRESH_ERROR_BACKOFF_S = 1.0
_RELEASE_INTERVAL_S = 2.0  # bounds the pile-up of replaced snapshots (peak RSS)
OptimizerFactory = Callable[[TuningConfig], Optimizer]


def _seed_for(plan_seed: int, slot: int, seq: int) -> int:
    """A seed for one pick from a plan, stable per (plan, slot, seq), whatever the job id."""
    digest = hashlib.sha256(f"{plan_seed}:{slot}:{seq}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 62) - 1)


class PosteriorService:
    """One job's control plane: ingest, Thompson samples, refits, readouts, checkpoints.

    Args:
        config: The tuning job.
        run_dir: The job's run folder (``log/`` and the checkpoint live there).
        job_id: The job's id (arm ids carry it); default: the folder's
            (``job.json``), else a new one.
        restore: Rebuild from ``run_dir``'s checkpoint and log (a restart or a
            resumed job). Without it ``run_dir`` must not hold a log yet.
        metrics_port: Serve Prometheus metrics on ``metrics_address:port``
            (0 picks a free port); ``None`` serves nothing.
        metrics_address: Interface to bind; loopback by default.
        checkpoint_interval_s: Minimum wall seconds between checkpoints.
        min_refresh_interval_s: Minimum wall seconds between posterior
            rebuilds (they run back to back while data keeps arriving).
        background: Start the refresh thread (in process, the driver calls
            :meth:`refresh_now` instead).
        plan_on_demand: Make a new plan in :meth:`sample` when arms changed
            since the last one (single-threaded use only, with
            ``background=False``), instead of in every refresh.
        durable_reports: Acknowledge a report only once it is committed.
        optimizer_factory: Builds the reader optimizer (default
            :class:`~hz_ray.optimizer.Optimizer`; benchmarks plug baselines in).
        driver: Which driver runs the job (logged with the job's start).
        driver_lock: The run folder's lock, held by the driver in another process
            (Ray). While it is free the driver is gone: no arm is handed out and
            none may start ``launching`` (a dead driver's actors live on for a
            moment and must not launch arms nobody will stop).
        driver_holder: The driver's record in the folder's ``driver.json``
            (:attr:`~hz_ray.run_folder.RunFolder.holder`). With it, the driver
            also counts as gone once another process holds the lock (the final
            stops of ``hz-ray stop`` or the supervisor, which record themselves
            before they read the log).

    Raises:
        StateError: ``run_dir`` holds a log but ``restore`` is false.

    A checkpoint that does not match the job's log (torn, of another format, job
    or config, or claiming log events the log lacks) is ignored with a warning:
    the log alone rebuilds the job.
    """

    def __init__(
        self,
        config: TuningConfig,
        run_dir: str | Path,
        *,
        job_id: str | None = None,
        restore: bool = False,
        metrics_port: int | None = None,
        metrics_address: str = "127.0.0.1",
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        min_refresh_interval_s: float = DEFAULT_MIN_REFRESH_INTERVAL_S,
        background: bool = True,
        plan_on_demand: bool = False,
        durable_reports: bool = True,
        optimizer_factory: OptimizerFactory | None = None,
        driver: str = "",
        driver_lock: Path | None = None,
        driver_holder: Mapping[str, Any] | None = None,
    ) -> None:
        for name, value in (("checkpoint_interval_s", checkpoint_interval_s),
                            ("min_refresh_interval_s", min_refresh_interval_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise field_error(InputDataError, name, value, "a finite number of seconds >= 0")
        if plan_on_demand and background:
            raise field_error(InputDataError, "plan_on_demand", plan_on_demand,
                              "False when the refresh thread runs (background=True)")
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.job_id = job_id or self._folder_job_id()
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.incarnation = uuid.uuid4().hex[:12]
        self.pid = os.getpid()
        self._checkpoint_interval_s = float(checkpoint_interval_s)
        self._min_refresh_interval_s = float(min_refresh_interval_s)
        self._plan_on_demand = plan_on_demand
        self._background = background
        self._durable_reports = durable_reports
        self._optimizer_factory = optimizer_factory or Optimizer
        self._driver_lock = driver_lock
        self._driver_holder = dict(driver_holder) if driver_holder is not None else None

        self._lock = threading.Lock()      # writer ledger, log appends, job state
        self._wake = threading.Event()
        self._closing = threading.Event()

        log = EventLog(self.run_dir / LOG_DIR_NAME)
        if not restore and log.last_seq >= 0:
            raise StateError(
                f"run_dir {str(self.run_dir)!r} already holds an event log.",
                "Pass resume=True to continue that job, or use a new run_dir.")
        self.log = log
        reader, self._ledger, restored = self._load(restore)
        self.restored = restored
        self._space = reader.space
        self._rebuilder = PosteriorRebuilder(reader)
        self._gp_lock = self._rebuilder.lock  # the reader optimizer (GP) and checkpoints
        self._pending: list[tuple[str, Any]] = []
        self._replies: dict[str, SampleReply] = {}
        self._state = JobState(self.job_id)
        if restored:
            self._state.replay(log.read())
            logger.info("Restored %d arms, %d records and %d rejections from %s.",
                        len(self._state.arms), self._ledger.num_records,
                        self._state.rejected_total, self.run_dir)
        self._plan_inputs = 0
        self._checkpoint_seq_candidate = log.last_seq
        self._drained_ticket = 0
        self._checkpointed_seq = -1
        self._last_checkpoint_t = time.monotonic()
        self._refresh_errors = 0
        self._last_release_t = 0.0
        self._samples_served = 0
        self._driver = driver
        self._slot_report_hours: dict[int, int] = {}
        # The newest hour the job's previous life reached: until a slot reports in this
        # life, that is when its arms were last polled (see slot_state).
        self._restored_hour = self._state.max_hour if restored else -1

        self.telemetry = Telemetry(config.name)
        self.telemetry.record_job(self.job_id, config_fingerprint(config), config.constraints)
        self.metrics_url: str | None = None
        if metrics_port is not None:
            endpoint = self.telemetry.serve(int(metrics_port), metrics_address)
            self.metrics_url = endpoint.url
            write_telemetry_address(self.run_dir, endpoint.url, endpoint.address, endpoint.port,
                                    self.job_id, self.pid)
        _warm_up_parquet_writer()  # the first Parquet write in a process costs ~0.5 s
        self._commits = GroupCommitLog(log)
        with self._lock:
            ticket = self._commits.queue("append_job_started", self.job_id, {
                "job_id": self.job_id, "name": config.name, "driver": driver,
                "restored": restored, "fingerprint": config_fingerprint(config),
                "config": config.to_mapping()})
        self._commits.wait(ticket)
        self._published: Published | None = None
        self._thread: threading.Thread | None = None
        self.refresh_now()  # a snapshot (and, unless on demand, a plan) before any sample
        if background:
            self._thread = threading.Thread(target=self._refresh_loop, name="hz-ray-refresh",
                                            daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ restore
    def _folder_job_id(self) -> str:
        try:
            return RunFolder.read(self.run_dir).job_id
        except StateError:
            return new_job_id(self.config.name)

    def _load(self, restore: bool) -> tuple[Optimizer, Ledger, bool]:
        """Build the reader optimizer and the writer ledger; True when restored.

        The checkpoint holds what the log cannot give back cheaply: the GP
        hyperparameters and refit bookkeeping (a refit on 1000 arms takes
        minutes). The ledgers are rebuilt by replaying the Parquet log, the
        source of truth; a copy of every record in the checkpoint would take
        as long to load as the log and double the memory of writing it.
        """
        reader = self._optimizer_factory(self.config)
        ledger = Ledger.from_state_dict(reader.ledger.state_dict())  # empty, same settings
        if not restore:
            return reader, ledger, False
        state = self._matching_checkpoint()
        if state is not None:
            try:
                reader.surrogate.load_state_dict(state["surrogate"])
            except (StateError, KeyError, TypeError, ValueError, AttributeError) as exc:
                self._ignore_checkpoint(f"its GP state cannot be loaded: {exc}")
                reader = self._optimizer_factory(self.config)  # nothing half-loaded
        replay_into(ledger, self.log)
        replay_into(reader.ledger, self.log)
        return reader, ledger, True

    def _matching_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint, if it is this job's and no newer than the log; else ``None``.

        The log is the truth and the checkpoint only saves a refit, so a checkpoint
        that does not match (torn, another format, another job or config, or a log
        position the log never reached) is ignored with a warning, never fatal.
        """
        try:
            state = load_checkpoint(self.checkpoint_path)
        except StateError as exc:
            self._ignore_checkpoint(str(exc))
            return None
        if state is None:
            return None
        problem = checkpoint_problem(state, self.job_id, self.config, self.log.last_seq)
        if problem is None:
            return state
        self._ignore_checkpoint(problem)
        return None

    def _ignore_checkpoint(self, problem: str) -> None:
        logger.warning("Checkpoint %s does not match this job's event log (%s); ignoring it "
                       "and rebuilding from the log (the GP is refitted).",
                       self.checkpoint_path, problem)

    # -------------------------------------------------------------- ingest
    def report(self, report: Report) -> ReportAck:
        """Ingest one batch of hourly deltas; idempotent, cheap, never waits for a refit.

        Args:
            report: The batch.

        Returns:
            The ack (sent once the batch is durable, with ``durable_reports``).

        Every delta is screened again here (a pickled one skipped its
        validation): anything that is not a valid delta of a known arm and
        metric is quarantined in the log with its reason, never raised.

        Raises:
            InputDataError: ``report`` is not a :class:`Report`.
        """
        if not isinstance(report, Report):
            raise field_error(InputDataError, "report", type(report).__name__, "a Report")
        hour = _hour_of(report)
        deltas = report.deltas if isinstance(report.deltas, (tuple, list)) else ()
        rejections = [r for r in report.rejections if isinstance(r, FeedRejectionRecord)] \
            if isinstance(report.rejections, (tuple, list)) else []
        with self._lock:
            result = self._ledger.ingest(deltas)
            self._state.metrics_seen.update(d.metric for d in result.accepted)
            if result.accepted:
                self._commits.queue("append_accepted", result.accepted)
                self._pending.append(("deltas", result.accepted))
            new_rejections = 0
            for bad in result.rejected:
                d = bad.record
                if d is None:  # not even a delta: logged as its raw payload
                    payload = bad.raw if isinstance(bad.raw, dict) else {"raw": bad.raw}
                    new_rejections += self._quarantine(
                        rejection_key("raw", payload, bad.reason), payload, bad.reason)
                    continue
                new_rejections += self._quarantine(
                    rejection_key("delta", d.arm_id, d.metric, d.hour, d.mean, d.var, d.n,
                                  d.control_var), d, bad.reason)
            for raw in rejections:
                payload = to_payload(raw.payload)
                payload = payload if isinstance(payload, dict) else {"raw": payload}
                reason = raw.reason if isinstance(raw.reason, str) else repr(raw.reason)[:500]
                new_rejections += self._quarantine(
                    rejection_key("raw", payload, reason), payload, reason)
            state = self._state
            launched = report.launched if isinstance(report.launched, (tuple, list)) else ()
            for item in launched:  # the earlier way of telling 'live' (kept for old workers)
                if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) \
                        and state.confirm_live(item[0]):
                    self._commits.queue("append_arm_state", item[0], "live", hour)
            if isinstance(report.slot, int):
                self._slot_report_hours[report.slot] = hour
            state.hour_accepted[hour] += len(result.accepted)
            state.hour_rejected[hour] += new_rejections
            state.max_hour = max(state.max_hour, hour)
            ticket = self._commits.issued  # also covers a concurrent first copy of a retry
            version = self._ledger.version
            published = self._published
        if result.accepted:
            self._wake.set()
        if self._durable_reports:
            self._commits.wait(ticket)
        self.telemetry.record_ingest(len(result.accepted), result.duplicates,
                                     len(result.rejected) + len(rejections),
                                     [b.reason for b in result.rejected]
                                     + [r.reason for r in rejections])
        p_feasible = pick_share = None
        assessed = -1
        if published is not None:
            assessed = published.version
            view = published.assessments.get(report.arm_id) if report.arm_id else None
            p_feasible = view.p_feasible if view is not None else None
            pick_share = published.pick_shares.get(report.arm_id) if report.arm_id else None
        self.telemetry.record_slot(report.slot, last_hour=hour, p_feasible=p_feasible)
        return ReportAck(len(result.accepted), result.duplicates,
                         len(result.rejected) + len(rejections), version,
                         p_feasible, assessed, self.incarnation, pick_share)

    def _quarantine(self, key: str, record: Any, reason: str) -> int:
        """Log a rejection once (retries are not logged again); caller holds the lock."""
        if not self._state.quarantine(key):
            return 0
        self._commits.queue("append_rejected", record, reason)
        return 1

    def commit(self) -> None:
        """Return once every event so far is in a committed part file."""
        self._commits.wait()

    # -------------------------------------------------------------- sample
    def sample(self, slot: int, seq: int, hour: int) -> SampleReply | None:
        """Hand out the slot's ``seq``-th arm, a Thompson sample; idempotent per ``(slot, seq)``.

        Answers from the newest published plan, never waiting for a refit (but
        with ``plan_on_demand``, which plans first when arms changed). The arm
        is registered and logged (durably) before the reply, so a retried
        request after a crash returns the same arm.

        Args:
            slot: The requesting slot, in ``[0, config.arms.slots)``.
            seq: The slot's arm counter; must be the slot's next one for a new arm.
            hour: The slot's job hour (the arm's launch hour).

        Returns:
            The arm to launch, or ``None`` when the slot must wait: with
            ``arms.synchronous``, while an arm of an earlier batch is live.

        Raises:
            StateError: The slot still has another live arm, or ``seq`` skips ahead.
            InputDataError: A bad slot, seq or hour.
        """
        started = time.perf_counter()
        self._check_slot(slot)
        if isinstance(hour, bool) or not isinstance(hour, int) or hour < 0:
            raise field_error(InputDataError, "hour", hour, "an integer job hour >= 0")
        arm_id = arm_id_for(self.job_id, slot, seq)
        if self._plan_on_demand:
            self._ensure_plan()
        driver_alive = self._driver_alive()  # file I/O: not under the service lock
        with self._lock:
            state = self._state
            known = state.arms.get(arm_id)
            if known is not None:  # a retried request gets the same arm
                reply = self._replies.get(arm_id) or SampleReply(
                    arm_id, dict(known.params), -1, "restored", known.launched_hour)
                ticket = self._commits.issued
            else:
                expected = state.next_seq[slot]
                if seq != expected:
                    raise field_error(StateError, f"seq of slot {slot}", seq, f"{expected}",
                                      "Ask slot_state() for the slot's next seq.")
                busy = state.unsettled(slot)
                if busy:
                    raise field_error(
                        StateError, f"arm {busy[-1].arm_id!r} of slot {slot}", busy[-1].state,
                        "'stopped' before the slot samples again (one arm per slot)",
                        "Retire the slot's arm, stop it on the platform and report 'stopped'.")
                if self._state.alarm is not None or not driver_alive:
                    return None  # the job launches no more arms (see hour_progress)
                if self.config.arms.synchronous and state.must_wait_for_batch(hour):
                    return None
                reply, ticket = self._hand_out(slot, seq, arm_id, hour)
                live_count = len(state.live())
        if known is None:
            self._wake.set()
            self.telemetry.record_arms(live_count, launched=1)
        self._commits.wait(ticket)
        if known is None:
            self.telemetry.record_sample(time.perf_counter() - started)
        return reply

    def _hand_out(self, slot: int, seq: int, arm_id: str, hour: int) -> tuple[SampleReply, int]:
        """Pick the arm from the published plan and register it; the caller holds the lock."""
        published = self._published
        assert published is not None and published.plan is not None  # made by a refresh
        plan = published.plan
        index, suggestion = plan.choose(
            1, self._space, seed=_seed_for(plan.seed, slot, seq),
            exclude=sorted(published.used))[0]
        published.used.add(index)
        params = dict(suggestion.params)
        self._ledger.register_arm(arm_id, params, hour)
        self._commits.queue("append_arm", arm_id, params, hour)
        ticket = self._commits.queue("append_suggestion", arm_id, params,
                                     suggestion.model_version)
        self._state.register(ArmRecord(arm_id, slot, seq, params, hour))
        self._pending.append(("arm", (arm_id, params, hour)))
        self._plan_inputs += 1
        self._samples_served += 1
        reply = SampleReply(arm_id, params, suggestion.model_version, suggestion.source, hour)
        self._replies[arm_id] = reply
        return reply, ticket

    def retire(self, slot: int, arm_id: str, reason: str, hour: int) -> bool:
        """Record that a slot's arm stopped; idempotent.

        Args:
            slot: The arm's slot.
            arm_id: The arm.
            reason: Why (``"max_hours"``, ``"guardrail"``, ``"backend_error"``, ...).
            hour: The slot's job hour at the stop.

        Returns:
            True when the arm was live, False for a repeat.

        Raises:
            StateError: The arm is unknown or belongs to another slot.
        """
        with self._lock:
            record = self._state.arms.get(arm_id)
            if record is None or record.slot != slot:
                raise field_error(StateError, "arm_id", arm_id, f"an arm of slot {slot}")
            changed = record.live
            if changed:
                self._ledger.retire_arm(arm_id, reason)
                self._commits.queue("append_retired", arm_id, reason, int(hour))
                if not record.settled and effective_state(record.state) != STOPPING:
                    self._commits.queue("append_arm_state", arm_id, STOPPING, int(hour), reason)
                self._state.retire(arm_id, reason, int(hour))
                self._pending.append(("retire", (arm_id, reason)))
                self._plan_inputs += 1
                live_count = len(self._state.live())
            ticket = self._commits.issued
        if changed:
            self._wake.set()
            self.telemetry.record_arms(live_count, stopped={reason: 1})
        self._commits.wait(ticket)
        return changed

    def transition(self, slot: int, arm_id: str, state: str, hour: int,
                   detail: str | None = None) -> bool:
        """Log a step of an arm's lifecycle on the platform; idempotent for repeats.

        ``launching`` is durable before this returns (the slot calls the
        platform's ``launch`` only then, so the log never misses an arm that may
        be live); with ``durable_reports`` every step is.

        Args:
            slot: The arm's slot.
            arm_id: The arm.
            state: The new state (:mod:`hz_ray.service.arm_states`).
            hour: The slot's job hour.
            detail: The error of a failed attempt, or a note.

        Returns:
            True when the state changed (or a failed attempt was logged).

        Raises:
            StateError: Unknown arm, another slot's arm, or a step the
                lifecycle does not allow.
        """
        if state == LAUNCHING:
            self._refuse_launch_without_driver()
        with self._lock:
            record = self._state.arms.get(arm_id)
            if record is None or record.slot != slot:
                raise field_error(StateError, "arm_id", arm_id, f"an arm of slot {slot}")
            changed = self._state.move(arm_id, state, detail, hour=hour)
            if changed:
                self._commits.queue("append_arm_state", arm_id, state, int(hour), detail)
            stuck = len(self._state.stuck_stops())
            ticket = self._commits.issued
        if changed and state == STOP_FAILED:
            self.telemetry.record_stop_failure()
        self.telemetry.record_stuck_stops(stuck)
        if self._durable_reports or state == LAUNCHING:
            self._commits.wait(ticket)
        if state == LAUNCHING:
            # Asked again once 'launching' is durable: if the final stops took the folder
            # meanwhile, they may have read the log before this arm's step, so it must not
            # reach the platform. If the driver still holds it here, any final stops record
            # themselves later and then read the log, which shows this arm as launching.
            self._refuse_launch_without_driver()
        return changed

    def _refuse_launch_without_driver(self) -> None:
        """Raise :class:`TransientError` unless the job's driver still holds the folder."""
        if not self._driver_alive():
            raise TransientError("No arm may be launched: the job's driver is gone (the run "
                                 "folder's lock is free or held by its final stops).",
                                 "The job is ending; its arms are being stopped.")

    def _driver_alive(self) -> bool:
        """Whether the job's driver still holds the run folder.

        False once its process let go of the lock (it died), or another process
        took the lock (the final stops of a dead driver).
        """
        if self._driver_lock is None:
            return True
        folder = self._driver_lock.parent
        if self._driver_holder is not None:
            alive = is_held_by(folder, self._driver_holder)
        else:
            alive = job_is_running(folder)
        if not alive:
            logger.error("Job %s: the driver is gone (%s is free or held by another process); "
                         "no more arms are launched.", self.job_id, self._driver_lock)
        return alive

    def slot_state(self, slot: int) -> SlotState:
        """Everything a (re)starting slot needs to continue ``slot``.

        Its ``last_hour`` is the hour the slot's arms were last polled: the hour
        of the slot's last report to this service, or, before its first report
        in this life of the service, the newest hour of the job's previous life
        (-1 for a new job). Not the newest hour heard of from anyone: after a
        resume the driver's readout and the other slots run ahead of a slot whose
        worker comes up late, and its stopped arms must still be polled for what
        the platform published while the job was down.
        """
        self._check_slot(slot)
        with self._lock:
            arms = tuple(a for a in self._state.arms.values() if a.slot == slot)
            last_polled = self._slot_report_hours.get(slot, self._restored_hour)
            return SlotState(slot, self._state.next_seq[slot], arms, last_polled)

    def _check_slot(self, slot: int) -> None:
        if isinstance(slot, bool) or not isinstance(slot, int) \
                or not 0 <= slot < self.config.arms.slots:
            raise field_error(InputDataError, "slot", slot,
                              f"an integer in [0, {self.config.arms.slots})")

    # ------------------------------------------------------------- readout
    def recommend(self) -> Recommendation:
        """The newest launch readout (from the newest posterior snapshot)."""
        published = self._published
        assert published is not None
        return published.recommendation

    def hour_progress(self, hour: int) -> HourProgress:
        """What happened in job ``hour``; logs the hour's readout (once per hour)."""
        with self._lock:
            state = self._state
            recommendation = self.recommend()
            if hour not in state.recommendations:
                state.recommendations[hour] = recommendation
                self._commits.queue("append_recommendation", hour, recommendation)
            self._check_metric_silence(hour)
            progress = HourProgress(
                hour=hour, live_arms=len(state.live()), accepted=state.hour_accepted.get(hour, 0),
                rejected=state.hour_rejected.get(hour, 0),
                launched=tuple(state.hour_launched.get(hour, ())),
                stopped=tuple(state.hour_stopped.get(hour, ())),
                recommendation=recommendation, data_version=self._ledger.version,
                posterior_version=self._published.version if self._published else -1,
                stuck_stops=len(state.stuck_stops()), alarm=self._state.alarm)
            state.max_hour = max(state.max_hour, hour)
            published = self._published
            snapshot = job_snapshot(
                job_id=self.job_id, name=self.config.name, driver=self._driver, hour=hour,
                state=state, ledger=self._ledger,
                assessments=published.assessments if published else {},
                recommendation=recommendation, metrics_url=self.metrics_url,
                slot_report_hours=self._slot_report_hours, alarm=state.alarm)
        write_status(self.run_dir, snapshot)
        self.telemetry.job_hour.labels(self.config.name).set(hour)
        return progress

    def _check_metric_silence(self, hour: int) -> None:
        """Raise the alarm when a modelled metric never arrived; the caller holds the lock."""
        if self._state.alarm is not None:
            return
        after = self.config.arms.metric_silence_hours
        silent = self._state.silent_metrics(self.config.metrics, hour, after)
        if not silent:
            return
        self._state.alarm = (
            f"metric(s) {silent} had no accepted reading from any arm in the {after} job "
            f"hours since the first launch (hour {self._state.first_launch_hour}); metrics "
            f"reported: {sorted(self._state.metrics_seen)}. No more arms are launched. Check "
            f"the metric names in objective/constraints/extra_metrics against what the "
            f"platform publishes, or raise arms.metric_silence_hours.")
        logger.error("Job %s: %s", self.job_id, self._state.alarm)
        self._commits.queue("append_job_alarm", self.job_id, self._state.alarm, int(hour))

    @property
    def alarm(self) -> str | None:
        """Why the job launches no more arms, or ``None``."""
        return self._state.alarm

    def recommendations(self) -> list[tuple[int, Recommendation]]:
        """The readout logged after every job hour so far, in hour order."""
        with self._lock:
            return sorted(self._state.recommendations.items(), key=lambda item: item[0])

    def last_hour(self) -> int:
        """The newest job hour whose readout was logged (-1 before any)."""
        with self._lock:
            return max(self._state.recommendations, default=-1)

    def status(self) -> ServiceStatus:
        """Counters for tools and tests."""
        with self._lock:
            published, state = self._published, self._state
            return ServiceStatus(
                job=self.job_id, incarnation=self.incarnation, pid=self.pid,
                restored=self.restored, data_version=self._ledger.version,
                posterior_version=published.version if published else -1,
                num_records=self._ledger.num_records, arms=len(state.arms),
                live_arms=len(state.live()), rejected=state.rejected_total,
                refreshes=self._rebuilder.refreshes, refits=self._rebuilder.refits,
                last_refresh_s=self._rebuilder.last_refresh_s,
                refresh_errors=self._refresh_errors,
                log_seq=self.log.last_seq, metrics_url=self.metrics_url,
                extra={"samples_served": float(self._samples_served),
                       "durable_seq": float(self._commits.durable_seq),
                       "rss_bytes": float(rss_bytes()),
                       "peak_rss_bytes": float(peak_rss_bytes())})

    def arm_summaries(self) -> list[ArmSummary]:
        """Every arm with its own aggregated data, in launch order."""
        with self._lock:
            ledger, arms = self._ledger, self._state.arms
            out = []
            for arm_id, info in ledger.arms.items():
                record = arms.get(arm_id)
                launched = record.launched_hour if record else int(info.registered_hour or 0)
                out.append(ArmSummary(
                    arm_id, dict(info.params), launched,
                    record.stopped_hour if record else None,
                    record.stop_reason if record else info.retired_reason,
                    ledger.hours_observed(arm_id), ledger.estimates(arm_id)))
            return out

    def result(self) -> RunResult:
        """The job's :class:`RunResult` so far (the newest readout is the final one)."""
        return RunResult(
            recommendation=self.recommend(), recommendations=self.recommendations(),
            arms={a.arm_id: a for a in self.arm_summaries()},
            log_path=self.run_dir / LOG_DIR_NAME, checkpoint_path=self.checkpoint_path,
            rejected=self.rejected)

    def ledger_state(self) -> dict[str, Any]:
        """The writer ledger's JSON-safe state (tests compare drivers with it)."""
        with self._lock:
            return self._ledger.state_dict()

    @property
    def rejected(self) -> int:
        """Records rejected so far, over every life of the job."""
        return self._state.rejected_total

    # ------------------------------------------------------------- refresh
    def _drain(self) -> tuple[tuple[str, ...], int]:
        """Take the queued changes (under the lock) into the reader; hold the GP lock.

        Returns:
            The live arm ids and the arm-change counter they reflect.
        """
        with self._lock:
            events, self._pending = self._pending, []
            live = tuple(a.arm_id for a in self._state.live())
            # Every committed event came from an intent queued before now, so it is among
            # the events drained here: a checkpoint may claim it.
            self._checkpoint_seq_candidate = self._commits.durable_seq
            self._drained_ticket = self._commits.issued
            inputs = self._plan_inputs
        self._rebuilder.apply(events)
        return live, inputs

    def refresh_now(self, force_refit: bool = False) -> int:
        """Rebuild the posterior, assessments, readout and (unless on demand) the plan.

        Args:
            force_refit: Refit the GP hyperparameters whatever the refit policy
                says (the slow path; samples keep being served meanwhile).

        Returns:
            The data version of the new snapshot.
        """
        with self._gp_lock:
            live, inputs = self._drain()
            published, stats = self._rebuilder.rebuild(
                live, self._state.max_hour, inputs, with_plan=not self._plan_on_demand,
                with_shares=self.config.arms.contender_stop_share > 0,
                force_refit=force_refit)
            self._published = published
        if self._background and \
                time.monotonic() - self._last_release_t >= _RELEASE_INTERVAL_S:
            # A long-lived actor bounds its peak RSS; in process the driver's run ends soon.
            self._last_release_t = time.monotonic()
            release_memory()
        self.telemetry.record_refit(stats.seconds, stats.refit, published.version,
                                    stats.train_rows)
        self.telemetry.record_recommendation(published.recommendation, published.version,
                                             self._state.max_hour)
        return published.version

    def _ensure_plan(self) -> None:
        """Plan now if arms changed since the published plan (``plan_on_demand`` only)."""
        with self._lock:
            published = self._published
            fresh = published is not None and published.plan is not None \
                and published.plan_inputs == self._plan_inputs
            data_pending = any(kind == "deltas" for kind, _ in self._pending)
        if fresh:
            return
        if data_pending:
            self.refresh_now()
        with self._gp_lock:
            live, inputs = self._drain()
            plan, used = self._rebuilder.plan(live, self._state.max_hour)
            assert self._published is not None
            self._published = replace(self._published, plan=plan, used=used, plan_inputs=inputs)

    def checkpoint_now(self) -> bool:
        """Write a checkpoint of the reader's state if it advanced; returns True if written."""
        with self._gp_lock:
            seq = self._checkpoint_seq_candidate
            if seq <= self._checkpointed_seq:
                return False
            # The reader must hold nothing the log lacks (a replay of the log alone must
            # rebuild the same job), so commit what it drained before saving.
            self._commits.wait(self._drained_ticket)
            state = {"format": CHECKPOINT_FORMAT, "job_id": self.job_id,
                     "config": self.config.to_mapping(), "log_seq": seq,
                     "written_at_s": time.time(),
                     "surrogate": self._rebuilder.reader.surrogate.state_dict()}
            save_checkpoint(self.checkpoint_path, state)
            del state
            self._checkpointed_seq = seq
            self._last_checkpoint_t = time.monotonic()
        return True

    def _refresh_loop(self) -> None:
        last = 0.0
        while not self._closing.is_set():
            self._wake.wait(timeout=self._checkpoint_interval_s or None)
            if self._closing.is_set():
                break
            pause = self._min_refresh_interval_s - (time.monotonic() - last)
            if pause > 0 and self._closing.wait(pause):
                break
            self._wake.clear()
            try:
                with self._lock:
                    stale = bool(self._pending)
                if stale:
                    last = time.monotonic()
                    self.refresh_now()
                if time.monotonic() - self._last_checkpoint_t >= self._checkpoint_interval_s:
                    self.checkpoint_now()
                    release_memory()
            except Exception:  # the loop must survive any one bad rebuild
                self._refresh_errors += 1
                logger.exception("Posterior rebuild failed; serving the previous snapshot.")
                self._closing.wait(_REFRESH_ERROR_BACKOFF_S)
                self._wake.set()

    # ----------------------------------------------------------- lifecycle
    def finish(self) -> Recommendation:
        """Rebuild on data not yet in the posterior (if any), commit, checkpoint; the readout."""
        with self._lock:
            stale = any(kind == "deltas" for kind, _ in self._pending)
        if stale:
            self.refresh_now()
        self.commit()
        self.checkpoint_now()
        release_memory()
        return self.recommend()

    def close(self) -> None:
        """Stop the refresh thread, flush the log, stop serving metrics."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._commits.close()
        self.telemetry.shutdown()

    def ready(self) -> str:
        """Return the incarnation id once constructed (the driver waits on this)."""
        return self.incarnation


def checkpoint_problem(state: Mapping[str, Any], job_id: str, config: TuningConfig,
                       last_seq: int) -> str | None:
    """Why a checkpoint does not belong to a job's log, or ``None`` when it does.

    Args:
        state: The checkpoint as loaded.
        job_id: The job's id.
        config: The job's config.
        last_seq: The last ``seq`` of the job's log (the checkpoint may not be ahead of it).

    Returns:
        ``None``, or the problem in words (another format, job or config, a log
        position the log never reached, no GP state).
    """
    seq = state.get("log_seq")
    saved_config = state.get("config")
    if state.get("format") != CHECKPOINT_FORMAT:
        return f"its format is {state.get('format')!r}, not {CHECKPOINT_FORMAT!r}"
    if state.get("job_id") != job_id:
        return f"it is job {state.get('job_id')!r}'s, not {job_id!r}'s"
    if not isinstance(saved_config, dict) or _mapping_text(saved_config) != \
            _mapping_text(config.to_mapping()):
        return "it was written with another config"
    if isinstance(seq, bool) or not isinstance(seq, int) or not -1 <= seq <= last_seq:
        return f"its log_seq {seq!r} is not in the log (whose last is {last_seq})"
    if not isinstance(state.get("surrogate"), dict):
        return "it holds no GP state"
    return None


def _mapping_text(mapping: Any) -> str:
    """A config mapping as canonical JSON (tuples and lists alike), for comparisons."""
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"), default=str)


def _warm_up_parquet_writer() -> None:
    """Write an empty log table to memory, so the first real commit is not slow."""
    import pyarrow.parquet as pq

    from hz_ray.storage import EVENT_SCHEMA

    pq.write_table(EVENT_SCHEMA.empty_table(), io.BytesIO())


def _hour_of(report: Report) -> int:
    """The report's job hour (0 when a pickled report carries junk there)."""
    hour = report.hour
    return hour if isinstance(hour, int) and not isinstance(hour, bool) and hour >= 0 else 0
