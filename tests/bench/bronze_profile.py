"""Where a bronze batch's time goes: one lane's BronzeBatch on static batches, piece by piece.

    python -m tests.bench.bronze_profile [--lane bronze|bronze_fast] [--batches 4]

A profile, not a benchmark (nothing is written to docs/bench): it explains
bench-bronze's throughput figure. The records are bench-bronze's backlog (the
real BTCUSDT + ETHUSDT capture, looped; for the bulk lane 88% book tickers,
12% diff depth), built as Kafka rows in memory (no broker), each in the partition
of its topic that the producer's client gives its key (a Spark partition per
topic partition, as the Kafka source reads them: a topic's records are not spread
evenly), `--records` a batch as in bench-bronze, one SparkSession local[2],
nothing else running.

1. Each batch through the lane's BronzeBatch (the counting job, which parses
   and fills the held frames, and the Hudi commits timed apart), then the same
   records written as Parquet: the bench's peer without Kafka.
2. Then on one batch, each piece alone into Spark's noop sink (median of 5):
   the raw records, the envelope, each route's parse, a route's held frame
   (as the job holds it), the count over the held routes.
3. The driver JVM's CPU over the batches (/proc), against their wall time.
4. With `--timeline`: the last batch's Spark jobs in order (from Spark's event
   log): when each started after the batch did, how long it ran, its tasks,
   and the driver-only time between them (planning, Hudi's driver work).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from producer.replay.captures import merge_captures
from streaming_jobs.bronze import job as bronze
from streaming_jobs.bronze.transform import with_envelope
from streaming_jobs.common.frames import held
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings, stream_kind
from tests.bench.bronze_bench import looped_frames, session
from tests.bench.producer_bench import CAPTURES
from tests.bench.results import median_time
from tests.conftest import write_test_conf

STATE = PROJECT_ROOT / ".state" / "bench-bronze-profile"
KAFKA_ROWS = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
    "timestampType int, headers array<struct<key:string,value:binary>>"
)


def kafka_rows(settings: Settings, reads: tuple[str, ...], count: int) -> list[tuple[Any, ...]]:
    """`count` records of the lane's topics, as the Kafka source gives them."""
    topics = {kind: spec.name for kind, spec in settings.pipeline.kafka.topics.items()}
    capture = merge_captures(CAPTURES).frames
    share = sum(stream_kind(f.stream.split("@", 1)[1]) in reads for f in capture) / len(capture)
    now = time.time_ns()
    rows: list[tuple[Any, ...]] = []
    offsets: dict[tuple[str, int], int] = {}
    for frame in looped_frames(int(count / share) + len(capture)):
        kind = stream_kind(frame.stream.split("@", 1)[1])
        if kind not in reads:
            continue
        headers = [
            ("recv_ns", str(now).encode()),
            ("stream", frame.stream.encode()),
            ("backfill", b"0"),
            ("clock_offset_ns", str(frame.recv_ns - now).encode()),
        ]
        symbol = frame.stream.split("@", 1)[0].upper().encode()
        # The partition the producer's client gives a keyed record (librdkafka's
        # default partitioner: CRC32 of the key), and the next offset there.
        partition = zlib.crc32(symbol) % settings.pipeline.kafka.topics[kind].partitions
        offset = offsets[(kind, partition)] = offsets.get((kind, partition), -1) + 1
        rows.append(
            (
                symbol,
                frame.raw,
                topics[kind],
                partition,
                offset,
                dt.datetime(2024, 8, 9),
                0,
                headers,
            )
        )
        if len(rows) == count:
            break
    return rows


def kafka_batch(
    spark: SparkSession, settings: Settings, lane: bronze.Lane, rows: list[tuple[Any, ...]]
) -> DataFrame:
    """`rows` as the Kafka source reads them: a Spark partition per topic partition of
    the lane's topics, holding that partition's records (none where no key hashes to
    it), cached."""
    by_partition: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
    for row in rows:
        by_partition.setdefault((row[2], row[3]), []).append(row)
    parts = [
        spark.createDataFrame(by_partition.get((topic.name, p), []), KAFKA_ROWS).coalesce(1)
        for topic in (settings.pipeline.kafka.topics[kind] for kind in lane.reads)
        for p in range(topic.partitions)
    ]
    out = parts[0]
    for part in parts[1:]:
        out = out.union(part)
    out = out.cache()
    out.count()
    return out


class Timed:
    """Seconds spent in wrapped functions, by name, since the last `take`."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - started

        return timed

    def take(self) -> dict[str, float]:
        out, self.spent = self.spent, {}
        return out


def cpu_seconds(spark: SparkSession) -> float:
    pid = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches(
    spark: SparkSession, settings: Settings, lane: bronze.Lane, args: Any
) -> tuple[float, float]:
    """Runs the batches; the last one's start and end (epoch ms)."""
    timed = Timed()
    # The counting job is the batch's collect (and the sequence guards' first read of a
    # date, in the first batch); the commits are write_batch.
    DataFrame.collect = timed.wrap("count", DataFrame.collect)  # type: ignore[method-assign]
    bronze.write_batch = timed.wrap("commits", bronze.write_batch)  # type: ignore[attr-defined]
    rows = kafka_rows(settings, lane.reads, args.records * args.batches)
    call = bronze.BronzeBatch(settings, lane)
    wall = cpu = 0.0
    last = (0.0, 0.0)
    print("batch | bronze s | of it: count job, commits | same records as Parquet s", flush=True)
    for n in range(args.batches):
        part = rows[n * args.records : (n + 1) * args.records]
        df = kafka_batch(spark, settings, lane, part)
        started, cpu_started = time.perf_counter(), cpu_seconds(spark)
        began_ms = time.time() * 1000
        call(df, n)
        took = time.perf_counter() - started
        last = (began_ms, time.time() * 1000)
        if n > 0:  # the first batch creates the tables and warms the JVM
            wall += took
            cpu += cpu_seconds(spark) - cpu_started
        spent = timed.take()
        started = time.perf_counter()
        df.write.mode("append").parquet(str(STATE / "parquet"))
        parquet = time.perf_counter() - started
        print(
            f"{n} | {took:.2f} | {spent.get('count', 0):.2f}, {spent.get('commits', 0):.2f} | "
            f"{parquet:.2f}",
            flush=True,
        )
        df.unpersist()
    if wall:
        print(f"driver JVM after the first batch: {cpu / wall:.2f} cores over {wall:.1f} s")
    return last


