"""Sends a few Python `logging` records to Flightdeck with the
`python-logging-loki` handler (Loki push API v1, JSON, basic auth with the
token as password), and exits 0 only if every push succeeded.

Used by tests/e2e/logs_clients.rs: python loki_logging.py URL TOKEN
"""

import logging
import sys

import logging_loki

url, token = sys.argv[1], sys.argv[2]
failures = []


class CheckedHandler(logging_loki.LokiHandler):
    """Records failed pushes (the handler only prints them)."""

    def handleError(self, record):  # noqa: N802
        failures.append(sys.exc_info()[1])
        super().handleError(record)


handler = CheckedHandler(
    url=url + "/loki/api/v1/push",
    tags={"application": "shop-api"},
    auth=("shop", token),
    version="1",
)
log = logging.getLogger("shop.orders")
log.setLevel(logging.INFO)
log.addHandler(handler)
log.info("order 1 placed")
log.warning("payment slow: %d ms", 950)
log.error("payment failed", extra={"tags": {"order.id": "42"}})
if failures:
    print("push failures:", failures)
    sys.exit(1)
print("pushed 3 records")
