"""The metric names every service exposes on /metrics (prometheus-client), one registry per service.

Every metric carries a `service` label so that one Prometheus can scrape all services with the same
queries (docs/operations.md lists them):

- strainwatch_consumed_total{service}             records read from Kafka (or MQTT for the gateway)
- strainwatch_processed_total{service}            records fully handled (applied / delivered / forwarded)
- strainwatch_dead_lettered_total{service,reason} records dead-lettered, by reason code
- strainwatch_sink_write_errors_total{service}    failed writes to the sink (InfluxDB, Kafka, channel)
- strainwatch_consumer_lag{service}               records behind the owned partitions' ends (summed)
- strainwatch_checkpoint_age_seconds{service}     seconds since the last checkpoint (offset commit)
- strainwatch_end_to_end_delay_seconds{service}   histogram: now minus the record's event time when handled
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONSUMED = "strainwatch_consumed"
PROCESSED = "strainwatch_processed"
DEAD_LETTERED = "strainwatch_dead_lettered"
SINK_WRITE_ERRORS = "strainwatch_sink_write_errors"
CONSUMER_LAG = "strainwatch_consumer_lag"
CHECKPOINT_AGE = "strainwatch_checkpoint_age_seconds"
END_TO_END_DELAY = "strainwatch_end_to_end_delay_seconds"

# Frames reach the processor within ~1 s in normal operation; buckets up to an hour show backlogs
# after an outage or a replay.
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class _ScrapeHooks(Collector):
    """Registered first in a registry, so its hooks run before the other metrics are collected
    (the registry collects in registration order): counters kept elsewhere are synced at scrape."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []

    def collect(self) -> Iterable[Metric]:
        for hook in self.hooks:
            hook()
        return []

    def describe(self) -> Iterable[Metric]:
        return []


class ServiceMetrics:
    """The shared metrics of one service, in their own registry (pass `registry` to share one).

    Counters and the histogram are bound to the service label: `m.consumed.inc()`,
    `m.dead_lettered("invalid_json")`, `m.end_to_end_delay.observe(s)`. Lag and checkpoint age are
    either set (`m.consumer_lag.set(n)`) or read at scrape time (`m.read_consumer_lag(fn)`).
    """

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._hooks = _ScrapeHooks()
        r.register(self._hooks)
        self._totals: dict[str, float] = {}
        self._consumed = Counter(CONSUMED, "Records read from the input", ["service"], registry=r)
        self._processed = Counter(PROCESSED, "Records fully handled", ["service"], registry=r)
        self._dead = Counter(
            DEAD_LETTERED, "Records dead-lettered, by reason", ["service", "reason"], registry=r
        )
        self._sink_errors = Counter(SINK_WRITE_ERRORS, "Failed writes to the sink", ["service"], registry=r)
        self._delay = Histogram(
            END_TO_END_DELAY,
            "Seconds from a record's event time to its handling",
            ["service"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self._lag_gauge = Gauge(
            CONSUMER_LAG, "Records behind the end of the owned partitions", ["service"], registry=r
        )
        self._age_gauge = Gauge(CHECKPOINT_AGE, "Seconds since the last checkpoint", ["service"], registry=r)
        self.consumed = self._consumed.labels(service=service)
        self.processed = self._processed.labels(service=service)
        self.sink_write_errors = self._sink_errors.labels(service=service)
        self.end_to_end_delay = self._delay.labels(service=service)
        self.consumer_lag = self._lag_gauge.labels(service=service)
        self.checkpoint_age = self._age_gauge.labels(service=service)

    def dead_lettered(self, reason: str, n: float = 1) -> None:
        self._dead.labels(service=self.service, reason=reason).inc(n)

    def read_consumer_lag(self, fn: Callable[[], float]) -> None:
        """The lag gauge reads `fn()` at scrape time (exceptions there are the caller's bug)."""
        self.consumer_lag.set_function(fn)

    def read_checkpoint_age(self, fn: Callable[[], float]) -> None:
        self.checkpoint_age.set_function(fn)

    def on_scrape(self, hook: Callable[[], None]) -> None:
        """Runs `hook()` at every scrape, before the metrics are read."""
        self._hooks.hooks.append(hook)

    def set_totals(
        self,
        *,
        consumed: float | None = None,
        processed: float | None = None,
        sink_write_errors: float | None = None,
        dead_lettered: Mapping[str, float] | None = None,
    ) -> None:
        """Brings the counters up to totals a service already counts (no work on its hot path):
        each counter grows by the difference since the last call; a total that went down is ignored."""
        for key, counter, total in (
            ("consumed", self.consumed, consumed),
            ("processed", self.processed, processed),
            ("sink_write_errors", self.sink_write_errors, sink_write_errors),
        ):
            if total is not None:
                self._advance(key, total, counter.inc)
        for reason, total in (dead_lettered or {}).items():
            self._advance(f"dead:{reason}", total, self._dead.labels(service=self.service, reason=reason).inc)

    def _advance(self, key: str, total: float, inc: Callable[[float], None]) -> None:
        last = self._totals.get(key, 0.0)
        if total > last:
            inc(total - last)
            self._totals[key] = total

    def render(self) -> bytes:
        return _generate_latest(self.registry)


def generate_latest(registry: CollectorRegistry) -> bytes:
    return _generate_latest(registry)
