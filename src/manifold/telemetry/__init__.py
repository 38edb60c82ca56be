"""Telemetry: Prometheus metrics (metrics.py, endpoint.py), OpenTelemetry traces (tracing.py), JSON logs
(logs.py). A foundation: the layers above count and trace through the objects the composition root makes
(docs/telemetry.md)."""
