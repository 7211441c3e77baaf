"""What a process run by infra/supervise.py knows about its supervision.

The supervisor passes LAKE_SERVICE (its name) and LAKE_RESTARTS (how often it
was restarted so far) to the child; the producer and each Spark driver export
the count as `lakehouse_supervisor_restarts{service}`, the metric behind the
DriverRestarted alert (infra/prometheus/alerts.yml). Light on purpose: the
producer imports it without Spark.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge


def supervisor_restarts(registry: CollectorRegistry, environ: Mapping[str, str]) -> None:
    """Export infra/supervise.py's restart count (LAKE_SERVICE, LAKE_RESTARTS), if supervised."""
    service = environ.get("LAKE_SERVICE")
    if not service:
        return
    gauge = Gauge(
        "lakehouse_supervisor_restarts",
        "Times infra/supervise.py restarted this service since it started",
        ["service"],
        registry=registry,
    )
    gauge.labels(service).set(int(environ.get("LAKE_RESTARTS", "0")))
