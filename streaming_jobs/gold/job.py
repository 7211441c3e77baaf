"""The gold query: silver bars (a Hudi stream) -> analytics, risk, signals, data quality.

    ./spark-submit.sh gold [--once]

Each micro-batch of changed silver bars (../shared/docs/design.md) gives,
per (symbol, interval), the earliest bar that changed. Gold then recomputes
every row whose window contains a changed bar, from silver itself (the
changed bars plus the context before them), and upserts:

- gold_market_summary: per bar, from the bar's series (analytics.market_summary);
- gold_signals: events of final bars (analytics.signals); an event that a
  correction made disappear is kept with `retracted` true;
- gold_correlation and gold_risk: from the final 1m bars of the active and
  portfolio symbols (analytics.correlations, analytics.risk);
- gold_data_quality: per (symbol, UTC day) touched, from bronze and silver.

Two queries share the driver, each over silver's commits with its own
checkpoint: `gold` writes the first four on a short trigger; `gold_quality`
writes gold_data_quality on a longer one (`quality_trigger`), since a day's
count reads all of that day's trades and must not hold up the bars' analytics.

Nothing is kept between batches but the tables: a restart recomputes from
silver and writes the same rows, and a replayed batch changes nothing.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window, functions as F, types as T

from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common import lakefiles
from streaming_jobs.common.columns import any_of
from streaming_jobs.common.hudi import (
    Batch,
    HudiTable,
    await_table,
    current_batch,
    read_stream,
    read_table,
    table_exists,
    write_batch,
)
from streaming_jobs.common.layer import run_layer
from streaming_jobs.common.settings import GOLD_QUERIES, INTERVAL_MS, Settings, duration_ms
from streaming_jobs.common.spark import in_pool
from streaming_jobs.gold import analytics as A, tables
from streaming_jobs.silver import tables as silver

log = logging.getLogger("gold")

QUERY_NAME, QUALITY_QUERY = GOLD_QUERIES
UPSERT_THREADS = 3
UNKNOWN_SYMBOL = "*"  # data-quality rows of quarantined frames with no symbol

PRICE = T.DecimalType(28, 8)
SUM = T.DecimalType(38, 8)

_SUMMARY_OUT = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("interval", T.StringType()),
        T.StructField("open_ms", T.LongType()),
        T.StructField("return_simple", T.DoubleType()),
        T.StructField("log_return", T.DoubleType()),
        T.StructField("realized_vol", T.DoubleType()),
        T.StructField("change_24h_pct", T.DoubleType()),
        T.StructField("high_24h", PRICE),
        T.StructField("low_24h", PRICE),
        T.StructField("volume_24h", SUM),
        T.StructField("quote_volume_24h", SUM),
        T.StructField("vwap_24h", T.DoubleType()),
        T.StructField("bars_24h", T.IntegerType()),
        T.StructField("null_reason", T.StringType()),
    ]
)
_SIGNAL_VALUES = ("close", "macd", "macd_signal", "rsi_14", "bb_upper", "bb_lower")
_SIGNALS_OUT = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("interval", T.StringType()),
        T.StructField("open_ms", T.LongType()),
        T.StructField("signal", T.StringType()),
        T.StructField("direction", T.StringType()),
        *[
            T.StructField(c, T.DoubleType())
            for c in (*_SIGNAL_VALUES, "sma_20", "ema_12", "z_score")
        ],
    ]
)


def _series_summary(pdf: pd.DataFrame, vol_window: int) -> pd.DataFrame:
    interval = str(pdf["interval"].iat[0])
    out = A.market_summary(pdf, INTERVAL_MS[interval], vol_window, int(pdf["from_ms"].min()))
    out.insert(0, "interval", interval)
    out.insert(0, "symbol", str(pdf["symbol"].iat[0]))
    return out.astype({"bars_24h": "int32"})


def _series_signals(pdf: pd.DataFrame, anomaly_window: int, anomaly_z: float) -> pd.DataFrame:
    interval = str(pdf["interval"].iat[0])
    window = anomaly_window if interval == "1m" else None
    out = A.signals(pdf, int(pdf["from_ms"].min()), window, anomaly_z)
    out.insert(0, "interval", interval)
    out.insert(0, "symbol", str(pdf["symbol"].iat[0]))
    return out


class GoldBatch:
    """The foreachBatch function over changed silver bars."""

    def __init__(self, spark: SparkSession, settings: Settings):
        self._spark = spark
        self._settings = settings
        self._gold = settings.pipeline.streaming.gold
        self._silver_path = settings.table_path(silver.OHLCV.name)
        # The symbols correlations and per-symbol risk cover (GoldSettings.cross_asset_tiers).
        self._cross_symbols = sorted(
            s.name for s in settings.symbols if s.tier in self._gold.cross_asset_tiers
        )
        self._portfolio = settings.portfolio
        self._batch: Batch | None = None

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        self._batch = current_batch(self._spark, QUERY_NAME, batch_id)
        changed = (
            df.withColumn("open_ms", F.unix_millis("open_time"))
            .groupBy("symbol", "interval")
            .agg(
                F.min("open_ms").alias("from_ms"),
                F.min(F.when(F.col("is_final"), F.col("open_ms"))).alias("final_from_ms"),
            )
            .collect()
        )
        if not changed:
            log.info("batch %d: no change", batch_id)
            return
        silver_bars = read_table(self._spark, self._silver_path).withColumn(
            "open_ms", F.unix_millis("open_time")
        )
        starts = self._spark.createDataFrame(
            [
                (r.symbol, r.interval, r.from_ms, r.final_from_ms, self._lookback(r))
                for r in changed
            ],
            "symbol string, interval string, from_ms long, final_from_ms long, lo_ms long",
        )
        # Literal filters on the partition columns (interval, period) let Hudi skip
        # other intervals' and periods' files.
        since: dict[str, int] = {}
        for r in changed:
            since[r.interval] = min(since.get(r.interval, self._lookback(r)), self._lookback(r))
        context = (
            silver_bars.filter(
                F.col("symbol").isin(sorted({r.symbol for r in changed}))
                & any_of([silver.opening_since(i, lo) for i, lo in sorted(since.items())])
            )
            .join(F.broadcast(starts), ["symbol", "interval"])
            .filter(F.col("open_ms") >= F.col("lo_ms"))
            .localCheckpoint()
        )
        # The market summary, what a reader waits for, commits first: its upsert
        # starts before the signals and cross-asset figures are computed.
        written = [tables.MARKET_SUMMARY]
        with ThreadPoolExecutor(max_workers=UPSERT_THREADS) as pool:
            upserts = [pool.submit(self._upsert, tables.MARKET_SUMMARY, self._summary(context))]
            for table, rows in (
                *self._signals(context, changed),
                *self._cross_asset(silver_bars, changed),
            ):
                written.append(table)
                upserts.append(pool.submit(self._upsert, table, rows))
            for upsert in upserts:
                upsert.result()
        log.info(
            "batch %d: %d series changed, wrote %s in %.1f s",
            batch_id,
            len(changed),
            ", ".join(table.name for table in written),
            time.monotonic() - started,
        )

    def _lookback(self, row: Any) -> int:
        """The first open time a changed series needs as context."""
        step = INTERVAL_MS[row.interval]
        bars = max(A.DAY_MS // step, self._gold.vol_window + 1, self._gold.anomaly_window + 1)
        earliest: int = min(v for v in (row.from_ms, row.final_from_ms) if v is not None)
        return earliest - bars * step

    def _upsert(self, table: HudiTable, rows: DataFrame) -> None:
        in_pool(self._spark, QUERY_NAME)  # a pool's worker thread does not inherit it
        write_batch(rows, table, self._settings.table_path(table.name), self._batch)

    # -- per series -------------------------------------------------------------------

    def _summary(self, context: DataFrame) -> DataFrame:
        series = context.select(
            "symbol",
            "interval",
            "open_ms",
            "from_ms",
            *[F.col(c).cast(PRICE).alias(c) for c in ("open", "high", "low", "close")],
            *[F.col(c).cast(SUM).alias(c) for c in ("volume", "quote_volume")],
        )
        values = series.groupBy("symbol", "interval").applyInPandas(
            functools.partial(_series_summary, vol_window=self._gold.vol_window), _SUMMARY_OUT
        )
        return (
            values.join(
                context.select(
                    "symbol",
                    "interval",
                    "open_ms",
                    "open_time",
                    "close_time",
                    "close",
                    "is_final",
                    # The version of the bar it was computed from (silver's updated_ms).
                    F.col("updated_ms").alias("bar_updated_ms"),
                ),
                ["symbol", "interval", "open_ms"],
            )
            .drop("open_ms")
            .transform(silver.with_period)
            .transform(_stamped)
        )

    def _signals(self, context: DataFrame, changed: list[Any]) -> list[tuple[HudiTable, DataFrame]]:
        symbols = sorted({r.symbol for r in changed})
        since: dict[str, int] = {}
        for r in changed:
            if r.final_from_ms is not None:
                since[r.interval] = min(since.get(r.interval, r.final_from_ms), r.final_from_ms)
        if not since:
            # No bar became final or changed after it was: no event can appear or go,
            # and an empty upsert would still cost a commit (most batches: a minute
            # ends once every four 15 s triggers).
            return []
        final = context.filter(F.col("is_final") & F.col("final_from_ms").isNotNull()).select(
            "symbol",
            "interval",
            "open_ms",
            F.col("final_from_ms").alias("from_ms"),
            *[F.col(c).cast("double") for c in (*_SIGNAL_VALUES, "sma_20", "ema_12", "volume")],
        )
        events = (
            final.groupBy("symbol", "interval")
            .applyInPandas(
                functools.partial(
                    _series_signals,
                    anomaly_window=self._gold.anomaly_window,
                    anomaly_z=self._gold.anomaly_z,
                ),
                _SIGNALS_OUT,
            )
            .withColumn("open_time", F.timestamp_millis("open_ms"))
            .withColumn("retracted", F.lit(False))
            .localCheckpoint()
        )
        path = self._settings.table_path(tables.SIGNALS.name)
        if table_exists(self._spark, path):
            # Events of recomputed bars that the new values no longer give.
            starts = context.select("symbol", "interval", "final_from_ms").distinct()
            gone = (
                read_table(self._spark, path)
                .filter(
                    F.col("symbol").isin(symbols)
                    & any_of([silver.opening_since(i, lo) for i, lo in sorted(since.items())])
                )
                .withColumn("open_ms", F.unix_millis("open_time"))
                .select(*events.columns)
                .join(F.broadcast(starts), ["symbol", "interval"])
                .filter((F.col("open_ms") >= F.col("final_from_ms")) & ~F.col("retracted"))
                .drop("final_from_ms")
                .join(events, ["symbol", "interval", "open_ms", "signal"], "left_anti")
                .withColumn("retracted", F.lit(True))
            )
            events = events.unionByName(gone)
        return [
            (
                tables.SIGNALS,
                events.drop("open_ms").transform(silver.with_period).transform(_stamped),
            )
        ]

    # -- across symbols -----------------------------------------------------------

    def _cross_asset(
        self, silver_bars: DataFrame, changed: list[Any]
    ) -> list[tuple[HudiTable, DataFrame]]:
        symbols = sorted(set(self._cross_symbols) | set(self._portfolio.weights))
        froms = [
            r.final_from_ms
            for r in changed
            if r.interval == "1m" and r.symbol in symbols and r.final_from_ms is not None
        ]
        if not froms:
            return []
        since = min(froms)
        windows = (*self._gold.correlation_windows, *self._gold.risk_windows)
        lo = since - max(duration_ms(w) for w in windows) - A.MINUTE_MS
        bars: pd.DataFrame = (
            silver_bars.filter(
                (F.col("interval") == "1m")
                & F.col("is_final")
                & F.col("symbol").isin(symbols)
                & (F.col("open_ms") >= lo)
            )
            .select("symbol", "open_ms", F.col("close").cast("double").alias("close"))
            .toPandas()
        )
        if bars.empty:
            return []
        simple, logs = A.minute_returns(bars)
        correlation = [
            A.correlations(logs, self._cross_symbols, duration_ms(w), since).assign(window=w)
            for w in self._gold.correlation_windows
        ]
        subjects = {s: simple[s] for s in self._cross_symbols if s in simple.columns}
        subjects[f"portfolio:{self._portfolio.name}"] = A.portfolio_returns(
            simple, self._portfolio.weights
        )
        risk = [
            A.risk(returns, duration_ms(w), since, self._portfolio.risk_free_rate).assign(
                subject=subject, window=w
            )
            for w in self._gold.risk_windows
            for subject, returns in subjects.items()
        ]
        return [
            (tables.CORRELATION, self._frame(correlation, _CORRELATION_SCHEMA)),
            (tables.RISK, self._frame(risk, _RISK_SCHEMA)),
        ]

    def _frame(self, parts: list[pd.DataFrame], schema: T.StructType) -> DataFrame:
        parts = [part for part in parts if not part.empty]
        pdf = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        pdf = pdf.reindex(columns=[f.name for f in schema.fields]).astype(object)
        pdf = pdf.where(pd.notna(pdf), None)
        rows = [tuple(r) for r in pdf.itertuples(index=False)]
        frame = self._spark.createDataFrame(rows, schema)
        return (
            frame.withColumn("as_of", F.timestamp_millis("as_of_ms"))
            .drop("as_of_ms")
            .transform(_stamped)
        )


class QualityBatch:
    """The foreachBatch function writing gold_data_quality for the days of changed bars."""

    def __init__(self, spark: SparkSession, settings: Settings):
        self._spark = spark
        self._settings = settings

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        batch = current_batch(self._spark, QUALITY_QUERY, batch_id)
        pairs = sorted(
            (r.symbol, r.date)
            for r in df.filter(F.col("interval") == "1m")
            .select("symbol", F.to_date("open_time").alias("date"))
            .distinct()
            .collect()
        )
        if not pairs or not table_exists(
            self._spark, self._settings.table_path(bronze.TRADES.name)
        ):
            log.info("%s batch %d: no day to count", QUALITY_QUERY, batch_id)
            return
        days = self._spark.createDataFrame(pairs, "symbol string, date date")
        # Quarantined frames without a symbol get a row of their own per day.
        days = days.unionByName(
            days.select(F.lit(UNKNOWN_SYMBOL).alias("symbol"), "date").distinct()
        ).localCheckpoint()
        table = tables.DATA_QUALITY
        rows = data_quality(self._spark, self._settings, days)
        write_batch(rows, table, self._settings.table_path(table.name), batch)
        log.info(
            "%s batch %d: %d (symbol, day) counted in %.1f s",
            QUALITY_QUERY,
            batch_id,
            len(pairs),
            time.monotonic() - started,
        )


def data_quality(spark: SparkSession, settings: Settings, days: DataFrame) -> DataFrame:
    """One row per (symbol, UTC day) in `days` (columns symbol, date), from bronze and silver."""
    watermark_ms = settings.pipeline.streaming.silver.watermark_ms
    path = settings.table_path(bronze.TRADES.name)
    completed = lakefiles.completed_instants(settings, bronze.TRADES.name)
    commits = spark.createDataFrame(
        sorted(completed.items()) or [("", 0)], "commit string, committed_ms long"
    )
    trades = read_table(spark, path).join(F.broadcast(days), ["symbol", "date"])
    by_id = Window.partitionBy("symbol", "date").orderBy("trade_id")
    step = F.col("trade_id") - F.lag("trade_id").over(by_id)
    backfill_run = F.col("backfill") & (
        ~F.coalesce(F.lag("backfill").over(by_id), F.lit(False)) | (step > 1)
    )
    latency_ms = F.col("committed_ms") - F.col("recv_ns") / 1e6
    trade_stats = (
        trades.join(
            F.broadcast(commits), trades["_hoodie_commit_time"] == commits["commit"], "left"
        )
        .select(
            "symbol",
            "date",
            "trade_id",
            "backfill",
            F.when(step > 1, step - 1).alias("missing"),
            backfill_run.alias("backfill_run"),
            (F.unix_millis("recv_time") - F.unix_millis("trade_time") > watermark_ms).alias("late"),
            F.when(~F.col("backfill"), latency_ms).alias("latency_ms"),
        )
        .groupBy("symbol", "date")
        .agg(
            F.count("*").alias("trades"),
            F.min("trade_id").alias("first_trade_id"),
            F.max("trade_id").alias("last_trade_id"),
            F.count("missing").alias("gaps_open"),
            F.coalesce(F.sum("missing"), F.lit(0)).alias("missing_trades"),
            F.count(F.when(F.col("backfill_run"), 1)).alias("gaps_filled"),
            F.count(F.when(F.col("backfill"), 1)).alias("backfilled_trades"),
            F.count(F.when(F.col("late"), 1)).alias("late_trades"),
            (F.max("latency_ms") / 1000).alias("latency_max_s"),
            (F.percentile("latency_ms", 0.99) / 1000).alias("latency_p99_s"),
        )
    )
    minutes = (
        read_table(spark, settings.table_path(silver.OHLCV.name))
        .filter(F.col("interval") == "1m")
        .withColumn("date", F.to_date("open_time"))
        .join(F.broadcast(days), ["symbol", "date"])
        .groupBy("symbol", "date")
        .agg(
            F.count("*").alias("minutes"),
            F.count(F.when(F.col("is_filled"), 1)).alias("tradeless_minutes"),
        )
    )
    out = days.join(trade_stats, ["symbol", "date"], "left").join(
        minutes, ["symbol", "date"], "left"
    )
    quarantine_path = settings.table_path(bronze.QUARANTINE.name)
    if table_exists(spark, quarantine_path):
        reasons = (
            read_table(spark, quarantine_path)
            .withColumn("symbol", F.coalesce("symbol", F.lit(UNKNOWN_SYMBOL)))
            .join(F.broadcast(days), ["symbol", "date"])
            .groupBy("symbol", "date", "reason")
            .count()
            .groupBy("symbol", "date")
            .agg(
                F.map_from_entries(F.collect_list(F.struct("reason", "count"))).alias(
                    "quarantined"
                ),
                F.sum("count").alias("quarantined_total"),
            )
        )
        out = out.join(reasons, ["symbol", "date"], "left")
    else:
        out = out.withColumn(
            "quarantined", F.lit(None).cast(T.MapType(T.StringType(), T.LongType()))
        ).withColumn("quarantined_total", F.lit(None).cast("long"))
    counts = ("trades", "gaps_open", "missing_trades", "gaps_filled", "backfilled_trades")
    return out.select(
        "symbol",
        F.col("date").alias("day"),
        *[F.coalesce(F.col(c), F.lit(0)).cast("long").alias(c) for c in counts],
        "first_trade_id",
        "last_trade_id",
        F.coalesce("late_trades", F.lit(0)).cast("long").alias("late_trades"),
        F.coalesce(
            "quarantined", F.create_map().cast(T.MapType(T.StringType(), T.LongType()))
        ).alias("quarantined"),
        F.coalesce("quarantined_total", F.lit(0)).cast("long").alias("quarantined_total"),
        F.coalesce("minutes", F.lit(0)).cast("long").alias("minutes"),
        F.coalesce("tradeless_minutes", F.lit(0)).cast("long").alias("tradeless_minutes"),
        "latency_max_s",
        "latency_p99_s",
    ).transform(_stamped)


def _stamped(df: DataFrame) -> DataFrame:
    now = F.current_timestamp()
    return df.withColumn("updated_at", now).withColumn("updated_ms", F.unix_millis(now))


_CORRELATION_SCHEMA = T.StructType(
    [
        T.StructField("symbol_a", T.StringType()),
        T.StructField("symbol_b", T.StringType()),
        T.StructField("window", T.StringType()),
        T.StructField("as_of_ms", T.LongType()),
        T.StructField("correlation", T.DoubleType()),
        T.StructField("n_obs", T.LongType()),
        T.StructField("null_reason", T.StringType()),
    ]
)
_RISK_SCHEMA = T.StructType(
    [
        T.StructField("subject", T.StringType()),
        T.StructField("window", T.StringType()),
        T.StructField("as_of_ms", T.LongType()),
        T.StructField("n_obs", T.LongType()),
        *[
            T.StructField(c, T.DoubleType())
            for c in A.RISK_COLUMNS
            if c not in ("as_of_ms", "n_obs", "null_reason")
        ],
        T.StructField("null_reason", T.StringType()),
    ]
)


def start(spark: SparkSession, settings: Settings, once: bool = False) -> list[Any]:
    """Start both queries; `once`: each processes what is there, then stops."""
    layer = settings.pipeline.streaming.gold
    queries = []
    for name, batch, every in (
        (QUERY_NAME, GoldBatch(spark, settings), layer.trigger),
        (QUALITY_QUERY, QualityBatch(spark, settings), layer.quality_trigger),
    ):
        writer = (
            read_stream(spark, settings.table_path(silver.OHLCV.name))
            .writeStream.queryName(name)
            .foreachBatch(batch)
            .option("checkpointLocation", settings.checkpoint_path(name))
        )
        trigger = {"availableNow": True} if once else {"processingTime": every}
        in_pool(spark, name)  # each query's jobs in its own FAIR pool
        queries.append(writer.trigger(**trigger).start())
    in_pool(spark, None)
    return queries


def await_source(spark: SparkSession, settings: Settings) -> None:
    """Silver creates its table with its first commit; until then there is nothing to read."""
    await_table(spark, settings.table_path(silver.OHLCV.name), "silver")


def main(argv: list[str]) -> int:
    return run_layer("gold", start, argv, prepare=await_source)
