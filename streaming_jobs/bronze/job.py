"""The bronze queries: producer topics -> foreachBatch -> typed Hudi upserts + quarantine.

    ./spark-submit.sh bronze [--once]

Each micro-batch is enveloped once (lineage, stream, symbol), split by
stream type, parsed and validated (transform.py), and upserted into its
table by key; rows that fail go to `bronze_quarantine` keyed by their Kafka
coordinates. Every write is an idempotent upsert, so a batch replayed after
a crash (foreachBatch has no batch-id skip) changes nothing. Checkpoints
live under the storage profile (local disk or MinIO).

Two queries share the driver (Settings.bronze_queries): `bronze_fast` reads
the fast lane's topics (trades, aggTrades) on a short trigger and writes
their tables; `bronze` reads every other topic on the longer trigger and
writes the other tables. Each parses only its own records and writes their
quarantine rows, so a trade waits for one commit, not for the depth and
ticker commits of its batch. `bronze_quarantine` is the one table both
write: its commits take turns (QUARANTINE_TURN), so to Hudi it has one
writer, whose commits never overlap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Row, SparkSession, Window, functions as F
from pyspark.sql.streaming.query import StreamingQuery

from streaming_jobs.bronze import tables, transform as tf
from streaming_jobs.bronze.guard import Bounds, SequenceGuard, sequence_value
from streaming_jobs.common.columns import once
from streaming_jobs.common.frames import held, release
from streaming_jobs.common.hudi import (
    Batch,
    BatchLedger,
    HudiTable,
    current_batch,
    write_batch,
)
from streaming_jobs.common.kafka import read_topics
from streaming_jobs.common.layer import run_layer
from streaming_jobs.common.settings import Settings, duration_ms
from streaming_jobs.common.spark import in_pool, task_slots

log = logging.getLogger("bronze")

# Tables committed at once within a batch (see BronzeBatch._write).
UPSERT_THREADS = 4


@dataclass(frozen=True)
class Route:
    """One stream type's way from the envelope to its table."""

    kind: str
    only: Callable[[DataFrame], DataFrame]
    parse: Callable[[DataFrame], DataFrame]
    table: HudiTable
    columns: tuple[str, ...]

    @property
    def topic(self) -> str:
        """The stream type whose topic the route reads (diff depth shares depth's)."""
        return "depth" if self.kind == "depthUpdate" else self.kind


@dataclass(frozen=True)
class Lane:
    """One bronze query: what it reads, which tables it writes, how often.

    `min_records`: a trigger waits for that many new records, up to `max_delay_ms`
    after the lane's last batch (0: it never waits).
    """

    query: str
    reads: tuple[str, ...]
    writes: frozenset[str]
    trigger: str
    min_records: int = 0
    max_delay_ms: int = 0
    # Tables committed at once within a batch (see BronzeBatch._write).
    commit_threads: int = UPSERT_THREADS


def lanes(settings: Settings) -> list[Lane]:
    bronze = settings.pipeline.streaming.bronze
    queries = settings.bronze_queries()
    fast = frozenset(bronze.fast_lane)
    # Beside a fast lane, the bulk lane commits its tables one at a time: at 1k
    # frames/s its tables side by side took both cores for seconds after each
    # trigger, and the fast lane's batches in those seconds took 2.7-5.0 s
    # instead of 1.0-1.7 s (make bench-bronze's log), the trades' p99. One at a
    # time: 2.0-4.6 s (one run each; the spread between runs is as large).
    threads = 1 if fast else UPSERT_THREADS
    out = [
        Lane("bronze", queries["bronze"], _WRITTEN - fast, bronze.trigger, commit_threads=threads)
    ]
    if fast:
        out.append(
            Lane(
                "bronze_fast",
                queries["bronze_fast"],
                fast,
                bronze.fast_trigger,
                bronze.fast_min_records,
                duration_ms(bronze.fast_max_delay),
            )
        )
    return out


# Both lanes write bronze_quarantine from one driver: one commit at a time, so a
# commit never finds another's in flight (which Hudi would roll back as failed).
QUARANTINE_TURN = threading.Lock()


