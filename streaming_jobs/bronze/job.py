"""The bronze query: every producer topic -> foreachBatch -> typed Hudi upserts + quarantine.

    ./spark-submit.sh bronze [--once]

Each micro-batch is enveloped once (lineage, stream, symbol), split by
stream type, parsed and validated (transform.py), and upserted into its
table by key; rows that fail go to `bronze_quarantine` keyed by their Kafka
coordinates. Every write is an idempotent upsert, so a batch replayed after
a crash (foreachBatch has no batch-id skip) changes nothing. The checkpoint
lives under the storage profile (local disk or MinIO).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, functions as F

from streaming_jobs.bronze import tables, transform as tf
from streaming_jobs.common.hudi import HudiTable, upsert_batch
from streaming_jobs.common.kafka import read_topics
from streaming_jobs.common.settings import Settings, load_settings

log = logging.getLogger("bronze")

QUERY_NAME = "bronze"


@dataclass(frozen=True)
class Route:
    """One stream type's way from the envelope to its table."""

    kind: str
    only: Callable[[DataFrame], DataFrame]
    parse: Callable[[DataFrame], DataFrame]
    table: HudiTable
    columns: tuple[str, ...]


def _kind(kind: str, diff_depth: bool | None = None) -> Callable[[DataFrame], DataFrame]:
    def select(df: DataFrame) -> DataFrame:
        rows = df.filter(F.col("kind") == kind)
        if diff_depth is None:
            return rows
        diff = tf.is_diff_depth(F.col("stream"))
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

    def __init__(self, settings: Settings):
        self._settings = settings
        topics = settings.pipeline.kafka.topics
        self._envelope = tf.with_envelope({spec.name: kind for kind, spec in topics.items()})

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        enveloped = df.transform(self._envelope).persist()
        try:
            counts = self._write(enveloped)
        finally:
            enveloped.unpersist()
        log.info(
            "batch %d: %s in %.1f s",
            batch_id,
            ", ".join(f"{k} {v}" for k, v in counts.items()) or "empty",
            time.monotonic() - started,
        )

    def _write(self, enveloped: DataFrame) -> dict[str, int]:
        counts = {"input": enveloped.count()}
        if counts["input"] == 0:
            return counts
        rejected = [enveloped.filter(F.col("kind").isNull() | (F.col("kind") == "quarantine"))]
        for route in ROUTES:
            parsed = enveloped.transform(route.only).transform(route.parse).persist()
            good = parsed.filter(F.col("reason").isNull()).select(*_COMMON, *route.columns)
            n = good.count()
            if n:
                upsert_batch(good, route.table, self._settings.table_path(route.table.name))
                counts[route.table.name] = n
            rejected.append(parsed.filter(F.col("reason").isNotNull()).select(*enveloped.columns))
            parsed.unpersist()
        bad = quarantine_rows(_union(rejected)).persist()
        counts["quarantined"] = bad.count()
        if counts["quarantined"]:
            upsert_batch(bad, tables.QUARANTINE, self._settings.table_path(tables.QUARANTINE.name))
        bad.unpersist()
        return counts


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def start(spark: SparkSession, settings: Settings, once: bool = False) -> object:
    stream = read_topics(spark, settings, settings.layer("bronze").max_offsets_per_trigger)
    writer = (
        stream.writeStream.queryName(QUERY_NAME)
        .foreachBatch(BronzeBatch(settings))
        .option("checkpointLocation", settings.checkpoint_path(QUERY_NAME))
    )
    trigger = (
        {"availableNow": True} if once else {"processingTime": settings.layer("bronze").trigger}
    )
    return writer.trigger(**trigger).start()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./spark-submit.sh bronze")
    parser.add_argument("--once", action="store_true", help="process what is there, then stop")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = load_settings()
    spark = SparkSession.builder.getOrCreate()
    query = start(spark, settings, once=args.once)
    log.info(
        "query %s started: %s -> %s",
        QUERY_NAME,
        settings.kafka_bootstrap_servers,
        settings.table_path(""),
    )
    query.awaitTermination()  # type: ignore[attr-defined]
    return 0