def timeline(events: Path, start_ms: float, end_ms: float) -> None:
    """The jobs Spark's event log holds between start_ms and end_ms, with the gaps."""
    jobs: dict[int, dict[str, Any]] = {}
    for log in events.iterdir():
        for line in log.open():
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerJobStart":
                stages = event["Stage Infos"]
                jobs[event["Job ID"]] = {
                    "start": event["Submission Time"],
                    "tasks": sum(s["Number of Tasks"] for s in stages),
                    "name": stages[-1]["Stage Name"] if stages else "",
                }
            elif kind == "SparkListenerJobEnd" and event["Job ID"] in jobs:
                jobs[event["Job ID"]]["end"] = event["Completion Time"]
    within = sorted(
        (j for j in jobs.values() if start_ms <= j["start"] <= end_ms and "end" in j),
        key=lambda j: j["start"],
    )
    print(f"\nthe last batch's jobs ({(end_ms - start_ms) / 1000:.2f} s; ms after its start):")
    print("start | ran | tasks | driver only before it | job")
    free_until, driver_only = start_ms, 0.0
    for job in within:
        gap = max(0.0, job["start"] - free_until)
        driver_only += gap
        print(
            f"{job['start'] - start_ms:.0f} | {job['end'] - job['start']:.0f} | {job['tasks']} | "
            f"{gap:.0f} | {job['name'][:70]}"
        )
        free_until = max(free_until, job["end"])
    driver_only += max(0.0, end_ms - free_until)
    print(f"no job running (the driver's own work): {driver_only / 1000:.2f} s")


def pieces(spark: SparkSession, settings: Settings, lane: bronze.Lane, args: Any) -> None:
    rows = kafka_rows(settings, lane.reads, args.records)
    df = kafka_batch(spark, settings, lane, rows)
    topics = settings.pipeline.kafka.topics
    envelope = with_envelope({spec.name: kind for kind, spec in topics.items()})

    def noop(frame: DataFrame) -> Callable[[], None]:
        return lambda: frame.write.format("noop").mode("overwrite").save()

    routes = [r for r in bronze.ROUTES if r.topic in lane.reads]
    print(f"\none batch of {len(rows):,} records, each piece alone (noop sink, median of 5):")
    print(f"raw records: {median_time(noop(df), runs=5):.3f} s")
    envelope_s = median_time(noop(df.transform(envelope)), runs=5)
    print(f"envelope (lineage, stream, symbol, first reason): {envelope_s:.3f} s")
    # Nothing is cached yet, so each route's parse runs on the raw records.
    for route in routes:
        only = df.transform(envelope).transform(route.only)
        rows_of = only.count()
        if rows_of:
            parse_s = median_time(noop(only.transform(route.parse)), runs=5)
            print(f"envelope + {route.kind} parse ({rows_of:,} rows): {parse_s:.3f} s")
    enveloped = held(df.transform(envelope))
    enveloped.count()
    parsed = {}
    for route in routes:
        started = time.perf_counter()
        parsed[route] = held(enveloped.transform(route.only).transform(route.parse))
        if parsed[route].count():
            took = time.perf_counter() - started
            print(f"{route.kind} parse + hold, from the held envelope: {took:.3f} s (once)")
    keys, aggregates = bronze._tally_columns()
    outcomes = bronze._union([bronze._outcome(p, r) for r, p in parsed.items()])

    def count() -> None:
        outcomes.groupBy(*keys).agg(*aggregates).collect()

    count_s = median_time(count, runs=5)
    print(f"the count over the held routes: {count_s:.3f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bronze_profile")
    parser.add_argument("--lane", choices=("bronze", "bronze_fast"), default="bronze")
    parser.add_argument("--batches", type=int, default=4, help="batches (the first is warm-up)")
    parser.add_argument("--records", type=int, default=50_000, help="records a batch")
    parser.add_argument("--timeline", action="store_true", help="the last batch's jobs")
    args = parser.parse_args(argv)
    shutil.rmtree(STATE, ignore_errors=True)
    write_test_conf(STATE / "conf", for_tests=False)
    settings = load_settings(STATE / "conf", {**os.environ, "STATE_DIR": str(STATE)})
    events = STATE / "events"
    extra = None
    if args.timeline:
        events.mkdir(parents=True)
        extra = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events)}
    spark = session(settings, extra)
    spark.sparkContext.setLogLevel("ERROR")
    lane = next(lane for lane in bronze.lanes(settings) if lane.query == args.lane)
    try:
        last = batches(spark, settings, lane, args)
        pieces(spark, settings, lane, args)
    finally:
        spark.stop()  # closes the event log
    if args.timeline:
        timeline(events, *last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