def _kind(kind: str, diff_depth: bool | None = None) -> Callable[[DataFrame], DataFrame]:
    def condition() -> Column:
        rows = F.col("kind") == kind
        if diff_depth is None:
            return rows
        # A record without a stream (not JSON, not UTF-8) goes with partial
        # depth, to be quarantined: a null test would drop it from both.
        diff = F.coalesce(tf.is_diff_depth(F.col("stream")), F.lit(False))
        return rows & (diff if diff_depth else ~diff)

    def select(df: DataFrame) -> DataFrame:
        return df.filter(once(("bronze", "kind", kind, diff_depth), condition))

    return select


_COMMON = ("symbol", "date", "stream", "recv_ns", *tf.LINEAGE)
ROUTES = (
    Route(
        "trade",
        _kind("trade"),
        tf.parse_trades,
        tables.TRADES,
        ("trade_id", "price", "qty", "trade_time", "event_time", "is_buyer_maker", "is_best_match"),
    ),
    Route(
        "aggTrade",
        _kind("aggTrade"),
        tf.parse_agg_trades,
        tables.AGG_TRADES,
        (
            "agg_trade_id",
            "price",
            "qty",
            "first_trade_id",
            "last_trade_id",
            "trade_time",
            "event_time",
            "is_buyer_maker",
        ),
    ),
    Route(
        "kline",
        _kind("kline"),
        tf.parse_klines,
        tables.KLINES,
        (
            "interval",
            "open_time",
            "close_time",
            "event_time",
            "first_trade_id",
            "last_trade_id",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "taker_buy_base",
            "taker_buy_quote",
            "trade_count",
            "is_closed",
            "push_version",
        ),
    ),
    Route(
        "ticker",
        _kind("ticker"),
        tf.parse_tickers,
        tables.TICKERS,
        (
            "event_time",
            "price_change",
            "price_change_pct",
            "weighted_avg_price",
            "prev_close",
            "last_price",
            "last_qty",
            "bid_price",
            "bid_qty",
            "ask_price",
            "ask_qty",
            "open_price",
            "high_price",
            "low_price",
            "volume",
            "quote_volume",
            "window_open_time",
            "window_close_time",
            "first_trade_id",
            "last_trade_id",
            "trade_count",
        ),
    ),
    Route(
        "depth",
        _kind("depth", diff_depth=False),
        tf.parse_depth,
        tables.DEPTH,
        ("last_update_id", "levels", "bids", "asks"),
    ),
    Route(
        "depthUpdate",
        _kind("depth", diff_depth=True),
        tf.parse_depth_updates,
        tables.DEPTH_UPDATES,
        ("event_time", "first_update_id", "final_update_id", "bids", "asks"),
    ),
    Route(
        "bookTicker",
        _kind("bookTicker"),
        tf.parse_book_tickers,
        tables.BOOK_TICKER,
        ("update_id", "bid_price", "bid_qty", "ask_price", "ask_qty"),
    ),
)
# The stream types bronze has tables for (every topic but the producer's quarantine).
_WRITTEN = frozenset(route.topic for route in ROUTES)
QUARANTINE_COLUMNS = ("raw", "reason", "stream", "symbol", "recv_ns", *tf.LINEAGE)


def quarantine_rows(df: DataFrame) -> DataFrame:
    def build() -> tuple[Column, list[Column]]:
        return F.col("reason").isNotNull(), [
            *map(F.col, QUARANTINE_COLUMNS),
            F.unix_millis("ingest_time").alias("ingest_ms"),
            F.to_date(F.coalesce("recv_time", "ingest_time")).alias("date"),
        ]

    rejected, columns = once(("bronze", "quarantine"), build)
    return df.filter(rejected).select(*columns)


