"""Where each trade series stopped, read back from the tail of its Kafka topic.

The state file records the last delivered id per symbol every second; a
`kill -9` can leave it a little behind, or it can be lost with the state
directory. At start the producer also reads the last records of each
partition of the trade and aggTrade topics (key = symbol, so a symbol's
records are ordered in one partition) and resumes from whichever is later.
"""

from __future__ import annotations

import json
import logging

from kafka import KafkaConsumer, TopicPartition

from streaming_jobs.common.settings import Settings

log = logging.getLogger(__name__)

# The id that orders each series, by stream type.
ID_KEYS = {"trade": "t", "aggTrade": "a"}
_TAIL = 200  # records read back per partition: live frames come in id order


def topic_tail_ids(settings: Settings, timeout_s: float = 30.0) -> dict[tuple[str, str], int]:
    last: dict[tuple[str, str], int] = {}
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        for kind, id_key in ID_KEYS.items():
            topic = settings.topic(kind).name
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            if not partitions:
                continue
            end = consumer.end_offsets(partitions)
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, max(0, end[tp] - _TAIL))
            remaining = {tp for tp in partitions if consumer.position(tp) < end[tp]}
            while remaining:
                batches = consumer.poll(timeout_ms=int(timeout_s * 1000))
                if not batches:
                    log.warning("reading the tail of %s timed out", topic)
                    break
                for tp, records in batches.items():
                    for record in records:
                        _note(last, kind, id_key, record.key, record.value)
                    if consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    finally:
        consumer.close()
    return last


def _note(
    last: dict[tuple[str, str], int], kind: str, id_key: str, key: bytes | None, value: bytes
) -> None:
    try:
        record_id = json.loads(value)["data"][id_key]
    except (ValueError, KeyError, TypeError):
        return  # not ours to judge here: the record is already in Kafka
    if key and type(record_id) is int:
        series = (kind, key.decode(errors="replace"))
        last[series] = max(last.get(series, -1), record_id)
