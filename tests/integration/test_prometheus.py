"""Proof (c): Prometheus scrapes the producer's metrics port; the series is queryable."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from streaming_jobs.common.settings import Settings


def query(settings: Settings, promql: str) -> list[dict[str, Any]]:
    url = (
        f"http://{settings.services.host}:{settings.services.prometheus_port}/api/v1/query?"
        + urllib.parse.urlencode({"query": promql})
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def await_series(settings: Settings, promql: str, deadline_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + deadline_s
    while True:
        result = query(settings, promql)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)  # polling a condition, bounded by the deadline


def test_prometheus_scrapes_the_producer_port(services: Settings) -> None:
    run = uuid.uuid4().hex
    registry = CollectorRegistry()
    Gauge("lakehouse_proof_value", "scrape proof", ["run"], registry=registry).labels(run).set(42)
    server, thread = start_http_server(
        services.services.producer_metrics_port, addr=services.services.host, registry=registry
    )
    try:
        result = await_series(services, f'lakehouse_proof_value{{run="{run}"}}', 60)
        assert result, "Prometheus never scraped lakehouse_proof_value"
        assert result[0]["metric"]["job"] == "producer"
        assert float(result[0]["value"][1]) == 42.0
        up = query(services, 'up{job="producer"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_prometheus_scrapes_minio(services: Settings) -> None:
    result = await_series(services, 'up{job="minio"} == 1', 60)
    assert result, "MinIO's metrics endpoint was not scraped as up"
