"""Proof (a): kafka-python produces, Spark's Kafka source reads the exact bytes back."""

from __future__ import annotations

import uuid
from typing import Any

from kafka import KafkaProducer
from kafka.admin import NewTopic

from producer.topics import admin_client
from streaming_jobs.common.settings import Settings


def read_topic_once(spark: Any, settings: Settings, topic: str, checkpoint: str) -> list[Any]:
    """One availableNow run of a checkpointed query; returns the rows it read."""
    rows: list[Any] = []

    def collect(batch: Any, batch_id: int) -> None:
        rows.extend(batch.collect())

    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("includeHeaders", "true")
        .load()
        .writeStream.foreachBatch(collect)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    try:
        assert query.awaitTermination(120), "the availableNow query did not finish in 120 s"
        assert query.exception() is None
        return sorted(rows, key=lambda r: r.offset)
    finally:
        query.stop()


def test_spark_reads_what_kafka_python_produced(
    services: Settings, spark: Any, tmp_path: Any
) -> None:
    topic = f"proof.kafka.{uuid.uuid4().hex[:8]}"
    admin = admin_client(services)
    admin.create_topics([NewTopic(topic, 1, 1)], wait_for_metadata=True)
    admin.close()
    frame = b'{"stream":"btcusdt@trade","data":{"e":"trade","p":"61234.01000000"}}'
    producer = KafkaProducer(
        bootstrap_servers=services.kafka_bootstrap_servers, acks="all", retries=5
    )
    producer.send(topic, key=b"BTCUSDT", value=frame, headers=[("recv_ns", b"1723161253123456789")])
    producer.flush(timeout=30)

    checkpoint = str(tmp_path / "checkpoint")
    (row,) = read_topic_once(spark, services, topic, checkpoint)
    assert bytes(row.key) == b"BTCUSDT"
    assert bytes(row.value) == frame  # not re-serialised: byte for byte
    assert [(h.key, bytes(h.value)) for h in row.headers] == [("recv_ns", b"1723161253123456789")]
    assert (row.topic, row.partition, row.offset) == (topic, 0, 0)

    # A restart from the same checkpoint reads only what is new.
    producer.send(topic, key=b"ETHUSDT", value=b"second")
    producer.flush(timeout=30)
    producer.close()
    (row,) = read_topic_once(spark, services, topic, checkpoint)
    assert (bytes(row.key), bytes(row.value), row.offset) == (b"ETHUSDT", b"second", 1)
