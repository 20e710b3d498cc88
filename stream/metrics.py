"""Prometheus metrics for the detector, on a registry of its own so tests can build many
(served with /health by stream/health.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DetectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.lines = Counter("rationanomaly_lines", "Log lines read", registry=r)
        self.windows = Counter("rationanomaly_windows", "Windows closed", ["kind"], registry=r)
        self.verdicts = Counter("rationanomaly_verdicts", "Verdicts of judged windows, by label", ["verdict"], registry=r)
        self.withheld = Counter(
            "rationanomaly_verdicts_withheld",
            "Verdicts kept off the output topic by output.publish (still committed)",
            ["verdict"],
            registry=r,
        )
        self.dead_letters = Counter(
            "rationanomaly_dead_letters", "Records sent to the dead-letter topic", ["stage"], registry=r
        )
        self.templates = Gauge("rationanomaly_templates", "Templates judged and cached", registry=r)
        self.model_latency = Histogram(
            "rationanomaly_model_latency_seconds",
            "Latency of one model request",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.model_degraded = Gauge(
            "rationanomaly_model_degraded",
            "1 while the model's latest fresh answers failed (timeout, backend error), 0 once one succeeds",
            registry=r,
        )
        self.queue_depth = Gauge("rationanomaly_queue_depth", "Windows waiting for the model", registry=r)
        self.consumer_lag = Gauge(
            "rationanomaly_consumer_lag", "High watermark minus position", ["partition"], registry=r
        )
        self.paused = Gauge("rationanomaly_paused", "1 while partitions are paused for backpressure", registry=r)
        self.silent_held = Gauge(
            "rationanomaly_silent_partitions_held",
            "Partitions silent past input.idle_timeout_s whose windows stay open: their log is not read to its end "
            "(a transaction still open holds it; stream/log_end.py)", registry=r,
        )
        self.pauses = Counter("rationanomaly_backpressure_pauses", "Times the partitions were paused", registry=r)
        # Memory caps against hostile volume (stream/README.md, "Bounded memory").
        self.open_windows = Gauge("rationanomaly_open_windows", "Windows open, all partitions", registry=r)
        self.held_lines = Gauge("rationanomaly_window_lines_held", "Lines held by open windows, all partitions", registry=r)
        self.windows_forced = Counter(
            "rationanomaly_windows_forced", "Windows closed early by a memory cap", ["cap"], registry=r
        )
        self.drain_clusters = Gauge(
            "rationanomaly_drain_clusters", "Templates Drain3 holds, all partitions (each capped by parsing.max_clusters)", registry=r
        )
        self.template_cache_evictions = Counter(
            "rationanomaly_template_cache_evictions", "Judged templates dropped from the cache at judging.cache_max_templates", registry=r
        )
        # One judge per template in a group (stream/template_owners.py): `asked` requests sent to a
        # template's owner, `served` requests this member answered, `timed_out` templates judged
        # here after the owner stayed silent for judging.remote_wait_s (each one a model call twice).
        self.template_routing = Counter(
            "rationanomaly_template_routing", "Templates routed to their owner in the group, by event", ["event"], registry=r
        )
