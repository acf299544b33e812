"""Prometheus metrics of a tuning job (prometheus-client, private registry).

Every metric name, help text and label set is defined here, once. Labels are
bounded: ``tuning_job`` (one per job), ``result``, ``slot`` (one per arm slot,
not per arm, so the series count does not grow with the job's length),
``metric`` (the job's metric names). Weights are never labels.

Nothing is served at import. :meth:`Telemetry.serve` binds ``127.0.0.1`` by
default; pass another address only deliberately.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hz_ray.records import Recommendation

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REFIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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
        self.job = job
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("tuning_job",)
        r = self.registry
        self.deltas = Counter("hzray_deltas_total", "Hourly deltas received by the central actor.",
                              (*labels, "result"), registry=r)
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
        self.slot_p_feasible = Gauge("hzray_slot_p_feasible",
                                     "P(all constraints hold) of the arm live in a slot.",
                                     (*labels, "slot"), registry=r)
        self.best_gain = Gauge("hzray_recommended_gain", "Posterior mean gain of the readout.",
                               labels, registry=r)
        self.best_gain_lcb = Gauge("hzray_recommended_gain_lcb",
                                   "95% lower bound of the readout's gain.", labels, registry=r)
        self.best_p_feasible = Gauge("hzray_recommended_p_feasible",
                                     "P(feasible) of the readout.", labels, registry=r)
        self.best_metric = Gauge("hzray_recommended_metric_delta",
                                 "Posterior mean delta of each metric at the readout.",
                                 (*labels, "metric"), registry=r)
        self.job_hour = Gauge("hzray_job_hour", "Current job hour.", labels, registry=r)
        self.stop_failures = Counter("hzray_arm_stop_failures_total",
                                     "Platform stop calls that failed (each is retried).",
                                     labels, registry=r)
        self.stuck_stops = Gauge("hzray_arms_stuck_stopping",
                                 "Arms whose stop was decided but has not succeeded yet.",
                                 labels, registry=r)

    def record_stop_failure(self) -> None:
        """Count one failed stop attempt."""
        self.stop_failures.labels(self.job).inc()

    def record_stuck_stops(self, count: int) -> None:
        """Set the number of arms whose stop keeps failing."""
        self.stuck_stops.labels(self.job).set(count)

    def record_ingest(self, accepted: int, duplicates: int, rejected: int) -> None:
        """Count one ingested batch."""
        for result, count in (("accepted", accepted), ("duplicate", duplicates),
                              ("rejected", rejected)):
            if count:
                self.deltas.labels(self.job, result).inc(count)

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
