"""Reading the producer's topics as a stream: the one place its source options are set.

The topics of conf/pipeline.yaml (all, or those of some stream types), from
the earliest offset the checkpoint does not cover, with the producer's
headers (lineage), optionally bounded per micro-batch.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from streaming_jobs.common.settings import Settings


def read_topics(
    spark: SparkSession,
    settings: Settings,
    max_offsets_per_trigger: int | None = None,
    kinds: tuple[str, ...] | None = None,
    min_offsets: tuple[int, int] | None = None,
) -> DataFrame:
    """The topics of stream types `kinds` (None: every topic).

    `min_offsets` (records, delay in ms): a trigger starts a batch once that many
    new records are there, or once the delay has passed since the last batch.
    """
    topics = ",".join(
        spec.name
        for kind, spec in settings.pipeline.kafka.topics.items()
        if kinds is None or kind in kinds
    )
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", topics)
        .option("startingOffsets", "earliest")
        .option("includeHeaders", "true")
    )
    if max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", max_offsets_per_trigger)
    if min_offsets is not None:
        records, delay_ms = min_offsets
        reader = reader.option("minOffsetsPerTrigger", records).option(
            "maxTriggerDelay", f"{delay_ms}ms"
        )
    return reader.load()
