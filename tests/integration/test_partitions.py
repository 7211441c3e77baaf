"""Several partitions per topic: key = symbol keeps each symbol in one partition and in
order, and the bronze job works each batch in as many tasks as its session runs at once.

The cryptofeed capture of 2021-04-05 (tests/fixtures/cryptofeed/, provenance
there) holds 10 symbols' aggTrade, bookTicker and diff-depth frames. The
replay exchange plays it to the producer, whose topics have 6 partitions;
bronze then runs once over them (availableNow) in the tests' SparkSession.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from producer.replay.captures import read_capture, stream_symbol
from streaming_jobs.bronze import tables
from streaming_jobs.bronze.job import ROUTES, lanes
from streaming_jobs.common.hudi import read_table
from streaming_jobs.common.settings import Settings
from streaming_jobs.common.spark import task_slots
from tests.integration.test_bronze import run_bronze
from tests.integration.test_producer import Run, finished, make_run  # noqa: F401
from tests.support import await_true

CAPTURE = Path(__file__).parents[1] / "fixtures" / "cryptofeed" / "BINANCE-b38f7c.0.gz"
STREAMS = ["aggTrade", "bookTicker", "depth@100ms"]
PARTITIONS = 6


def task_counts(spark: Any, run_id: str) -> set[int]:
    """The number of tasks of every stage a query ran (its jobs carry its run id as group)."""
    tracker = spark.sparkContext.statusTracker()
    counts = set()
    for job_id in tracker.getJobIdsForGroup(run_id):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else []:
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                counts.add(stage.numTasks)
    return counts


def filled_partitions(settings: Settings, kinds: tuple[str, ...]) -> int:
    """How many partitions of these stream types' topics hold records."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        partitions = [
            TopicPartition(settings.topic(kind).name, p)
            for kind in kinds
            for p in range(settings.topic(kind).partitions)
        ]
        return sum(1 for end in consumer.end_offsets(partitions).values() if end > 0)
    finally:
        consumer.close()


def test_six_partitions_keep_every_symbol_whole_and_in_order(
    make_run: Callable[..., tuple[Run, Any]],  # noqa: F811 (the fixture imported above)
    spark: Any,
) -> None:
    capture = read_capture(CAPTURE)
    symbols = sorted({stream_symbol(f.stream) or "" for f in capture.frames})
    assert len(symbols) == 10
    run, replay = make_run(
        capture=capture,
        symbols=[{"name": s, "tier": 2, "streams": STREAMS} for s in symbols],
        partitions=PARTITIONS,
    )
    run.start()
    await_true("the capture to be played and published", finished(run, replay), 240)

    # Kafka: every symbol in exactly one partition, its frames in the capture's order.
    expected: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for frame in capture.frames:
        symbol, stream = frame.stream.split("@", 1)
        expected[(stream, symbol.upper())].append(frame.raw)
    used: dict[str, set[int]] = {}
    for kind in ("aggTrade", "bookTicker"):
        records = run.records(kind)
        partitions: dict[str, set[int]] = defaultdict(set)
        values: dict[str, list[bytes]] = defaultdict(list)
        for record in records:  # in (partition, offset) order
            partitions[record.key.decode()].add(record.partition)
            values[record.key.decode()].append(record.value)
        assert all(len(p) == 1 for p in partitions.values()), f"{kind}: {dict(partitions)}"
        for symbol, sent in values.items():
            assert sent == expected[(kind, symbol)], f"{kind} {symbol}: order or content differs"
        assert len(records) == sum(len(v) for (k, _s), v in expected.items() if k == kind)
        used[kind] = {p for ps in partitions.values() for p in ps}
    # Ten symbols spread over the six partitions (by murmur2 of the key, as in Java).
    assert len(used["aggTrade"]) > 2 and len(used["bookTicker"]) > 2, used

    # Bronze: the Kafka source reads a task per partition holding records, and each
    # query works its batch in no more tasks than the session runs at once: its
    # counting job reads the envelope and every route's rows of each such task.
    run_ids = run_bronze(spark, run.settings)
    slots = task_slots(spark)
    for lane, run_id in zip(lanes(run.settings), run_ids, strict=True):
        filled = filled_partitions(run.settings, lane.reads)
        parts = 1 + sum(route.topic in lane.reads for route in ROUTES)
        counts = task_counts(spark, run_id)
        assert filled > slots > 1, f"{lane.query}: {filled} partitions, {slots} slots"
        assert slots * parts in counts, f"{lane.query}: {slots}, {counts}"
        assert filled * parts not in counts, f"{lane.query}: {filled}, {counts}"

    agg = read_table(spark, run.settings.table_path(tables.AGG_TRADES.name))
    rows = agg.select("symbol", "agg_trade_id", "kafka_partition", "kafka_offset").collect()
    by_symbol: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_symbol[row.symbol].append(row)
    capture_ids = {
        symbol: [json.loads(raw)["data"]["a"] for raw in frames]
        for (kind, symbol), frames in expected.items()
        if kind == "aggTrade"
    }
    assert set(by_symbol) == set(capture_ids)
    for symbol, symbol_rows in by_symbol.items():
        assert len({r.kafka_partition for r in symbol_rows}) == 1, symbol
        in_offset_order = [
            r.agg_trade_id for r in sorted(symbol_rows, key=lambda r: r.kafka_offset)
        ]
        assert in_offset_order == capture_ids[symbol], symbol
    assert len(rows) == sum(len(ids) for ids in capture_ids.values()) == 1240

    book = read_table(spark, run.settings.table_path(tables.BOOK_TICKER.name))
    book_counts = {r.symbol: r["count"] for r in book.groupBy("symbol").count().collect()}
    assert book_counts == {
        symbol: len({json.loads(raw)["data"]["u"] for raw in frames})
        for (kind, symbol), frames in expected.items()
        if kind == "bookTicker"
    }
