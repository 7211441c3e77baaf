"""`make demo ONCE=1`: wait until the replayed capture is entirely in Kafka, then report.

Done means: the replay exchange has played every loop; the producer has
handled every frame it received, has no record in flight and no backfill
pending, with its handled count unchanged across two polls; and the bronze
queries have committed everything in Kafka (lag 0), silver every commit of
the bronze table it reads, and gold every commit of silver. Exits 1 with the
reason when the deadline (DEMO_TIMEOUT_S, default 1800) passes first.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.settings import load_settings


def main() -> int:
    settings = load_settings()
    handled, why = progress.await_settled(settings, float(os.environ.get("DEMO_TIMEOUT_S", "1800")))
    if handled < 0:
        print(f"demo: not finished before the deadline ({why})", file=sys.stderr)
        return 1
    return report(settings, handled)


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
