"""The central posterior's logic: a plain, thread-safe service class (no Ray needed).

:class:`PosteriorService` is the whole logic of the central actor and runs
without Ray (tests drive it directly); :mod:`actors.posterior` wraps it in the
Ray actor shell.

Concurrency model
-----------------
The service is called from many threads (a threaded Ray actor with
concurrency groups ``ingest``, ``sample`` and ``control``), plus one
background *refresh thread*:

- The request path (:meth:`~PosteriorService.report`,
  :meth:`~PosteriorService.sample`, :meth:`~PosteriorService.retire`) touches
  only a *writer* :class:`~hz_ray.ledger.Ledger`, the event log and small
  dicts, under one short lock. It never touches the GP.
- Every change is also queued for the refresh thread, which owns a *reader*
  :class:`~hz_ray.optimizer.Optimizer`: it drains the queue into the reader's
  own ledger, rebuilds the posterior (``view`` -> ``refresh`` -> ``plan``),
  assesses the live arms, computes the readout, and swaps the published
  snapshot (a :class:`_Published`) in one reference assignment.
- :meth:`~PosteriorService.sample` answers from the newest published
  :class:`~hz_ray.optimizer.SelectionPlan` (Thompson pick counts over the
  candidates) and so never waits for a refit. Picking a candidate with
  probability ``counts / K`` *is* a Thompson sample from the plan's ``K``
  posterior draws; indices already handed out under the plan are excluded.

Durability
----------
Acks are sent only after the events they cover are in a committed Parquet
part file (group commit: the first waiting thread flushes for everyone). So
an acknowledged delta or a handed-out arm survives a crash of the process,
and an unacknowledged one is retried by the worker and de-duplicated by the
ledger. A restarted actor rebuilds itself in ``__init__`` by replaying the log
(the source of truth) and loading the newest checkpoint, written atomically by
the refresh thread, which keeps the GP hyperparameters (so a restart does not
refit) but no copy of the records.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.messages import (
    ArmRecord,
    HourSummary,
    Report,
    ReportAck,
    SampleReply,
    ServiceStatus,
    SlotState,
    arm_id_for,
    parse_arm_id,
)
from actors.posterior import CHECKPOINT_NAME, LOG_DIR_NAME
from hz_ray.config import TuningConfig
from hz_ray.errors import HzRayError, InputDataError, StateError, TransientError, field_error
from hz_ray.ledger import Ledger
from hz_ray.optimizer import ArmAssessment, Optimizer, SelectionPlan
from hz_ray.records import HourlyDelta, Recommendation
from hz_ray.result import ArmSummary
from hz_ray.storage import EventLog, load_checkpoint, replay_into, save_checkpoint
from hz_ray.telemetry import Telemetry

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hz-ray.posterior/2"
DEFAULT_CHECKPOINT_INTERVAL_S = 10.0
DEFAULT_MIN_REFRESH_INTERVAL_S = 0.25
_REFRESH_ERROR_BACKOFF_S = 1.0
_RELEASE_INTERVAL_S = 2.0  # bounds the pile-up of replaced snapshots (peak RSS)


@dataclass
class _Published:
    """What the refresh thread publishes; replaced as a whole, never edited (but ``used``).

    Attributes:
        plan: Thompson pick counts over the candidates.
        used: Candidate indices handed out under ``plan`` (guarded by the service lock).
        assessments: Live arms' posterior views at this snapshot.
        recommendation: The readout at this snapshot.
        version: Data (ledger) version of the snapshot.
        pick_shares: Live arms' Thompson pick shares from the light plan of
            :meth:`~hz_ray.optimizer.Optimizer.contender_shares` (empty when the
            job does not stop arms that cannot win).
    """

    plan: SelectionPlan
    assessments: Mapping[str, ArmAssessment]
    recommendation: Recommendation
    version: int
    pick_shares: Mapping[str, float] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)


def _seed_for(plan_seed: int, arm_id: str) -> int:
    """A seed for one pick from a plan, stable per (plan, arm id)."""
    digest = hashlib.sha256(f"{plan_seed}:{arm_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 62) - 1)


def _rejection_key(kind: str, *parts: object) -> str:
    return json.dumps([kind, *parts], sort_keys=True, default=str)


class PosteriorService:
    """The central actor's logic: ingest, Thompson samples, refits, checkpoints, metrics.

    Args:
        config: The tuning job.
        run_dir: Folder of the Parquet event log (``log/``) and the checkpoint.
        restore: Rebuild from ``run_dir``'s checkpoint and log (a restart or a
            resumed job). Without it ``run_dir`` must not hold a log yet.
        metrics_port: Serve Prometheus metrics on ``metrics_address:port``
            (0 picks a free port); ``None`` serves nothing.
        metrics_address: Interface to bind; loopback by default.
        checkpoint_interval_s: Minimum wall seconds between checkpoints.
        min_refresh_interval_s: Minimum wall seconds between posterior
            rebuilds (they run back to back while data keeps arriving).
        background: Start the refresh thread (tests may drive
            :meth:`refresh_now` by hand instead).

    Raises:
        StateError: ``run_dir`` holds a log but ``restore`` is false, or the
            checkpoint belongs to another job.
    """

    def __init__(
        self,
        config: TuningConfig,
        run_dir: str | Path,
        *,
        restore: bool = False,
        metrics_port: int | None = None,
        metrics_address: str = "127.0.0.1",
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        min_refresh_interval_s: float = DEFAULT_MIN_REFRESH_INTERVAL_S,
        background: bool = True,
    ) -> None:
        for name, value in (("checkpoint_interval_s", checkpoint_interval_s),
                            ("min_refresh_interval_s", min_refresh_interval_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise field_error(InputDataError, name, value, "a finite number of seconds >= 0")
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.incarnation = uuid.uuid4().hex[:12]
        self.pid = os.getpid()
        self._checkpoint_interval_s = float(checkpoint_interval_s)
        self._min_refresh_interval_s = float(min_refresh_interval_s)

        self._lock = threading.Lock()          # writer ledger, log appends, dicts below
        self._committed = threading.Condition()  # signals durable_ticket advances
        self._intent_ready = threading.Event()
        self._stop_commit = threading.Event()
        self._commit_error: Exception | None = None
        self._gp_lock = threading.Lock()       # the reader optimizer (GP) and checkpoints
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._durable_seq = -1
        self._intents: list[tuple[Any, ...]] = []  # log appends waiting for the committer
        self._issued = 0          # tickets handed out (one per intent), under _lock
        self._durable_ticket = 0  # every intent with a ticket <= this is committed

        self.log = EventLog(self.run_dir / LOG_DIR_NAME)
        if not restore and self.log.last_seq >= 0:
            raise StateError(
                f"run_dir {str(self.run_dir)!r} already holds an event log.",
                "Pass resume=True to continue that job, or use a new run_dir.")
        self._reader, self._ledger, replay_from = self._load(restore)
        self.restored = replay_from is not None
        self._pending: list[tuple[str, Any]] = []
        self._arms: dict[str, ArmRecord] = {}
        self._replies: dict[str, SampleReply] = {}
        self._next_seq: dict[int, int] = defaultdict(int)
        self._rejection_keys: set[str] = set()
        self._rejected_total = 0
        self._hour_accepted: dict[int, int] = defaultdict(int)
        self._hour_rejected: dict[int, int] = defaultdict(int)
        self._hour_launched: dict[int, list[str]] = defaultdict(list)
        self._hour_stopped: dict[int, list[tuple[str, str]]] = defaultdict(list)
        self._max_hour = 0
        if replay_from is not None:
            self._replay(replay_from)
        self._durable_seq = self.log.last_seq
        self._checkpoint_seq_candidate = self.log.last_seq
        self._drained_ticket = 0
        self._checkpointed_seq = replay_from if replay_from is not None else -1
        self._last_checkpoint_t = time.monotonic()
        self._refreshes = 0
        self._refits = 0
        self._refresh_errors = 0
        self._last_refresh_s: float | None = None
        self._last_release_t = 0.0
        self._samples_served = 0

        self.telemetry = Telemetry(config.name)
        self.metrics_url: str | None = None
        if metrics_port is not None:
            endpoint = self.telemetry.serve(int(metrics_port), metrics_address)
            self.metrics_url = endpoint.url
        _warm_up_parquet_writer()  # the first Parquet write in a process costs ~0.5 s
        self._committer = threading.Thread(target=self._commit_loop, name="hz-ray-commit",
                                           daemon=True)
        self._committer.start()
        self._published: _Published | None = None
        self.refresh_now()  # a plan exists before the first sample is served
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._refresh_loop, name="hz-ray-refresh",
                                            daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ restore
    def _load(self, restore: bool) -> tuple[Optimizer, Ledger, int | None]:
        """Build the reader optimizer and the writer ledger; return the replay start.

        The checkpoint holds what the log cannot give back cheaply: the GP
        hyperparameters and refit bookkeeping (a refit on 1000 arms takes
        minutes). The ledgers are rebuilt by replaying the Parquet log, the
        source of truth; a copy of every record in the checkpoint would take
        as long to load as the log and double the memory of writing it.
        """
        reader = Optimizer(self.config)
        ledger = Ledger.from_state_dict(reader.ledger.state_dict())  # empty, same settings
        if not restore:
            return reader, ledger, None
        state = load_checkpoint(self.checkpoint_path)
        if state is not None:
            if state.get("format") != CHECKPOINT_FORMAT:
                raise field_error(StateError, "checkpoint format", state.get("format"),
                                  repr(CHECKPOINT_FORMAT),
                                  "Delete the checkpoint; the log alone rebuilds the job.")
            if state.get("job") != self.config.name:
                raise field_error(StateError, "checkpoint job", state.get("job"),
                                  repr(self.config.name), "Point run_dir at this job's folder.")
            reader.surrogate.load_state_dict(state["surrogate"])
        replay_into(ledger, self.log)
        replay_into(reader.ledger, self.log)
        return reader, ledger, -1

    def _replay(self, since: int) -> None:
        """Rebuild arm records and rejection keys from the whole log (small columns)."""
        table = self.log.read()
        kinds = table.column("kind").to_pylist()
        wanted = {i for i, k in enumerate(kinds)
                  if k in ("arm_registered", "arm_retired", "delta_rejected")}
        if not wanted:
            return
        rows = table.take(sorted(wanted)).to_pylist()
        for row in rows:
            kind, arm_id = row["kind"], row["arm_id"]
            if kind == "arm_registered":
                slot_seq = parse_arm_id(arm_id)
                slot, seq = slot_seq if slot_seq is not None else (-1, -1)
                self._arms[arm_id] = ArmRecord(arm_id, slot, seq, json.loads(row["params_json"]),
                                               int(row["hour"] or 0))
                if slot >= 0:
                    self._next_seq[slot] = max(self._next_seq[slot], seq + 1)
            elif kind == "arm_retired" and arm_id in self._arms:
                record = self._arms[arm_id]
                if record.live:
                    self._arms[arm_id] = replace(record, stopped_hour=row["hour"],
                                                 stop_reason=row["reason"])
            elif kind == "delta_rejected":
                self._rejection_keys.add(self._logged_rejection_key(row))
                self._rejected_total += 1
        logger.info("Restored %d arms, %d records and %d rejections from %s (checkpoint seq "
                    "%d).", len(self._arms), self._ledger.num_records, self._rejected_total,
                    self.run_dir, since)

    @staticmethod
    def _logged_rejection_key(row: Mapping[str, Any]) -> str:
        if row.get("payload_json") is not None:
            return _rejection_key("raw", json.loads(row["payload_json"]), row["reason"])
        return _rejection_key("delta", row["arm_id"], row["metric"], row["hour"], row["mean"],
                              row["var"], row["n"], row.get("control_var"))

    # --------------------------------------------------------- durability
    def _log(self, *intent: Any) -> int:
        """Queue one log append; returns its ticket. The caller holds ``_lock``."""
        self._intents.append(intent)
        self._issued += 1
        return self._issued

    def _wait_durable(self, ticket: int) -> None:
        """Return once every log append up to ``ticket`` is in a committed part file.

        Raises:
            TransientError: The log could not be written (the append stays queued).
        """
        if ticket <= self._durable_ticket:
            return
        self._intent_ready.set()
        with self._committed:
            while self._durable_ticket < ticket:
                if self._commit_error is not None:
                    raise TransientError(f"event log write failed: {self._commit_error}",
                                         "Retried by the caller; check the disk of run_dir.")
                self._committed.wait(timeout=1.0)

    def _commit_loop(self) -> None:
        """The committer thread: the only writer of the :class:`EventLog` (group commit).

        Takes every queued append, writes them, flushes one part file (outside
        ``_lock``, so ingest and samples go on), then wakes every waiter.
        """
        while True:
            self._intent_ready.wait()
            self._intent_ready.clear()
            with self._lock:
                intents, self._intents = self._intents, []
                last_ticket = self._issued
            if not intents and self._stop_commit.is_set():
                return
            if not intents:
                continue
            log = self.log
            try:
                for kind, *args in intents:
                    if kind == "accepted":
                        log.append_accepted(args[0])
                    elif kind == "rejected":
                        log.append_rejected(args[0], args[1])
                    elif kind == "arm":
                        log.append_arm(*args)
                    elif kind == "suggestion":
                        log.append_suggestion(*args)
                    else:
                        log.append_retired(*args)
                log.flush()  # on failure the log keeps its buffer; the next round retries
            except Exception as exc:  # keep serving; waiters get a TransientError
                logger.exception("Event log write failed; retrying.")
                with self._committed:
                    self._commit_error = exc
                    self._committed.notify_all()
                time.sleep(_REFRESH_ERROR_BACKOFF_S)
                self._intent_ready.set()
                continue
            with self._committed:
                self._commit_error = None
                self._durable_seq = log.last_seq
                self._durable_ticket = last_ticket
                self._committed.notify_all()

    # -------------------------------------------------------------- ingest
    def report(self, report: Report) -> ReportAck:
        """Ingest one batch of hourly deltas; idempotent, cheap, never waits for a refit.

        Args:
            report: The batch.

        Returns:
            The ack, sent once the batch is durable in the event log.

        Raises:
            InputDataError: ``report`` is not a :class:`Report` or holds
                something other than :class:`HourlyDelta` records.
        """
        if not isinstance(report, Report):
            raise field_error(InputDataError, "report", type(report).__name__, "a Report")
        deltas, invalid = _revalidate(report.deltas)
        with self._lock:
            result = self._ledger.ingest(deltas)
            if result.accepted:
                self._log("accepted", result.accepted)
            new_rejections = 0
            for delta, reason in invalid:
                new_rejections += self._quarantine(
                    _rejection_key("raw", _delta_payload(delta), reason),
                    _delta_payload(delta), reason)
            for bad in result.rejected:
                d = bad.record
                new_rejections += self._quarantine(
                    _rejection_key("delta", d.arm_id, d.metric, d.hour, d.mean, d.var, d.n,
                                   d.control_var),
                    d, bad.reason)
            for raw in report.rejections:
                new_rejections += self._quarantine(
                    _rejection_key("raw", raw.payload, raw.reason), dict(raw.payload), raw.reason)
            if result.accepted:
                self._pending.append(("deltas", result.accepted))
            hour = int(report.hour)
            self._hour_accepted[hour] += len(result.accepted)
            self._hour_rejected[hour] += new_rejections
            self._max_hour = max(self._max_hour, hour)
            ticket = self._issued  # also covers a concurrent first copy of a retried batch
            version = self._ledger.version
            published = self._published
        if result.accepted:
            self._wake.set()
        self._wait_durable(ticket)
        self.telemetry.record_ingest(len(result.accepted), result.duplicates,
                                     len(result.rejected) + len(invalid) + len(report.rejections))
        p_feasible = pick_share = None
        assessed = -1
        if published is not None:
            assessed = published.version
            view = published.assessments.get(report.arm_id) if report.arm_id else None
            p_feasible = view.p_feasible if view is not None else None
            pick_share = published.pick_shares.get(report.arm_id) if report.arm_id else None
        self.telemetry.record_slot(report.slot, last_hour=hour, p_feasible=p_feasible)
        return ReportAck(len(result.accepted), result.duplicates,
                         len(result.rejected) + len(invalid) + len(report.rejections), version,
                         p_feasible, assessed, self.incarnation, pick_share)

    def _quarantine(self, key: str, record: Any, reason: str) -> int:
        """Log a rejection once (retries are not logged again); caller holds the lock."""
        if key in self._rejection_keys:
            return 0
        self._rejection_keys.add(key)
        self._log("rejected", record, reason)
        self._rejected_total += 1
        return 1

    # -------------------------------------------------------------- sample
    def sample(self, slot: int, seq: int, hour: int) -> SampleReply:
        """Hand out the slot's ``seq``-th arm, a Thompson sample; idempotent per ``(slot, seq)``.

        Answers from the newest published plan, never waiting for a refit. The
        arm is registered and logged (durably) before the reply, so a retried
        request after a crash returns the same arm.

        Args:
            slot: The requesting slot, in ``[0, config.arms.slots)``.
            seq: The slot's arm counter; must be the slot's next one for a new arm.
            hour: The worker's job hour (the arm's launch hour).

        Returns:
            The arm to launch.

        Raises:
            StateError: The slot still has another live arm, or ``seq`` skips ahead.
            InputDataError: A bad slot, seq or hour.
        """
        started = time.perf_counter()
        self._check_slot(slot)
        if isinstance(hour, bool) or not isinstance(hour, int) or hour < 0:
            raise field_error(InputDataError, "hour", hour, "an integer job hour >= 0")
        arm_id = arm_id_for(slot, seq)
        with self._lock:
            known = self._arms.get(arm_id)
            if known is not None:
                reply = self._replies.get(arm_id) or SampleReply(
                    arm_id, dict(known.params), -1, "restored", known.launched_hour)
                ticket = self._issued
                fresh = False
            else:
                expected = self._next_seq[slot]
                if seq != expected:
                    raise field_error(StateError, f"seq of slot {slot}", seq, f"{expected}",
                                      "Ask slot_state() for the slot's next seq.")
                live = [a for a in self._arms.values() if a.slot == slot and a.live]
                if live:
                    raise field_error(StateError, f"live arm of slot {slot}", live[-1].arm_id,
                                      "retired before the slot samples again",
                                      "Call retire() for the slot's live arm first.")
                published = self._published
                assert published is not None  # set in __init__
                plan = published.plan
                index, suggestion = plan.choose(
                    1, self._reader.space, seed=_seed_for(plan.seed, arm_id),
                    exclude=sorted(published.used))[0]
                published.used.add(index)
                params = dict(suggestion.params)
                self._ledger.register_arm(arm_id, params, hour)
                self._log("arm", arm_id, params, hour)
                ticket = self._log("suggestion", arm_id, params, suggestion.model_version)
                self._arms[arm_id] = ArmRecord(arm_id, slot, seq, params, hour)
                self._next_seq[slot] = seq + 1
                self._pending.append(("arm", (arm_id, params, hour)))
                self._hour_launched[hour].append(arm_id)
                self._samples_served += 1
                live_count = sum(1 for a in self._arms.values() if a.live)
                reply = SampleReply(arm_id, params, suggestion.model_version, suggestion.source,
                                    hour)
                self._replies[arm_id] = reply
                fresh = True
        if fresh:
            self._wake.set()
            self.telemetry.record_arms(live_count, launched=1)
        self._wait_durable(ticket)
        self.telemetry.record_sample(time.perf_counter() - started)
        return reply

    def retire(self, slot: int, arm_id: str, reason: str, hour: int) -> bool:
        """Record that a slot's arm stopped; idempotent.

        Args:
            slot: The arm's slot.
            arm_id: The arm.
            reason: Why (``"max_hours"``, ``"guardrail"``, ``"backend_error"``, ...).
            hour: The worker's job hour at the stop.

        Returns:
            True when the arm was live, False for a repeat.

        Raises:
            StateError: The arm is unknown or belongs to another slot.
        """
        with self._lock:
            record = self._arms.get(arm_id)
            if record is None or record.slot != slot:
                raise field_error(StateError, "arm_id", arm_id, f"an arm of slot {slot}")
            if not record.live:
                ticket = self._issued
                changed = False
            else:
                self._ledger.retire_arm(arm_id, reason)
                ticket = self._log("retired", arm_id, reason, int(hour))
                self._arms[arm_id] = replace(record, stopped_hour=int(hour), stop_reason=reason)
                self._pending.append(("retire", (arm_id, reason)))
                self._hour_stopped[int(hour)].append((arm_id, reason))
                live_count = sum(1 for a in self._arms.values() if a.live)
                changed = True
        if changed:
            self._wake.set()
            self.telemetry.record_arms(live_count, stopped={reason: 1})
        self._wait_durable(ticket)
        return changed

    def slot_state(self, slot: int) -> SlotState:
        """Everything a (re)starting worker needs to continue ``slot``."""
        self._check_slot(slot)
        with self._lock:
            arms = tuple(a for a in self._arms.values() if a.slot == slot)
            return SlotState(slot, self._next_seq[slot], arms)

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

    def hour_summary(self, hour: int) -> HourSummary:
        """What happened in job ``hour`` (for the driver's progress line)."""
        with self._lock:
            live = sum(1 for a in self._arms.values() if a.live)
            summary = HourSummary(
                hour=hour, live_arms=live, accepted=self._hour_accepted.get(hour, 0),
                rejected=self._hour_rejected.get(hour, 0),
                launched=tuple(self._hour_launched.get(hour, ())),
                stopped=tuple(self._hour_stopped.get(hour, ())),
                recommendation=self.recommend(), data_version=self._ledger.version,
                posterior_version=self._published.version if self._published else -1)
        self.telemetry.job_hour.labels(self.config.name).set(hour)
        return summary

    def status(self) -> ServiceStatus:
        """Counters for tools and tests."""
        with self._lock:
            published = self._published
            return ServiceStatus(
                job=self.config.name, incarnation=self.incarnation, pid=self.pid,
                restored=self.restored, data_version=self._ledger.version,
                posterior_version=published.version if published else -1,
                num_records=self._ledger.num_records, arms=len(self._arms),
                live_arms=sum(1 for a in self._arms.values() if a.live),
                rejected=self._rejected_total, refreshes=self._refreshes, refits=self._refits,
                last_refresh_s=self._last_refresh_s, refresh_errors=self._refresh_errors,
                log_seq=self.log.last_seq, metrics_url=self.metrics_url,
                extra={"samples_served": float(self._samples_served),
                       "durable_seq": float(self._durable_seq),
                       "rss_bytes": float(_rss_bytes()),
                       "peak_rss_bytes": float(_peak_rss_bytes())})

    def arm_summaries(self) -> list[ArmSummary]:
        """Every arm with its own aggregated data, in launch order."""
        with self._lock:
            ledger = self._ledger
            out = []
            for arm_id, info in ledger.arms.items():
                record = self._arms.get(arm_id)
                launched = record.launched_hour if record else int(info.registered_hour or 0)
                out.append(ArmSummary(
                    arm_id, dict(info.params), launched,
                    record.stopped_hour if record else None,
                    record.stop_reason if record else info.retired_reason,
                    ledger.hours_observed(arm_id), ledger.estimates(arm_id)))
            return out

    def ledger_state(self) -> dict[str, Any]:
        """The writer ledger's JSON-safe state (tests compare it with ``run_local``'s)."""
        with self._lock:
            return self._ledger.state_dict()

    @property
    def rejected(self) -> int:
        """Records rejected so far, over every life of the actor."""
        return self._rejected_total

    # ------------------------------------------------------------- refresh
    def refresh_now(self, force_refit: bool = False) -> int:
        """Rebuild the posterior, plan, assessments and readout now (blocking).

        Args:
            force_refit: Refit the GP hyperparameters whatever the refit policy
                says (the slow path; samples keep being served meanwhile).

        Returns:
            The data version of the new snapshot.
        """
        with self._gp_lock:
            with self._lock:
                events, self._pending = self._pending, []
                live = tuple(a for a, r in self._arms.items() if r.live)
                # Every committed event came from an intent queued before now, so it is
                # among the events drained here: a checkpoint may claim it.
                checkpoint_seq = self._durable_seq
                drained_ticket = self._issued
            reader = self._reader
            for kind, payload in events:
                if kind == "deltas":
                    reader.observe(payload)
                elif kind == "arm":
                    reader.register_arm(*payload)
                else:
                    reader.retire_arm(*payload)
            started = time.perf_counter()
            refits_before = reader.surrogate.num_refits
            view = reader.view()
            reader.refresh(view, force_refit=force_refit)
            plan = reader.plan(live, salt=self._refreshes)
            assessments = {a.arm_id: a for a in reader.assess(list(live))} if live else {}
            shares = (reader.contender_shares(live, salt=self._refreshes)
                      if self.config.arms.contender_stop_share > 0 and live else {})
            recommendation = reader.recommend()
            elapsed = time.perf_counter() - started
            refit = reader.surrogate.num_refits > refits_before
            self._published = _Published(plan, assessments, recommendation, view.version,
                                         shares)
            self._checkpoint_seq_candidate = checkpoint_seq
            self._drained_ticket = drained_ticket
            self._refreshes += 1
            self._refits += int(refit)
            self._last_refresh_s = elapsed
        if time.monotonic() - self._last_release_t >= _RELEASE_INTERVAL_S:
            self._last_release_t = time.monotonic()
            _release_memory()  # replaced snapshots hold GP modules in reference cycles
        self.telemetry.record_refit(elapsed, refit, view.version, len(view.train_ids) - 1)
        self.telemetry.record_recommendation(recommendation, view.version, self._max_hour)
        return view.version

    def checkpoint_now(self) -> bool:
        """Write a checkpoint of the reader's state if it advanced; returns True if written."""
        with self._gp_lock:
            seq = self._checkpoint_seq_candidate
            if seq <= self._checkpointed_seq:
                return False
            # The reader must hold nothing the log lacks (a replay of the log alone must
            # rebuild the same job), so commit what it drained before saving.
            self._wait_durable(self._drained_ticket)
            state = {"format": CHECKPOINT_FORMAT, "job": self.config.name,
                     "config": self.config.to_mapping(), "log_seq": seq,
                     "written_at_s": time.time(),
                     "surrogate": self._reader.surrogate.state_dict()}
            save_checkpoint(self.checkpoint_path, state)
            del state
            self._checkpointed_seq = seq
            self._last_checkpoint_t = time.monotonic()
        _release_memory()
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
            except Exception:  # the loop must survive any one bad rebuild
                self._refresh_errors += 1
                logger.exception("Posterior rebuild failed; serving the previous snapshot.")
                self._closing.wait(_REFRESH_ERROR_BACKOFF_S)
                self._wake.set()

    # ----------------------------------------------------------- lifecycle
    def finish(self) -> Recommendation:
        """Drain, rebuild on all data, checkpoint; returns the final readout."""
        self.refresh_now()
        self.checkpoint_now()
        _release_memory()
        return self.recommend()

    def close(self) -> None:
        """Stop the refresh thread, flush the log, stop serving metrics."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            ticket = self._issued
        self._wait_durable(ticket)
        self._stop_commit.set()
        self._intent_ready.set()
        self._committer.join(timeout=60)
        self.telemetry.shutdown()

    def ready(self) -> str:
        """Return the incarnation id once constructed (the driver waits on this)."""
        return self.incarnation


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Called after each checkpoint: rebuilds and checkpoints allocate hundreds of MB
    of short-lived objects, which glibc would otherwise keep mapped.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _warm_up_parquet_writer() -> None:
    """Write an empty log table to memory, so the first real commit is not slow."""
    import io

    import pyarrow.parquet as pq

    from hz_ray.storage import EVENT_SCHEMA

    pq.write_table(EVENT_SCHEMA.empty_table(), io.BytesIO())


def _revalidate(deltas: Sequence[Any]) -> tuple[list[Any], list[tuple[Any, str]]]:
    """Re-run HourlyDelta validation (pickling skips ``__post_init__``).

    Non-HourlyDelta items are passed through so the ledger raises its typed error.
    """
    ok: list[Any] = []
    bad: list[tuple[Any, str]] = []
    for delta in deltas:
        if isinstance(delta, HourlyDelta):
            try:
                delta.__post_init__()
            except HzRayError as exc:
                bad.append((delta, str(exc)))
                continue
        ok.append(delta)
    return ok, bad


def _delta_payload(delta: HourlyDelta) -> dict[str, Any]:
    return {"arm_id": delta.arm_id, "metric": delta.metric, "hour": delta.hour,
            "mean": delta.mean, "var": delta.var, "n": delta.n,
            "control_var": delta.control_var}


def _rss_bytes() -> int:
    return _status_kb("VmRSS:") * 1024


def _peak_rss_bytes() -> int:
    return _status_kb("VmHWM:") * 1024


def _status_kb(key: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