class BronzeBatch:
    """The foreachBatch function: an ordinary (df, batch_id) callable, testable on static frames.

    Exactly once per table: a commit carries its batch's stamp and a
    replayed batch skips the tables that hold it (BatchLedger); an
    immutable table's rows pass its SequenceGuard; two copies of a key
    within a batch become one.
    """

    def __init__(self, settings: Settings, lane: Lane | None = None):
        self._settings = settings
        self._lane = lane or Lane("bronze", (), _WRITTEN, "")
        topics = settings.pipeline.kafka.topics
        self._envelope = tf.with_envelope({spec.name: kind for kind, spec in topics.items()})
        self._ledger: BatchLedger | None = None
        self._guards: dict[str, SequenceGuard] = {}
        self._slots: int | None = None

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        spark = df.sparkSession
        in_pool(spark, self._lane.query)
        if self._ledger is None:
            self._ledger = BatchLedger(spark)
        batch = current_batch(spark, self._lane.query, batch_id)
        if self._slots is None:
            self._slots = task_slots(spark)
        # Read in no more partitions than run at once: a task per Kafka partition (13
        # in the bulk lane's topics, each counted by every route) costs its scheduling
        # and a copy of the parse plan each. bronze_profile, local[2]: the fast lane's
        # counting job for 100 trades 0.42-0.53 -> 0.25-0.31 s, the bulk lane's for
        # 50,000 records 3.05-3.46 -> 1.91 s.
        enveloped = held(df.coalesce(self._slots).transform(self._envelope))
        try:
            counts = self._write(enveloped, batch)
        finally:
            release(enveloped)
        log.info(
            "%s batch %d: %s in %.1f s",
            self._lane.query,
            batch_id,
            ", ".join(f"{k} {v}" for k, v in counts.items()) or "empty",
            time.monotonic() - started,
        )

    def _write(self, enveloped: DataFrame, batch: Batch) -> dict[str, int]:
        unrouted, no_date = once(
            ("bronze", "unrouted"),
            lambda: (
                F.col("kind").isNull() | (F.col("kind") == "quarantine"),
                {"date": F.lit(None).cast("date")},
            ),
        )
        envelope_only = enveloped.filter(unrouted)
        outcomes = [_outcome(envelope_only.withColumns(no_date), None)]
        parsed = {}
        # Every route of the lane's topics (a route with no records costs an empty task,
        # less than a job to ask which are there).
        for route in ROUTES:
            if route.topic in self._lane.reads or not self._lane.reads:
                parsed[route] = held(enveloped.transform(route.only).transform(route.parse))
                outcomes.append(_outcome(parsed[route], route))
        try:
            # One job parses every route (filling what is held) and counts the outcomes, per
            # route, date and symbol with the bounds of their sequences.
            keys, aggregates = once(("bronze", "tally"), _tally_columns)
            tally = Tally(_union(outcomes).groupBy(*keys).agg(*aggregates).collect())
            counts = {"input": tally.total()}
            writes = [
                Write(route.table, self._good_rows(route, rows, tally), tally.bounds(route.kind))
                for route, rows in parsed.items()
                if tally.good(route.kind) and route.topic in self._lane.writes
            ]
            if tally.rejected():
                # Each part keeps only what a quarantine row holds before the union.
                rejected = _union(
                    [quarantine_rows(rows) for rows in (envelope_only, *parsed.values())]
                )
                writes.append(Write(tables.QUARANTINE, rejected, {}))
            # A commit is partly driver-side waiting (timeline, listing, small
            # jobs): the tables are written side by side, up to the lane's threads.
            with ThreadPoolExecutor(max_workers=self._lane.commit_threads) as pool:
                list(pool.map(lambda w: self._commit(w, batch), writes))
        finally:
            for rows in parsed.values():
                release(rows)
        counts.update(
            (route.table.name, tally.good(route.kind))
            for route in parsed
            if tally.good(route.kind) and route.topic in self._lane.writes
        )
        counts["quarantined"] = tally.rejected()
        return counts

    def _good_rows(self, route: Route, rows: DataFrame, tally: Tally) -> DataFrame:
        is_good, columns = once(
            ("bronze", "good", route.kind),
            lambda: (F.col("reason").isNull(), [*map(F.col, (*_COMMON, *route.columns))]),
        )
        good = rows.filter(is_good).select(*columns)
        if tally.repeats(route.kind):
            # A key twice in one batch: the version the table's ordering prefers.
            order = Window.partitionBy(*route.table.record_key).orderBy(
                F.col(route.table.ordering).desc(), F.col("kafka_offset").desc()
            )
            good = (
                good.withColumn("_n", F.row_number().over(order))
                .filter(F.col("_n") == 1)
                .drop("_n")
            )
        return good

    def _commit(self, write: Write, batch: Batch) -> None:
        assert self._ledger is not None
        in_pool(write.rows.sparkSession, self._lane.query)
        path = self._settings.table_path(write.table.name)
        if self._ledger.committed(path, batch):
            log.info(
                "%s already holds batch %d of %s: skipped",
                write.table.name,
                batch.batch_id,
                batch.query,
            )
            return
        rows = write.rows
        guard = self._guard(write.table, rows.sparkSession)
        if guard is not None:
            rows = guard.fresh(rows, write.bounds)
        with QUARANTINE_TURN if write.table is tables.QUARANTINE else contextlib.nullcontext():
            write_batch(rows, write.table, path, batch)
        self._ledger.record(path, batch)
        if guard is not None:
            guard.advance(write.bounds)

    def _guard(self, table: HudiTable, spark: SparkSession) -> SequenceGuard | None:
        sequence = tables.SEQUENCE.get(table.name)
        if sequence is None:
            return None
        if table.name not in self._guards:
            path = self._settings.table_path(table.name)
            self._guards[table.name] = SequenceGuard(spark, table, path, sequence)
        return self._guards[table.name]


