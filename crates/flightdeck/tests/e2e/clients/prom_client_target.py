"""Serves metrics with Python's prometheus-client on a free local port,
prints the port, and runs until its standard input closes.

Used by tests/e2e/otel_sdk.rs (the scrape test): python prom_client_target.py
"""

import sys

from prometheus_client import Counter, Enum, Gauge, Histogram, Info, Summary, start_http_server

jobs = Counter("fd_jobs", "Jobs processed.", ["queue"])
jobs.labels("fast").inc(3)
jobs.labels("slow").inc(0.5)

Gauge("fd_temperature_celsius", "Temperature.", unit="celsius").set(21.5)

latency = Histogram("fd_job_seconds", "Job time.", buckets=(0.1, 1, 10))
for v in (0.05, 0.5, 5, 50):
    latency.observe(v)

request = Summary("fd_request_seconds", "Request time.")
request.observe(0.2)
request.observe(0.4)

Info("fd_build", "Build information.").info({"version": "1.2.3", "commit": "abc"})
Enum("fd_state", "Service state.", states=["starting", "running", "stopped"]).state("running")

server, _thread = start_http_server(0, addr="127.0.0.1")
print(server.server_port, flush=True)
sys.stdin.read()
