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
their tables; `bronze` reads every topic on the longer trigger, writes the
other tables and the quarantine rows of all. A trade thus waits for one
commit, not for the depth and ticker commits of its batch, and every table
still has exactly one writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, functions as F
from pyspark.sql.streaming.query import StreamingQuery

from streaming_jobs.bronze import tables, transform as tf
from streaming_jobs.common.hudi import HudiTable, upsert_batch
from streaming_jobs.common.kafka import read_topics
from streaming_jobs.common.layer import run_layer
from streaming_jobs.common.settings import Settings
from streaming_jobs.common.spark import in_pool

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
    """One bronze query: what it reads, which tables it writes, how often."""

    query: str
    reads: tuple[str, ...]
    writes: frozenset[str]
    quarantine: bool
    trigger: str


def lanes(settings: Settings) -> list[Lane]:
    bronze = settings.pipeline.streaming.bronze
    queries = settings.bronze_queries()
    fast = frozenset(bronze.fast_lane)
    out = [Lane("bronze", queries["bronze"], _WRITTEN - fast, True, bronze.trigger)]
    if fast:
        out.append(Lane("bronze_fast", queries["bronze_fast"], fast, False, bronze.fast_trigger))
    return out


def _kind(kind: str, diff_depth: bool | None = None) -> Callable[[DataFrame], DataFrame]:
    def select(df: DataFrame) -> DataFrame:
        rows = df.filter(F.col("kind") == kind)
        if diff_depth is None:
            return rows
        # A record without a stream (not JSON, not UTF-8) goes with partial
        # depth, to be quarantined: a null test would drop it from both.
        diff = F.coalesce(tf.is_diff_depth(F.col("stream")), F.lit(False))
        return rows.filter(diff if diff_depth else ~diff)

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
    return (
        df.filter(F.col("reason").isNotNull())
        .select(*QUARANTINE_COLUMNS)
        .withColumn("ingest_ms", F.unix_millis("ingest_time"))
        .withColumn("date", F.to_date(F.coalesce("recv_time", "ingest_time")))
    )


class BronzeBatch:
    """The foreachBatch function: an ordinary (df, batch_id) callable, testable on static frames."""

    def __init__(self, settings: Settings, lane: Lane | None = None):
        self._settings = settings
        self._lane = lane or Lane("bronze", (), _WRITTEN, True, "")
        topics = settings.pipeline.kafka.topics
        self._envelope = tf.with_envelope({spec.name: kind for kind, spec in topics.items()})

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        in_pool(df.sparkSession, self._lane.query)
        enveloped = df.transform(self._envelope).persist()
        try:
            counts = self._write(enveloped)
        finally:
            enveloped.unpersist()
        log.info(
            "%s batch %d: %s in %.1f s",
            self._lane.query,
            batch_id,
            ", ".join(f"{k} {v}" for k, v in counts.items()) or "empty",
            time.monotonic() - started,
        )

    def _write(self, enveloped: DataFrame) -> dict[str, int]:
        present: dict[str | None, int] = dict(enveloped.groupBy(_route_name()).count().collect())
        counts = {"input": sum(present.values())}
        if counts["input"] == 0:
            return counts
        outcomes = [enveloped.filter(F.col("kind").isNull() | (F.col("kind") == "quarantine"))]
        parsed = {}
        for route in ROUTES:
            if present.get(route.kind):
                parsed[route] = enveloped.transform(route.only).transform(route.parse).persist()
                outcomes.append(parsed[route].select(*enveloped.columns))
        try:
            # One job parses every route (filling the caches) and counts the outcomes.
            tally = (
                _union(outcomes)
                .groupBy(_route_name(), F.col("reason").isNull().alias("good"))
                .count()
                .collect()
            )
            good = {route: n for route, ok, n in tally if ok}
            writes = [
                (
                    route.table,
                    rows.filter(F.col("reason").isNull()).select(*_COMMON, *route.columns),
                )
                for route, rows in parsed.items()
                if good.get(route.kind) and route.topic in self._lane.writes
            ]
            if self._lane.quarantine and sum(n for _, ok, n in tally if not ok):
                rejected = _union(outcomes).filter(F.col("reason").isNotNull())
                writes.append((tables.QUARANTINE, quarantine_rows(rejected)))
            # A commit is partly driver-side waiting (timeline, listing, small
            # jobs): the tables are written side by side.
            with ThreadPoolExecutor(max_workers=UPSERT_THREADS) as pool:
                list(pool.map(lambda w: self._upsert(*w), writes))
        finally:
            for rows in parsed.values():
                rows.unpersist()
        counts.update(
            (route.table.name, good[route.kind])
            for route in parsed
            if good.get(route.kind) and route.topic in self._lane.writes
        )
        rejected = sum(n for _, ok, n in tally if not ok)
        counts["quarantined" if self._lane.quarantine else "rejected (for bronze)"] = rejected
        return counts

    def _upsert(self, table: HudiTable, rows: DataFrame) -> None:
        in_pool(rows.sparkSession, self._lane.query)
        upsert_batch(rows, table, self._settings.table_path(table.name))


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
        writer = (
            read_topics(spark, settings, bound, lane.reads)
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
