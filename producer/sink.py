"""The Kafka side of the producer: delivery policy, retries, flush on stop.

kafka-python with `acks=all` and idempotence (the client retries a failed
request itself, without duplicates, until `delivery_timeout_ms`). When a
delivery still fails (the broker stayed away longer than that), the record is
counted and sent again; nothing is dropped while the producer runs. At
shutdown `close()` flushes; whatever is still undelivered then is written to
a dead-letter file beside the state, counted and logged, never silently lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from producer.metrics import ProducerMetrics
from producer.router import Record

log = logging.getLogger(__name__)

Delivered = Callable[[], None]


class KafkaSink:
    def __init__(
        self,
        bootstrap_servers: str,
        metrics: ProducerMetrics,
        dead_letter: Path,
        *,
        delivery_timeout_ms: int = 120_000,
        linger_ms: int = 5,
        max_pending: int = 50_000,
    ):
        self._metrics = metrics
        self._dead_letter = dead_letter
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id="lakehouse-producer",
            acks="all",
            enable_idempotence=True,
            retries=2**31 - 1,
            max_in_flight_requests_per_connection=5,
            delivery_timeout_ms=delivery_timeout_ms,
            request_timeout_ms=min(30_000, delivery_timeout_ms - linger_ms - 1),
            linger_ms=linger_ms,
            max_request_size=4 * 1024 * 1024,
            # Backpressure: when Kafka is away and the buffer is full, send()
            # blocks the connection thread instead of dropping.
            max_block_ms=24 * 3600 * 1000,
        )
        self._lock = threading.Lock()
        # kafka-python 3.0 buffers without bound; this bound is the
        # backpressure: when Kafka falls behind (or is away), send() blocks
        # the connection thread instead of growing memory until it fails.
        self._slots = threading.Semaphore(max_pending)
        self._in_flight: dict[int, Record] = {}
        self._next_id = 0
        self._closing = False

    def send(self, record: Record, on_delivered: Delivered | None = None) -> None:
        self._slots.acquire()
        with self._lock:
            token = self._next_id
            self._next_id += 1
            self._in_flight[token] = record
        self._send(token, record, on_delivered, time.monotonic())

    def _send(
        self, token: int, record: Record, on_delivered: Delivered | None, started: float
    ) -> None:
        future = self._producer.send(
            record.topic, value=record.value, key=record.key, headers=list(record.headers)
        )
        future.add_callback(self._ok, token, record, on_delivered, started)
        future.add_errback(self._failed, token, record, on_delivered, started)

    def _ok(
        self,
        token: int,
        record: Record,
        on_delivered: Delivered | None,
        started: float,
        _metadata: Any,
    ) -> None:
        with self._lock:
            self._in_flight.pop(token, None)
        self._slots.release()
        self._metrics.frames_published.labels(record.topic).inc()
        self._metrics.produce_latency.observe(time.monotonic() - started)
        if on_delivered is not None:
            on_delivered()

    def _failed(
        self,
        token: int,
        record: Record,
        on_delivered: Delivered | None,
        started: float,
        error: Exception,
    ) -> None:
        self._metrics.delivery_errors.labels(record.topic).inc()
        if self._closing:
            return  # stays in _in_flight: close() writes it to the dead-letter file
        log.warning("delivery to %s failed (%r); sending again", record.topic, error)
        # Re-send from another thread: this callback runs on the client's I/O thread.
        threading.Thread(
            target=self._resend, args=(token, record, on_delivered, started), daemon=True
        ).start()

    def _resend(
        self, token: int, record: Record, on_delivered: Delivered | None, started: float
    ) -> None:
        time.sleep(1.0)  # back off before trying a broker that just failed us
        try:
            self._send(token, record, on_delivered, started)
        except KafkaError as err:
            log.error("re-send to %s failed at once: %r", record.topic, err)
            self._failed(token, record, on_delivered, started, err)

    def pending(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 60.0) -> int:
        """Flush, then close; returns how many records went to the dead-letter file."""
        deadline = time.monotonic() + timeout_s
        try:
            while self.pending() and time.monotonic() < deadline:
                self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaError as err:
            log.error("flush at shutdown failed: %r", err)
        self._closing = True
        with self._lock:
            left = list(self._in_flight.values())
            self._in_flight.clear()
        if left:
            self._write_dead_letter(left)
        self._producer.close(timeout=5)
        return len(left)

    def _write_dead_letter(self, records: list[Record]) -> None:
        self._dead_letter.parent.mkdir(parents=True, exist_ok=True)
        with self._dead_letter.open("ab") as out:
            for record in records:
                hdrs = dict(record.headers)
                out.write(
                    b"%s %s %s\n" % (hdrs.get("recv_ns", b"0"), record.topic.encode(), record.value)
                )
        self._metrics.undeliverable.inc(len(records))
        log.error(
            "%d records could not be delivered before shutdown; kept in %s",
            len(records),
            self._dead_letter,
        )