@dataclass(frozen=True)
class Write:
    table: HudiTable
    rows: DataFrame
    bounds: Bounds


class Tally:
    """A batch's outcomes per route, good or not, date and symbol (the counting job's rows)."""

    def __init__(self, rows: list[Row]):
        self._rows = rows

    def total(self) -> int:
        return sum(r["n"] for r in self._rows)

    def good(self, route: str) -> int:
        return sum(r["n"] for r in self._rows if r["route"] == route and r["good"])

    def rejected(self) -> int:
        return sum(r["n"] for r in self._rows if not r["good"])

    def repeats(self, route: str) -> bool:
        """Whether some key of the route comes twice (a sequence counted more than once)."""
        return any(
            r["distinct"] < r["n"]
            for r in self._rows
            if r["route"] == route and r["good"] and r["low"] is not None
        )

    def bounds(self, route: str) -> dict[tuple[dt.date, str], tuple[int, int]]:
        return {
            (r["date"], r["symbol"]): (int(r["low"]), int(r["high"]))
            for r in self._rows
            if r["route"] == route and r["good"] and r["low"] is not None
        }


def _outcome(rows: DataFrame, route: Route | None) -> DataFrame:
    """What the tally counts of a route's rows: route, reason, date, symbol, sequence."""

    def build() -> list[Column]:
        sequence = tables.SEQUENCE.get(route.table.name) if route else None
        seq = (
            sequence_value(sequence, rows.schema[sequence].dataType)
            if sequence
            else F.lit(None).cast("long")
        )
        name = F.lit(route.kind) if route else _route_name()
        return [name.alias("route"), *map(F.col, ("reason", "date", "symbol")), seq.alias("seq")]

    return rows.select(*once(("bronze", "outcome", route.kind if route else None), build))


def _tally_columns() -> tuple[list[Column], list[Column]]:
    keys = [F.col("route"), F.col("reason").isNull().alias("good"), F.col("date"), F.col("symbol")]
    return keys, [
        F.count("*").alias("n"),
        F.min("seq").alias("low"),
        F.max("seq").alias("high"),
        F.count_distinct("seq").alias("distinct"),
    ]


def _route_name() -> Column:
    """The route a record takes: its topic's kind, diff depth apart from partial depth."""
    diff = (F.col("kind") == "depth") & tf.is_diff_depth(F.col("stream"))
    return F.when(diff, F.lit("depthUpdate")).otherwise(F.col("kind")).alias("route")


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def start(spark: SparkSession, settings: Settings, once: bool = False) -> list[StreamingQuery]:
    """Start every lane; `once`: each processes what is there, then stops."""
    bound = settings.layer("bronze").max_offsets_per_trigger
    queries = []
    for lane in lanes(settings):
        # availableNow reads everything there is: a minimum would only hold it back.
        wait = (lane.min_records, lane.max_delay_ms) if lane.min_records and not once else None
        writer = (
            read_topics(spark, settings, bound, lane.reads, wait)
            .writeStream.queryName(lane.query)
            .foreachBatch(BronzeBatch(settings, lane))
            .option("checkpointLocation", settings.checkpoint_path(lane.query))
        )
        trigger = {"availableNow": True} if once else {"processingTime": lane.trigger}
        # Each lane's jobs in its own FAIR pool (conf/fairscheduler.xml).
        in_pool(spark, lane.query)
        queries.append(writer.trigger(**trigger).start())
    in_pool(spark, None)
    return queries


def main(argv: list[str]) -> int:
    return run_layer("bronze", start, argv)
