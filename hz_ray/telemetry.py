"""Prometheus metrics of a tuning job (prometheus-client, private registry).

Every metric name, help text and label set is defined here, once. Labels are
bounded: ``tuning_job`` (one per job), ``result``, ``kind``, ``reason`` (a stop
reason, or one of :data:`REJECTION_CLASSES` for a rejected delta), ``slot`` (one
per arm slot, not per arm, so the series count does not grow with the job's
length), ``metric`` (the job's metric names). Arm ids and weights are never
labels; the job's id, version and config fingerprint are labels of the one
``hzray_job_info`` series only.

Naming follows Prometheus: counters end in ``_total``, durations in
``_seconds``, and dimensionless fractions (relative gains and deltas,
probabilities) in ``_ratio``. No ``_created`` series are exported
(:func:`prometheus_client.disable_created_metrics`, called when a
:class:`Telemetry` is built).

Series that a dashboard plots are created at 0 when the job starts (each
rejection class, each ``deltas_total`` result, stop failures, stuck stops), so
a panel shows 0 rather than "no data" for a job that never rejected a delta.

Data staleness per slot, in job hours, is a query, not a metric::

    max by (tuning_job) (hzray_job_hour)
      - on (tuning_job) group_right hzray_slot_last_reported_hour

Nothing is served at import. :meth:`Telemetry.serve` binds ``127.0.0.1`` by
default; pass another address only deliberately.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)

from hz_ray import __version__
from hz_ray.records import Recommendation

if TYPE_CHECKING:
    from hz_ray.config import ConstraintSpec

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REFIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DELTA_RESULTS = ("accepted", "duplicate", "rejected")

#: The ``reason`` label values of ``hzray_deltas_rejected_total``: the rule a
#: rejected delta or reading broke, in a small fixed set (the full reason text
#: is in the event log). ``other`` is the fallback, e.g. a platform's own
#: reason for an invalid row.
REJECTION_CLASSES = (
    "malformed",              # not a reading/delta, a field missing or of the wrong type
    "invalid_value",          # a mean, variance or unit count out of range
    "bad_hour",               # not an hour index, or before the arm's launch
    "future_hour",            # after the current job hour
    "after_stop",             # an hour the stopped arm did not serve
    "too_old",                # past the late-data window
    "wrong_arm",              # labelled with another arm than the one fetched
    "unknown_arm",            # an arm the job never registered
    "unknown_metric",         # a metric the job does not model
    "conflicting_duplicate",  # a key already held with other values
    "fetch_error",            # the platform's fetch result could not be read
    "unreadable",             # the record could not be checked at all
    "other",
)

# First match wins; the texts are those of hz_ray.reading_checks, hz_ray.delta,
# hz_ray.ledger and hz_ray.arm_feed.
_REJECTION_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), cls) for pattern, cls in (
        (r"conflicts with the (accepted record|first valid value)", "conflicting_duplicate"),
        (r"The fetch result is not an iterable|Reading the fetch result failed", "fetch_error"),
        (r"could not be (checked|looked up|read)", "unreadable"),
        (r"is not registered", "unknown_arm"),
        (r"\(the arm it was fetched for\)", "wrong_arm"),
        (r"is not modelled|^'metric' must be one of", "unknown_metric"),
        (r"an hour in the future", "future_hour"),
        (r"the arm stopped serving", "after_stop"),
        (r"late-data window", "too_old"),
        (r"^'hour' must be", "bad_hour"),
        (r"^Not an Hourly(Reading|Delta)|is missing or unreadable|must be a non-empty string"
         r"|^'reading' must be an HourlyReading", "malformed"),
        (r"^'(test|control)(\.(mean|var|n))?' must be|^'(mean|var|n|control_var)' must be",
         "invalid_value"),
    )
)


def rejection_class(reason: object) -> str:
    """The bounded class of a rejection's free-text reason.

    Args:
        reason: The reason text of a rejected delta or reading (any object;
            a non-string is ``"other"``).

    Returns:
        One of :data:`REJECTION_CLASSES`.
    """
    if not isinstance(reason, str):
        return "other"
    text = str.__str__(reason)
    for pattern, cls in _REJECTION_RULES:
        if pattern.search(text):
            return cls
    return "other"


@dataclass(frozen=True)
class ServedEndpoint:
    """Where the metrics are served."""

    address: str
    port: int

    @property
    def url(self) -> str:
        """The scrape URL."""
        return f"http://{self.address}:{self.port}/metrics"


class Telemetry:
    """The optimiser-level metrics nobody else exports.

    Args:
        job: The tuning job's name (the ``tuning_job`` label).
        registry: A registry to register into; a new private one by default.
    """

    def __init__(self, job: str, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # process-global: no `_created` twin of any series
        self.job = job
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("tuning_job",)
        r = self.registry
        self.info = Info("hzray_job", "The job: its id, hz-ray version and config fingerprint.",
                         labels, registry=r)
        self.deltas = Counter("hzray_deltas_total", "Hourly deltas received by the central actor.",
                              (*labels, "result"), registry=r)
        self.deltas_rejected = Counter(
            "hzray_deltas_rejected_total",
            "Rejected deltas and readings, by the class of rule they broke.",
            (*labels, "reason"), registry=r)
        self.refits = Counter("hzray_refits_total", "Posterior rebuilds, by kind.",
                              (*labels, "kind"), registry=r)
        self.refit_seconds = Histogram("hzray_refit_seconds",
                                       "Wall time of one posterior rebuild.", labels,
                                       buckets=REFIT_BUCKETS_S, registry=r)
        self.sample_seconds = Histogram("hzray_sample_seconds",
                                        "Latency of one Thompson sample served to a worker.",
                                        labels, buckets=LATENCY_BUCKETS_S, registry=r)
        self.data_version = Gauge("hzray_data_version", "Ledger version (accepted records).",
                                  labels, registry=r)
        self.posterior_version = Gauge("hzray_posterior_version",
                                       "Ledger version of the newest posterior snapshot.",
                                       labels, registry=r)
        self.observed_arms = Gauge("hzray_observed_arms", "Arms with data in the GP.", labels,
                                   registry=r)
        self.live_arms = Gauge("hzray_live_arms", "Arms live now.", labels, registry=r)
        self.arms_launched = Counter("hzray_arms_launched_total", "Arms launched.", labels,
                                     registry=r)
        self.arms_stopped = Counter("hzray_arms_stopped_total", "Arms stopped, by reason.",
                                    (*labels, "reason"), registry=r)
        self.slot_last_hour = Gauge("hzray_slot_last_reported_hour",
                                    "Newest job hour a slot's arm reported.",
                                    (*labels, "slot"), registry=r)
        self.slot_p_feasible = Gauge("hzray_slot_p_feasible_ratio",
                                     "P(all constraints hold) of the arm live in a slot.",
                                     (*labels, "slot"), registry=r)
        self.best_gain = Gauge("hzray_recommended_gain_ratio",
                               "Posterior mean relative gain of the readout's objective.",
                               labels, registry=r)
        self.best_gain_lcb = Gauge("hzray_recommended_gain_lcb_ratio",
                                   "95% lower bound of the readout's relative gain.", labels,
                                   registry=r)
        self.best_p_feasible = Gauge("hzray_recommended_p_feasible_ratio",
                                     "P(all constraints hold) of the readout.", labels,
                                     registry=r)
        self.best_metric = Gauge("hzray_recommended_metric_delta_ratio",
                                 "Posterior mean relative delta of each metric at the readout.",
                                 (*labels, "metric"), registry=r)
        self.guardrail_bound = Gauge("hzray_guardrail_bound_ratio",
                                     "A guardrail's bound on its metric's relative delta "
                                     "(side: min or max).", (*labels, "metric", "side"),
                                     registry=r)
        self.job_hour = Gauge("hzray_job_hour", "Current job hour.", labels, registry=r)
        self.stop_failures = Counter("hzray_arm_stop_failures_total",
                                     "Platform stop calls that failed (each is retried).",
                                     labels, registry=r)
        self.stuck_stops = Gauge("hzray_arms_stuck_stopping",
                                 "Arms whose stop was decided but has not succeeded yet.",
                                 labels, registry=r)
        for result in DELTA_RESULTS:  # plotted series exist from the start, at 0
            self.deltas.labels(job, result)
        for cls in REJECTION_CLASSES:
            self.deltas_rejected.labels(job, cls)
        self.arms_launched.labels(job)
        self.stop_failures.labels(job)
        self.stuck_stops.labels(job).set(0)

    def record_job(self, job_id: str, fingerprint: str,
                   guardrails: Iterable[ConstraintSpec] = (), version: str = __version__,
                   ) -> None:
        """Publish the job's identity (``hzray_job_info``, value 1) and its guardrails.

        Args:
            job_id: The job's id (arm ids carry it).
            fingerprint: :func:`hz_ray.run_folder.config_fingerprint` of its config.
            guardrails: The config's constraints; each bound becomes a
                ``hzray_guardrail_bound_ratio{metric, side}`` series.
            version: The hz-ray version; this package's by default.
        """
        self.info.labels(self.job).info({"job_id": str(job_id), "version": str(version),
                                         "config_fingerprint": str(fingerprint)})
        for spec in guardrails:
            for side, bound in (("min", spec.min_delta), ("max", spec.max_delta)):
                if bound is not None:
                    self.guardrail_bound.labels(self.job, spec.metric, side).set(bound)

    def record_stop_failure(self) -> None:
        """Count one failed stop attempt."""
        self.stop_failures.labels(self.job).inc()

    def record_stuck_stops(self, count: int) -> None:
        """Set the number of arms whose stop keeps failing."""
        self.stuck_stops.labels(self.job).set(count)

    def record_ingest(self, accepted: int, duplicates: int, rejected: int,
                      reasons: Iterable[object] = ()) -> None:
        """Count one ingested batch.

        Args:
            accepted: Deltas accepted.
            duplicates: Deltas already held with the same values.
            rejected: Deltas and readings rejected.
            reasons: The reason text of each rejection (counted by
                :func:`rejection_class`); without them the rejections count as
                ``other``.
        """
        for result, count in zip(DELTA_RESULTS, (accepted, duplicates, rejected), strict=True):
            if count:
                self.deltas.labels(self.job, result).inc(count)
        counted = 0
        for reason in reasons:
            self.deltas_rejected.labels(self.job, rejection_class(reason)).inc()
            counted += 1
        if rejected > counted:
            self.deltas_rejected.labels(self.job, "other").inc(rejected - counted)

    def record_refit(self, seconds: float, refit: bool, posterior_version: int,
                     observed_arms: int) -> None:
        """Record one posterior rebuild (``refit``: hyperparameters were refit)."""
        self.refits.labels(self.job, "refit" if refit else "condition").inc()
        self.refit_seconds.labels(self.job).observe(seconds)
        self.posterior_version.labels(self.job).set(posterior_version)
        self.observed_arms.labels(self.job).set(observed_arms)

    def record_sample(self, seconds: float) -> None:
        """Record the latency of one served Thompson sample."""
        self.sample_seconds.labels(self.job).observe(seconds)

    def record_arms(self, live: int, launched: int = 0, stopped: Mapping[str, int] | None = None,
                    ) -> None:
        """Update arm counts."""
        self.live_arms.labels(self.job).set(live)
        if launched:
            self.arms_launched.labels(self.job).inc(launched)
        for reason, count in (stopped or {}).items():
            self.arms_stopped.labels(self.job, reason).inc(count)

    def record_slot(self, slot: int, last_hour: int | None = None,
                    p_feasible: float | None = None) -> None:
        """Update one slot's gauges."""
        if last_hour is not None:
            self.slot_last_hour.labels(self.job, str(slot)).set(last_hour)
        if p_feasible is not None:
            self.slot_p_feasible.labels(self.job, str(slot)).set(p_feasible)

    def record_recommendation(self, rec: Recommendation, data_version: int, hour: int) -> None:
        """Update the readout gauges."""
        self.best_gain.labels(self.job).set(rec.objective_mean)
        self.best_gain_lcb.labels(self.job).set(rec.objective_lcb)
        self.best_p_feasible.labels(self.job).set(rec.p_feasible)
        for metric, post in rec.metrics.items():
            self.best_metric.labels(self.job, metric).set(post.mean)
        self.data_version.labels(self.job).set(data_version)
        self.job_hour.labels(self.job).set(hour)

    def serve(self, port: int, address: str = "127.0.0.1") -> ServedEndpoint:
        """Serve ``/metrics`` over HTTP (loopback by default).

        Args:
            port: TCP port; 0 picks a free one.
            address: Interface to bind; keep the loopback default unless the
                scraper runs on another host.

        Returns:
            The bound address and port.
        """
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._server = server
        return ServedEndpoint(address, int(server.server_address[1]))

    def shutdown(self) -> None:
        """Stop serving, if serving."""
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None
