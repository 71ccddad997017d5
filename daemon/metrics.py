"""Prometheus metrics, in a registry owned by the daemon (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "memoryd_requests_total",
            "Chat requests by public model name and status",
            ["model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "memoryd_request_seconds",
            "Request time, to the last byte",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.observer_queue = Gauge(
            "memoryd_observer_queue_depth", "Observations waiting", registry=r
        )
        self.observer_dropped = Gauge(
            "memoryd_observer_dropped_total", "Observations dropped: queue full", registry=r
        )
        self.observer_failed = Gauge(
            "memoryd_observer_failed_total", "Observations not written (Redis error)", registry=r
        )
        self.observer_retried = Gauge(
            "memoryd_observer_retried_total",
            "Observation writes retried while Redis was unreachable",
            registry=r,
        )
        self.redactions = Gauge(
            "memoryd_redactions_total",
            "Secrets and personal data replaced before storing, by kind",
            ["kind"],
            registry=r,
        )
        self.facts = Gauge("memoryd_facts", "Facts by status", ["status"], registry=r)
        self.consolidations = Counter(
            "memoryd_consolidations_total",
            "Finished consolidations by outcome",
            ["outcome"],
            registry=r,
        )
        self.consolidation_seconds = Histogram(
            "memoryd_consolidation_seconds",
            "Consolidation run time",
            buckets=(30, 60, 120, 300, 600, 1200, 3600),
            registry=r,
        )
        self.active_version = Gauge(
            "memoryd_active_adapter_version", "Active adapter version (0 = base)", registry=r
        )
        self.state = Gauge(
            "memoryd_consolidation_state",
            "1 for the current consolidation phase",
            ["phase"],
            registry=r,
        )
        self.in_flight = Gauge("memoryd_requests_in_flight", "Chat requests in flight", registry=r)
        self.engine_ready = Gauge("memoryd_engine_ready", "1 when every engine answers", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
