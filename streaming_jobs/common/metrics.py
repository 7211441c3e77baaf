"""Each driver's own /metrics for Prometheus: query progress, Kafka lag, restarts.

Spark's PrometheusServlet (on the UI port, conf/spark-defaults.conf) exports
rates and durations, but not whether a query still makes progress nor how
far it is behind Kafka. A StreamingQueryListener sees every batch (and, while
a query has no data, an idle event every
spark.sql.streaming.noDataProgressEventInterval), so the driver serves on
`streaming.<layer>.metrics_port`:

    lakehouse_query_last_progress_timestamp_seconds{layer,query}  last batch or idle event
    lakehouse_query_batch_id{layer,query}                          last batch id
    lakehouse_query_input_rows_total{layer,query}                  rows read
    lakehouse_query_batch_duration_seconds{layer,query}            last batch's duration
    lakehouse_query_kafka_lag_records{layer,query}                 Kafka sources: latest - read
    lakehouse_query_active{layer,query}                            1 running, 0 terminated
    lakehouse_supervisor_restarts{service}                         infra/supervise.py's count
    lakehouse_clustering_*{layer,table}                            common/upkeep.py

The alerting rules on them are in infra/prometheus/alerts.yml.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pyspark.sql import SparkSession
from pyspark.sql.streaming.listener import StreamingQueryListener

from streaming_jobs.common.supervised import supervisor_restarts

log = logging.getLogger(__name__)


def kafka_lag(sources: Iterable[Any]) -> int | None:
    """Records behind the latest Kafka offsets after a batch (None: no Kafka source).

    A Kafka source's `endOffset` (read up to) and `latestOffset` (available
    when the batch was planned) are JSON {topic: {partition: offset}}.
    """
    lag, seen = 0, False
    for source in sources:
        if not str(source.description).startswith("Kafka") or not source.latestOffset:
            continue
        seen = True
        latest = json.loads(source.latestOffset)
        read = json.loads(source.endOffset) if source.endOffset else {}
        for topic, partitions in latest.items():
            for partition, offset in partitions.items():
                lag += max(0, int(offset) - int(read.get(topic, {}).get(partition, 0)))
    return lag if seen else None


class QueryMetrics(StreamingQueryListener):
    def __init__(self, layer: str, registry: CollectorRegistry):
        labels = ["layer", "query"]
        self.layer = layer
        self.names: dict[str, str] = {}
        self.progress_at = Gauge(
            "lakehouse_query_last_progress_timestamp_seconds",
            "Unix time of the query's last batch or idle event",
            labels,
            registry=registry,
        )
        self.batch_id = Gauge(
            "lakehouse_query_batch_id", "Id of the last batch", labels, registry=registry
        )
        self.input_rows = Counter(
            "lakehouse_query_input_rows", "Rows read by the query", labels, registry=registry
        )
        self.duration = Gauge(
            "lakehouse_query_batch_duration_seconds",
            "Duration of the last batch",
            labels,
            registry=registry,
        )
        self.lag = Gauge(
            "lakehouse_query_kafka_lag_records",
            "Kafka records available but not yet read, after the last batch",
            labels,
            registry=registry,
        )
        self.active = Gauge(
            "lakehouse_query_active", "1 while the query runs", labels, registry=registry
        )

    def _name(self, query_id: Any, name: str | None = None) -> str:
        key = str(query_id)
        if name:
            self.names[key] = name
        return self.names.get(key, key)

    def onQueryStarted(self, event: Any) -> None:
        name = self._name(event.id, event.name)
        self.active.labels(self.layer, name).set(1)
        self.progress_at.labels(self.layer, name).set(time.time())

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        name = self._name(p.id, p.name)
        self.progress_at.labels(self.layer, name).set(time.time())
        self.batch_id.labels(self.layer, name).set(p.batchId)
        self.input_rows.labels(self.layer, name).inc(p.numInputRows)
        self.duration.labels(self.layer, name).set(p.batchDuration / 1000)
        behind = kafka_lag(p.sources)
        if behind is not None:
            self.lag.labels(self.layer, name).set(behind)

    def onQueryIdle(self, event: Any) -> None:
        self.progress_at.labels(self.layer, self._name(event.id)).set(time.time())

    def onQueryTerminated(self, event: Any) -> None:
        self.active.labels(self.layer, self._name(event.id)).set(0)


def serve(spark: SparkSession, layer: str, host: str, port: int) -> CollectorRegistry:
    """Register the listener and serve /metrics on host:port (a busy port is logged, not fatal);
    the registry, for the driver's other metrics (common/upkeep.py)."""
    registry = CollectorRegistry()
    spark.streams.addListener(QueryMetrics(layer, registry))
    supervisor_restarts(registry, os.environ)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        log.error(
            "metrics: cannot serve on %s:%s (%s); Prometheus will see this driver down",
            host,
            port,
            err,
        )
        return registry
    log.info("metrics: http://%s:%s/metrics", host, port)
    return registry
