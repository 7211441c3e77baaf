"""The producer service: connections -> router -> gap tracker -> Kafka, and its lifecycle.

`Producer.on_frame` is the hot path, called on each connection's thread with
the frame's bytes: route it, drop what was already published (ids for trades,
aggTrades and diff depth; identical bytes during a rollover overlap for the
rest), hand gaps to the backfiller, send the record. Every frame ends in a
topic, in the quarantine topic with a reason, or in the duplicate counter.

`run()` blocks until `stop()` (SIGTERM/SIGINT in `__main__`), which closes
the connections, lets the backfill finish its page, flushes Kafka and saves
the last delivered ids.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from producer.backfill import Backfiller
from producer.binance.client import Connection, StreamClient
from producer.binance.rest import RestClient, RestError
from producer.binance.streams import stream_groups
from producer.gaps import BACKFILLABLE, GapTracker
from producer.metrics import MetricsServer, ProducerMetrics
from producer.resume import topic_tail_ids
from producer.router import Control, Quarantined, Routed, Router
from producer.sink import KafkaSink
from streaming_jobs.common.settings import Settings
from streaming_jobs.common.supervised import supervisor_restarts

log = logging.getLogger(__name__)

_STATE_SAVE_S = 1.0


class Producer:
    def __init__(self, settings: Settings, metrics: ProducerMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or ProducerMetrics()
        cfg = settings.producer
        self.groups = stream_groups(settings.symbols, cfg.max_streams_per_connection)
        subscribed = frozenset(s for g in self.groups for s in g.streams)
        self.router = Router(settings, subscribed)
        self.tracker = GapTracker(settings.producer_state_file())
        self.metrics.gaps_open.set_function(lambda: len(self.tracker.pending_gaps()))
        supervisor_restarts(self.metrics.registry, os.environ)
        self.sink = KafkaSink(
            settings.kafka_bootstrap_servers,
            self.metrics,
            settings.producer_state_file().with_name("undelivered.log"),
        )
        self._stop = threading.Event()
        self.rest = RestClient(cfg.rest_base_url, self.metrics, stop=self._stop, max_retries=2)
        self.backfiller = Backfiller(
            RestClient(cfg.rest_base_url, self.metrics, stop=self._stop),
            self.router,
            self.sink,
            self.tracker,
            self.metrics,
            page_limit=cfg.backfill_page_limit,
            max_records=cfg.backfill_max_records,
            stop=self._stop,
        )
        self.client = StreamClient(self.groups, cfg, self.on_frame, self.metrics)
        self._handled = 0
        self._handled_lock = threading.Lock()
        self._received: dict[tuple[str, str], Any] = {}
        self._seen_lock = threading.Lock()
        self._seen_in_overlap: dict[str, set[int]] = {}
        self._handlers: dict[type, Callable[..., None]] = {
            Routed: self._publish,
            Quarantined: self._quarantine,
            Control: self._control,
        }

    # -- the hot path ---------------------------------------------------------

    def on_frame(self, raw: bytes, recv_ns: int, conn: Connection) -> None:
        route = self.router.route(raw, recv_ns, conn.conn_id)
        self._handlers[type(route)](route, conn)
        with self._handled_lock:
            self._handled += 1

    def _quarantine(self, route: Quarantined, conn: Connection) -> None:
        self.metrics.quarantined.labels(route.reason).inc()
        log.warning("quarantined a frame from %s: %s", conn.conn_id, route.reason)
        self.sink.send(route.record)

    def _control(self, route: Control, conn: Connection) -> None:
        log.warning("%s on %s: replacing the connection", route.event, conn.conn_id)
        self.client.server_shutdown(conn)

    def _publish(self, route: Routed, conn: Connection) -> None:
        # labels() costs a lookup under a lock; keep each child (hot path).
        counter = self._received.get((route.kind, route.symbol))
        if counter is None:
            counter = self.metrics.frames_received.labels(route.kind, route.symbol)
            self._received[(route.kind, route.symbol)] = counter
        counter.inc()
        if self._duplicate_in_overlap(route, conn):
            self._duplicate(route, conn)
            return
        if route.kind in BACKFILLABLE:
            first_key = "t" if route.kind == "trade" else "a"
            record_id = route.ids[first_key]
            new, gap = self.tracker.observe(route.kind, route.symbol, record_id)
            if not new:
                self._duplicate(route, conn)
                return
            if gap is not None:
                self.metrics.gaps_detected.labels(route.kind, route.symbol).inc()
                log.warning(
                    "gap in %s %s: ids %d..%d (%d missing) before %s",
                    route.kind,
                    route.symbol,
                    gap.first_id,
                    gap.last_id,
                    gap.size,
                    conn.conn_id,
                )
                self.backfiller.enqueue(gap)
                self.tracker.save()  # a gap must survive a kill -9 right after it
            kind, symbol = route.kind, route.symbol
            self.sink.send(route.record, lambda: self.tracker.delivered(kind, symbol, record_id))
            return
        if route.depth_range is not None:
            first, last = route.depth_range
            new, gap = self.tracker.observe("depth", route.symbol, first, last)
            if not new:
                self._duplicate(route, conn)
                return
            if gap is not None:
                self.metrics.gaps_detected.labels("depth", route.symbol).inc()
        self.sink.send(route.record)

    def _duplicate(self, route: Routed, conn: Connection) -> None:
        self.metrics.duplicates.labels(route.kind).inc()
        self.client.duplicate_seen(conn)

    def _duplicate_in_overlap(self, route: Routed, conn: Connection) -> bool:
        """During a rollover both connections carry the same frames, byte for byte."""
        group = conn.group.name
        if not self.client.in_overlap(group):
            if group in self._seen_in_overlap:
                with self._seen_lock:
                    self._seen_in_overlap.pop(group, None)
            return False
        digest = hash(route.record.value)
        with self._seen_lock:
            seen = self._seen_in_overlap.setdefault(group, set())
            if digest in seen:
                return True
            seen.add(digest)
            return False

    # -- lifecycle ------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, object]]:
        live, detail = self.client.health()
        # For `make demo ONCE=1` and tests: everything handled is in Kafka.
        detail.update(
            frames_handled=self._handled,
            pending_records=self.sink.pending(),
            backfill_idle=self.backfiller.idle.is_set(),
        )
        return live, detail

    def run(self) -> None:
        services = self.settings.services
        server = MetricsServer(
            self.metrics, self.health, services.host, services.producer_metrics_port
        ).start()
        streams = sum(len(g.streams) for g in self.groups)
        log.info(
            "producer: %d streams on %d connection(s) to %s; metrics on %s:%d",
            streams,
            len(self.groups),
            self.settings.producer.ws_base_url,
            services.host,
            server.port,
        )
        self.tracker.resume_from(topic_tail_ids(self.settings))
        for gap in self.tracker.pending_gaps():
            self.backfiller.enqueue(gap)
        self._sync_clock()
        self.backfiller.start()
        self.client.start()
        last_sync = time.monotonic()
        try:
            while not self._stop.wait(_STATE_SAVE_S):
                self.tracker.save()
                if time.monotonic() - last_sync >= self.settings.producer.clock_sync_s:
                    self._sync_clock()
                    last_sync = time.monotonic()
        finally:
            self.client.stop()
            self.backfiller.join(timeout=30)
            undelivered = self.sink.close()
            self.tracker.save(force=True)
            server.stop()
            log.info("producer stopped (%d undelivered)", undelivered)

    def stop(self) -> None:
        self._stop.set()

    def _sync_clock(self) -> None:
        try:
            self.router.clock_offset_ns = self.rest.clock_offset_ns()
        except (RestError, KeyError, TypeError, ValueError) as err:
            log.warning(
                "could not read the exchange's clock (%s); keeping offset %d ns",
                err,
                self.router.clock_offset_ns,
            )
