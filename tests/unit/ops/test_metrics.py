from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from strainwatch.ops.metrics import ServiceMetrics

pytestmark = pytest.mark.unit


def samples(m: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_convention_names_with_a_service_label() -> None:
    m = ServiceMetrics("processor")
    m.consumed.inc(5)
    m.processed.inc(4)
    m.dead_lettered("invalid_json")
    m.dead_lettered("invalid_json")
    m.dead_lettered("oversized", 3)
    m.sink_write_errors.inc()
    m.consumer_lag.set(17)
    m.checkpoint_age.set(2.5)
    m.end_to_end_delay.observe(0.3)
    m.end_to_end_delay.observe(42.0)
    s = samples(m)
    svc = (("service", "processor"),)
    assert s[("strainwatch_consumed_total", svc)] == 5
    assert s[("strainwatch_processed_total", svc)] == 4
    assert s[("strainwatch_dead_lettered_total", (("reason", "invalid_json"), ("service", "processor")))] == 2
    assert s[("strainwatch_dead_lettered_total", (("reason", "oversized"), ("service", "processor")))] == 3
    assert s[("strainwatch_sink_write_errors_total", svc)] == 1
    assert s[("strainwatch_consumer_lag", svc)] == 17
    assert s[("strainwatch_checkpoint_age_seconds", svc)] == 2.5
    assert s[("strainwatch_end_to_end_delay_seconds_count", svc)] == 2
    assert s[("strainwatch_end_to_end_delay_seconds_sum", svc)] == pytest.approx(42.3)
    assert s[("strainwatch_end_to_end_delay_seconds_bucket", (("le", "0.5"), ("service", "processor")))] == 1
    assert s[("strainwatch_end_to_end_delay_seconds_bucket", (("le", "+Inf"), ("service", "processor")))] == 2


def test_gauges_read_at_scrape_time_and_registries_are_per_service() -> None:
    lag = [3.0]
    m = ServiceMetrics("alerting")
    m.read_consumer_lag(lambda: lag[0])
    m.read_checkpoint_age(lambda: 7.0)
    assert samples(m)[("strainwatch_consumer_lag", (("service", "alerting"),))] == 3
    lag[0] = 9.0
    assert samples(m)[("strainwatch_consumer_lag", (("service", "alerting"),))] == 9
    assert samples(m)[("strainwatch_checkpoint_age_seconds", (("service", "alerting"),))] == 7
    other = ServiceMetrics("gateway")  # a second registry: no duplicate-timeseries error
    other.consumed.inc()
    assert ("strainwatch_consumed_total", (("service", "alerting"),)) not in samples(other)


def test_totals_counted_elsewhere_are_synced_at_scrape() -> None:
    totals = {"in": 0, "ok": 0, "dead": {"invalid_json": 0}}
    m = ServiceMetrics("processor")
    m.on_scrape(
        lambda: m.set_totals(consumed=totals["in"], processed=totals["ok"], dead_lettered=totals["dead"])
    )
    totals.update({"in": 10, "ok": 8, "dead": {"invalid_json": 2}})
    s = samples(m)
    assert s[("strainwatch_consumed_total", (("service", "processor"),))] == 10
    assert s[("strainwatch_processed_total", (("service", "processor"),))] == 8
    assert s[("strainwatch_dead_lettered_total", (("reason", "invalid_json"), ("service", "processor")))] == 2
    totals.update({"in": 15, "ok": 3})  # a total going down (a reset elsewhere) never lowers a counter
    s = samples(m)
    assert s[("strainwatch_consumed_total", (("service", "processor"),))] == 15
    assert s[("strainwatch_processed_total", (("service", "processor"),))] == 8
