"""Prometheus metrics, in a registry owned by the daemon (no module-level state).

Counts the observer keeps itself are exposed as counters read at scrape time
(prometheus_client's custom-collector pattern), not copied into gauges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.memory.observer import ObserverStats

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
        self.refusals = Counter(
            "memoryd_refusals_total",
            "Requests refused with an error, by HTTP status and error code",
            ["status", "code"],
            registry=r,
        )
        Info("memoryd_build", "memoryd's version and Python", registry=r).info(build_info())
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def observe(
        self, stats: Callable[[], ObserverStats], redacted: Callable[[], Mapping[str, int]]
    ) -> None:
        """Expose the observer's counts (it keeps them; scraping reads them)."""
        self.registry.register(ObserverCollector(stats, redacted))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def build_info() -> dict[str, str]:
    try:
        return {"version": version("memoryd")}
    except PackageNotFoundError:  # run from a checkout without being installed
        return {"version": "unknown"}


OBSERVER_COUNTERS = {
    "observed": "Requests whose context was recorded",
    "dropped": "Observations dropped: queue full",
    "failed": "Observations not written (Redis error)",
    "retried": "Observation writes retried while Redis was unreachable",
    "facts_written": "Statements read in new passages",
    "redacted": "Secrets and personal data taken out of observed context",
    "statements_dropped": "Statements not learned: their point was a redacted value",
}


class ObserverCollector(Collector):
    def __init__(
        self, stats: Callable[[], ObserverStats], redacted: Callable[[], Mapping[str, int]]
    ) -> None:
        self.stats = stats
        self.redacted = redacted

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        for field, doc in OBSERVER_COUNTERS.items():
            yield CounterMetricFamily(f"memoryd_observer_{field}", doc, value=getattr(stats, field))
        by_kind = CounterMetricFamily(
            "memoryd_redactions",
            "Secrets and personal data replaced before storing, by kind (never the values)",
            labels=["kind"],
        )
        for kind, n in sorted(self.redacted().items()):
            by_kind.add_metric([kind], n)
        yield by_kind
