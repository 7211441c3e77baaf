"""Entry point: `python -m producer [run]` publishes to Kafka; `record --out FILE` captures.

    python -m producer                     # live: conf/ symbols -> Kafka (make up)
    python -m producer record --out x.gz [--max-frames N]   # a capture file instead

Settings come from conf/ and the environment (BINANCE_WS_URL and
BINANCE_REST_URL point it at the replay exchange). SIGTERM or SIGINT stop it
cleanly: connections closed, Kafka flushed, last ids saved, exit 0. A bad
configuration exits 78 and an unreachable Kafka 69, each with one line saying
why.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

from kafka.errors import KafkaError

from producer.binance.client import Connection, StreamClient
from producer.binance.streams import stream_groups
from producer.metrics import ProducerMetrics
from producer.service import Producer
from producer.topics import admin_client, ensure_topics
from streaming_jobs.common.settings import Settings, load_settings
from streaming_jobs.common.strict import ConfigError

log = logging.getLogger("producer")
CAPTURE_HEADER = b"# lakehouse capture v1: <receive time ns> <frame as received>\n"


class Recorder:
    """Writes every data frame as `<recv_ns> <frame>`: the replay exchange reads it back."""

    def __init__(self, settings: Settings, out: Path, stop: threading.Event, max_frames: int):
        self._out: IO[bytes] = (
            gzip.open(out, "ab") if out.suffix == ".gz" else out.open("ab")  # type: ignore[assignment]  # noqa: SIM115 - closed in run()
        )
        if self._out.tell() == 0:
            self._out.write(CAPTURE_HEADER)
        self._lock = threading.Lock()
        self._stop = stop
        self._max_frames = max_frames
        self.frames = 0
        groups = stream_groups(settings.symbols, settings.producer.max_streams_per_connection)
        self.client = StreamClient(groups, settings.producer, self.on_frame, ProducerMetrics())

    def on_frame(self, raw: bytes, recv_ns: int, conn: Connection) -> None:
        line = b"%d %s\n" % (recv_ns, raw.replace(b"\n", b" "))
        with self._lock:
            if self._stop.is_set():
                return
            self._out.write(line)
            self.frames += 1
            if self.frames == self._max_frames:
                self._stop.set()

    def run(self) -> None:
        self.client.start()
        try:
            self._stop.wait()
        finally:
            self.client.stop()
            self._out.close()
            log.info("recorded %d frames", self.frames)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m producer")
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "record"])
    parser.add_argument("--out", type=Path, help="capture file for `record` (.gz to compress)")
    parser.add_argument(
        "--max-frames", type=int, default=0, help="`record` stops after this many (0: never)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.Formatter.converter = time.gmtime
    if args.mode == "record" and args.out is None:
        parser.error("record needs --out FILE")
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 78

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.mode == "record":
        Recorder(settings, args.out, stop, args.max_frames).run()
        return 0
    try:
        # kafka-python connects lazily; ask once so a wrong address fails now, clearly.
        admin = admin_client(settings, timeout_ms=8_000)
        admin.describe_cluster()
        admin.close()
        # The producer writes the topics, so it makes them match the config
        # (infra/kafka.sh does too at the broker's start; a broker that was
        # already running, or a Kafka cluster, may not have them yet).
        for change in ensure_topics(settings):
            log.info("topics: %s", change)
        producer = Producer(settings)
    except KafkaError as err:
        print(
            f"kafka at {settings.kafka_bootstrap_servers} is unreachable: {err!r}", file=sys.stderr
        )
        return 69

    def stop_producer() -> None:
        stop.wait()
        producer.stop()

    threading.Thread(target=stop_producer, daemon=True).start()
    producer.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
