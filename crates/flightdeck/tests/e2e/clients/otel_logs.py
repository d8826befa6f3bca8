"""Exports Python `logging` records through the OpenTelemetry Python SDK
over OTLP/HTTP (protobuf) to Flightdeck's /v1/logs, once, and exits 0 only
if every export succeeded. One record is written inside a span, so it
carries a trace and span id; the ids are printed for the test to compare.

Used by tests/e2e/logs_clients.rs: python otel_logs.py URL TOKEN
"""

import logging
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

url, token = sys.argv[1], sys.argv[2]
results = []


class CheckedExporter(OTLPLogExporter):
    """Records the result of every export (the SDK only logs failures)."""

    def export(self, batch, *args, **kwargs):
        result = super().export(batch, *args, **kwargs)
        results.append(result)
        return result


resource = Resource.create(
    {
        "service.name": "checkout",
        "service.namespace": "shop",
        "service.instance.id": "pod-7",
        "deployment.environment": "prod",
        "host.name": "node-7",
    }
)
provider = LoggerProvider(resource=resource)
provider.add_log_record_processor(
    SimpleLogRecordProcessor(
        CheckedExporter(
            endpoint=url + "/v1/logs",
            headers={"Authorization": "Bearer " + token},
            timeout=10,
        )
    )
)
log = logging.getLogger("fd.e2e.checkout")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))

log.info("cart opened", extra={"cart.items": 3})
tracer = TracerProvider(resource=resource).get_tracer("fd.e2e")
with tracer.start_as_current_span("pay") as span:
    ctx = span.get_span_context()
    log.warning("card declined")
    print(f"trace_id={ctx.trace_id:032x} span_id={ctx.span_id:016x}")
provider.shutdown()

names = [getattr(r, "name", str(r)) for r in results]
print("export results:", names)
if len(results) != 2 or any(n != "SUCCESS" for n in names):
    sys.exit(1)
