"""Every Prometheus metric of the producer, defined once, and the HTTP endpoint.

The endpoint serves `/metrics` (Prometheus text format) and `/health` (200
when every connection is live, 503 otherwise, with a JSON body saying which
is not) on `services.host:services.producer_metrics_port`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    make_wsgi_app,
)


@dataclass
class ProducerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        # process_start_time_seconds tells one run of the producer from the next.
        ProcessCollector(registry=r)
        self.frames_received = Counter(
            "producer_frames_received", "WebSocket frames received", ["kind", "symbol"], registry=r
        )
        self.frames_published = Counter(
            "producer_frames_published", "Records acknowledged by Kafka", ["topic"], registry=r
        )
        self.delivery_errors = Counter(
            "producer_delivery_errors",
            "Failed Kafka deliveries (each is retried)",
            ["topic"],
            registry=r,
        )
        self.undeliverable = Counter(
            "producer_undeliverable",
            "Records still undelivered at shutdown, written to the dead-letter file",
            registry=r,
        )
        self.quarantined = Counter(
            "producer_quarantined", "Frames sent to the quarantine topic", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "producer_duplicates_dropped",
            "Frames already published (reconnect or rollover overlap), not sent again",
            ["kind"],
            registry=r,
        )
        self.reconnects = Counter(
            "producer_reconnects", "Connections replaced, by cause", ["cause"], registry=r
        )
        self.connection_attempts = Counter(
            "producer_connection_attempts", "WebSocket connection attempts", registry=r
        )
        self.gaps_detected = Counter(
            "producer_gaps_detected", "Id gaps detected", ["kind", "symbol"], registry=r
        )
        self.gaps_filled = Counter(
            "producer_gaps_filled",
            "Id gaps filled by REST backfill",
            ["kind", "symbol"],
            registry=r,
        )
        self.backfilled = Counter(
            "producer_backfilled_records",
            "Records published from REST backfill",
            ["kind", "symbol"],
            registry=r,
        )
        self.gaps_open = Gauge(
            "producer_gaps_open",
            "Id gaps detected (now or before a restart) whose backfill is not yet in Kafka",
            registry=r,
        )
        self.rest_rate_limited = Counter(
            "producer_rest_rate_limited", "REST answers 429/418 honoured", registry=r
        )
        self.produce_latency = Histogram(
            "producer_produce_latency_seconds",
            "Receive to Kafka acknowledgement",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.connections_live = Gauge(
            "producer_connections_live", "Open WebSocket connections", registry=r
        )
        self.last_frame_age = Gauge(
            "producer_last_frame_age_seconds",
            "Seconds since the last data frame, per stream group",
            ["group"],
            registry=r,
        )


HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True


def _app(
    metrics: ProducerMetrics, health: HealthCheck
) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    prometheus_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            ok, detail = health()
            body = json.dumps({"live": ok, **detail}).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        result: Iterable[bytes] = prometheus_app(environ, start_response)
        return result

    return app


class MetricsServer:
    """/metrics and /health in a background thread; stop() joins it."""

    def __init__(self, metrics: ProducerMetrics, health: HealthCheck, host: str, port: int):
        self._server = make_server(
            host,
            port,
            _app(metrics, health),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
