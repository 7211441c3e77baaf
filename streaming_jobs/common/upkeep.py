"""A layer's table upkeep, apart from its batches: the clustering its writers plan.

A table whose write path clusters (`WritePath.cluster_every`) has its writer
plan a clustering every N commits; the rewrite itself runs here, in a daemon
thread of the layer's driver, every `EVERY_S` seconds for each plan pending,
in its own FAIR pool (conf/fairscheduler.xml: it gets no core before a
query's batch). A batch never waits for the day's small files to be
rewritten, and while a rewrite runs, the writer goes on committing new files
beside it (a pending plan holds back only the next plan).

A failed run is logged and counted (lakehouse_clustering_failures_total);
the plan stays pending and is tried again, the table skipped for twice as
long after each failure in a row (up to `BACKOFF_MAX_S`). A plan a killed
driver left in flight is rolled back and run again by the next driver.

    lakehouse_clustering_runs_total{layer,table}      plans run to completion
    lakehouse_clustering_failures_total{layer,table}  runs that raised
    lakehouse_clustering_seconds{layer,table}         the last run's duration
    lakehouse_clustering_running{layer,table}         1 while a run is under way
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from pyspark.sql import SparkSession

from streaming_jobs.common.hudi import HudiTable, cluster_pending, pending_clustering
from streaming_jobs.common.settings import Settings
from streaming_jobs.common.spark import in_pool

log = logging.getLogger("upkeep")

# A plan waits at most this long for its run (plans come every N commits:
# every 30 s on the fast lane at its 1-s trigger).
EVERY_S = 10.0
POOL = "upkeep"
BACKOFF_MAX_S = 600.0


class Upkeep:
    """Runs the pending clustering of a layer's tables, one table at a time."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        layer: str,
        tables: Iterable[HudiTable],
        registry: CollectorRegistry | None = None,
    ):
        self._spark = spark
        self._layer = layer
        self._tables = [(t, settings.table_path(t.name)) for t in tables if t.write.cluster_every]
        registry = registry if registry is not None else CollectorRegistry()
        labels = ("layer", "table")
        self._runs = Counter(
            "lakehouse_clustering_runs", "clustering plans run", labels, registry=registry
        )
        self._failures = Counter(
            "lakehouse_clustering_failures",
            "clustering runs that failed",
            labels,
            registry=registry,
        )
        self._seconds = Gauge(
            "lakehouse_clustering_seconds", "the last run's seconds", labels, registry=registry
        )
        self._running = Gauge(
            "lakehouse_clustering_running",
            "1 while a clustering run is under way",
            labels,
            registry=registry,
        )
        self._failed: dict[str, tuple[int, float]] = {}  # table -> failures in a row, retry at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{layer}-upkeep", daemon=True)

    def start(self) -> None:
        if self._tables:
            self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """No new run starts; `wait`: for the one under way to end."""
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        in_pool(self._spark, POOL)
        while not self._stop.wait(EVERY_S):
            self.run_once()

    def run_once(self) -> int:
        """Run every pending plan of every table now; how many ran. Never raises."""
        ran = 0
        for table, path in self._tables:
            if self._stop.is_set():
                break
            failures, retry_at = self._failed.get(table.name, (0, 0.0))
            if time.monotonic() < retry_at:
                continue
            started = time.perf_counter()
            running = self._running.labels(self._layer, table.name)
            try:
                instants = pending_clustering(self._spark, path)
                if instants:
                    running.set(1)
                    cluster_pending(self._spark, table, path, instants)
            except Exception:  # the thread outlives any failed run
                wait = min(EVERY_S * 2**failures, BACKOFF_MAX_S)
                self._failed[table.name] = (failures + 1, time.monotonic() + wait)
                self._failures.labels(self._layer, table.name).inc()
                log.exception("%s: clustering failed; tried again in %.0f s", table.name, wait)
                continue
            finally:
                running.set(0)
            self._failed.pop(table.name, None)
            if instants:
                took = time.perf_counter() - started
                ran += len(instants)
                self._runs.labels(self._layer, table.name).inc(len(instants))
                self._seconds.labels(self._layer, table.name).set(took)
                log.info("%s: clustered %s in %.1f s", table.name, ",".join(instants), took)
        return ran
