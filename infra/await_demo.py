"""`make demo ONCE=1`: wait until the replayed capture is entirely in Kafka, then report.

Done means: the replay exchange has played every loop; the producer has
handled every frame it received, has no record in flight and no backfill
pending, with its handled count unchanged across two polls; and the bronze
queries have committed everything in Kafka (lag 0), silver every commit of
the bronze table it reads, and gold every commit of silver. Exits 1 with the
reason when the deadline (DEMO_TIMEOUT_S, default 1800) passes first.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.settings import load_settings

POLL_S = 1.0


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:  # /health answers 503 with a body
        return json.load(err)


def main() -> int:
    settings = load_settings()
    host, services = settings.services.host, settings.services
    replay = f"http://{host}:{services.replay_port}/control/status"
    health = f"http://{host}:{services.producer_metrics_port}/health"
    deadline = time.monotonic() + float(os.environ.get("DEMO_TIMEOUT_S", "1800"))
    last_handled, why = -1, "starting"
    while time.monotonic() < deadline:
        try:
            status, producer = get_json(replay), get_json(health)
        except (OSError, ValueError) as err:
            why = f"not answering: {err}"
        else:
            handled = producer["frames_handled"]
            drained = producer["pending_records"] == 0 and producer["backfill_idle"]
            bronze_lag = progress.bronze_lag(settings) if drained else None
            silver_lag = (
                progress.commits_behind(settings, "silver", progress.silver_source(settings))
                if bronze_lag == 0
                else None
            )
            gold_lag = (
                progress.commits_behind(settings, "gold", progress.GOLD_SOURCE)
                if silver_lag == 0
                else None
            )
            settled = status["done"] and drained and handled == last_handled
            if settled and bronze_lag == 0 and silver_lag == 0 and gold_lag == 0:
                return report(settings, handled)
            why = (
                f"replay {'done' if status['done'] else 'playing'}, producer handled {handled}, "
                f"{producer['pending_records']} in flight, bronze lag {bronze_lag}, "
                f"silver {silver_lag} and gold {gold_lag} commits behind"
            )
            last_handled = handled
        time.sleep(POLL_S)
    print(f"demo: not finished before the deadline ({why})", file=sys.stderr)
    return 1


def report(settings: Any, handled: int) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        print(f"demo: the capture is in Kafka ({handled} frames handled by the producer)")
        for kind, spec in settings.pipeline.kafka.topics.items():
            partitions = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
            total = sum(consumer.end_offsets(partitions).values())
            print(f"  {spec.name:<24} {total:>9} records ({kind})")
    finally:
        consumer.close()
    print("tables (last commit, UTC):")
    for table in lakefiles.tables(settings):
        when = lakefiles.last_commit(settings, table)
        print(f"  {table:<24} {when.isoformat(timespec='seconds') if when else '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
