"""Operations surface shared by every long-running service: readiness, the ops HTTP server
(/healthz, /readyz, /metrics), the metric names, and the retry policy (docs/operations.md)."""
