"""The pure exposure model: no Kafka, faust, InfluxDB or Grafana imports here (docs/exposure-model.md)."""

from strainwatch.exposure.engine import (
    SEGMENT_ORDER,
    Alert,
    ExposureEngine,
    FrameOutcome,
    Violation,
    WindowAggregate,
    WorkerState,
)
from strainwatch.exposure.thresholds import SHIPPED, Thresholds, load_thresholds

__all__ = [
    "SEGMENT_ORDER",
    "SHIPPED",
    "Alert",
    "ExposureEngine",
    "FrameOutcome",
    "Thresholds",
    "Violation",
    "WindowAggregate",
    "WorkerState",
    "load_thresholds",
]
