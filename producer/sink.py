"""The Kafka side of the producer: delivery policy, retries, flush on stop.

librdkafka (confluent-kafka) with `acks=all` and idempotence: the client
retries a failed request itself, without duplicates, until
`delivery_timeout_ms`. When a delivery still fails (the broker stayed away
longer than that), the record is counted and sent again; nothing is dropped
while the producer runs. At shutdown `close()` flushes; whatever is still
undelivered then is written to a dead-letter file beside the state, counted
and logged, never silently lost.

Why librdkafka and not kafka-python: `make bench` measured kafka-python's
send() and its I/O thread at about 70 us of Python per record, more than
everything else the producer does for a frame together; librdkafka does that
work in C threads outside the GIL.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError, KafkaException, Message, Producer

from producer.metrics import ProducerMetrics
from producer.router import Record

log = logging.getLogger(__name__)

Delivered = Callable[[], None]
POLL_S = 0.1  # how often delivery reports are served when none is waiting


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
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": "lakehouse-producer",
                "acks": "all",
                # Key = symbol picks the partition as Java clients do (murmur2),
                # so a symbol has one partition whichever client wrote it.
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "max.in.flight.requests.per.connection": 5,
                "message.timeout.ms": delivery_timeout_ms,
                "request.timeout.ms": min(30_000, delivery_timeout_ms - linger_ms - 1),
                "linger.ms": linger_ms,
                "message.max.bytes": 4 * 1024 * 1024 + 1024,
                # Our own bound below is the backpressure; librdkafka's queue
                # must never be the one that fills.
                "queue.buffering.max.messages": max(100_000, 2 * max_pending),
                "queue.buffering.max.kbytes": 2 * 1024 * 1024,
            },
            logger=log,
        )
        self._lock = threading.Lock()
        # This bound is the backpressure: when Kafka falls behind (or is away),
        # send() blocks the connection thread instead of growing memory
        # until it fails.
        self._slots = threading.Semaphore(max_pending)
        self._in_flight: dict[int, Record] = {}
        self._next_id = 0
        self._closing = False
        self._stopped = threading.Event()
        # Delivery reports are served by poll(): one thread does nothing else.
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopped.is_set():
            self._producer.poll(POLL_S)

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
        report = functools.partial(self._report, token, record, on_delivered, started)
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    on_delivery=report,
                )
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                time.sleep(POLL_S)

    def _report(
        self,
        token: int,
        record: Record,
        on_delivered: Delivered | None,
        started: float,
        error: RdKafkaError | None,
        _message: Message,
    ) -> None:
        if error is not None:
            self._failed(token, record, on_delivered, started, error)
            return
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
        error: Any,
    ) -> None:
        self._metrics.delivery_errors.labels(record.topic).inc()
        if self._closing:
            return  # stays in _in_flight: close() writes it to the dead-letter file
        log.warning("delivery to %s failed (%r); sending again", record.topic, error)
        # Re-send from another thread: this callback runs on the delivery thread.
        threading.Thread(
            target=self._resend, args=(token, record, on_delivered, started), daemon=True
        ).start()

    def _resend(
        self, token: int, record: Record, on_delivered: Delivered | None, started: float
    ) -> None:
        time.sleep(1.0)  # back off before trying a broker that just failed us
        try:
            self._send(token, record, on_delivered, started)
        except KafkaException as err:
            log.error("re-send to %s failed at once: %r", record.topic, err)
            self._failed(token, record, on_delivered, started, err)

    def pending(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(-1 if timeout_s is None else timeout_s)

    def close(self, timeout_s: float = 60.0) -> int:
        """Flush, then close; returns how many records went to the dead-letter file."""
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline:
            self._producer.flush(max(0.1, deadline - time.monotonic()))
        self._closing = True
        # Whatever is still queued fails now (its report says "purged"), so
        # nothing reaches Kafka after it went to the dead-letter file.
        self._producer.purge()
        self._producer.flush(5)
        self._stopped.set()
        self._poller.join(timeout=5)
        with self._lock:
            left = list(self._in_flight.values())
            self._in_flight.clear()
        if left:
            self._write_dead_letter(left)
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
