"""Exports a few metrics with the OpenTelemetry Python SDK over OTLP/HTTP
(protobuf) to Flightdeck, once, and exits 0 only if every export succeeded.

Used by tests/e2e/otel_sdk.rs: python otel_export.py URL TOKEN
"""

import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

url, token = sys.argv[1], sys.argv[2]
results = []


class CheckedExporter(OTLPMetricExporter):
    """Records the result of every export (the SDK only logs failures)."""

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        results.append(result)
        return result


exporter = CheckedExporter(
    endpoint=url + "/v1/metrics",
    headers={"Authorization": "Bearer " + token},
    timeout=10,
)
# Exports happen on force_flush and shutdown only (the interval is an hour).
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
resource = Resource.create(
    {
        "service.name": "checkout",
        "service.namespace": "shop",
        "service.instance.id": "pod-7",
        "deployment.environment": "e2e",
    }
)
views = [
    View(
        instrument_name="http.server.duration",
        aggregation=ExplicitBucketHistogramAggregation(boundaries=[0.1, 0.5, 1.0]),
    ),
    View(
        instrument_name="payload.size",
        aggregation=ExponentialBucketHistogramAggregation(max_size=160, max_scale=3),
    ),
]
provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
meter = provider.get_meter("fd.e2e", "1.2.3")

requests = meter.create_counter("http.requests", unit="{request}", description="Requests served.")
requests.add(5, {"method": "GET"})
requests.add(2, {"method": "POST"})

depth = meter.create_gauge("queue.depth", unit="By", description="Bytes queued.")
depth.set(4096, {"queue": "a"})

duration = meter.create_histogram("http.server.duration", unit="s", description="Request time.")
for v in (0.05, 0.2, 0.7, 3.0):
    duration.record(v, {"route": "/buy"})

size = meter.create_histogram("payload.size", unit="By", description="Payload sizes.")
for v in (1, 2, 4, 1000):
    size.record(v)

flushed = provider.force_flush(10_000)
provider.shutdown()
if not flushed or not results or any(r != MetricExportResult.SUCCESS for r in results):
    print(f"export failed: flushed={flushed} results={results}", file=sys.stderr)
    sys.exit(1)
print(f"exported {len(results)} times")
