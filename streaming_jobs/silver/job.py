"""The silver query: bronze trades (a Hudi stream) -> exact OHLCV bars + indicators.

    ./spark-submit.sh silver [--once]

Each micro-batch of new bronze rows (../shared/docs/design.md):
1. gives, per symbol, the span of minutes it touched (one Spark job);
2. recomputes the 1m bars of that span from bronze (all its trades, by
   exchange time, decimals summed exactly) in Spark, then, per symbol in
   one pandas function over those bars and the stored bars around them
   (series.update_symbol): fills the trade-less minutes from the bar before
   the span to the next bar that traded, rolls the touched buckets of every
   longer interval up from the 1m bars, recomputes indicators per interval
   from the earliest changed bar to the last one, continuing from the state
   stored on the bar before, and marks bars final once the watermark
   (latest trade time seen minus the allowed delay) passes their end;
3. upserts everything in one commit.

A late trade is never dropped: it re-touches its minute, and the bars,
roll-ups and later indicators it changes are rewritten. Every write is an
upsert by key computed from bronze, so a replayed batch changes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, functions as F, types as T

from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common.columns import any_of
from streaming_jobs.common.hudi import (
    Batch,
    await_table,
    current_batch,
    read_stream,
    read_table,
    table_exists,
    write_batch,
)
from streaming_jobs.common.layer import run_layer
from streaming_jobs.common.settings import INTERVAL_MS, Settings
from streaming_jobs.silver import bars as B, indicators as ind, series, tables

log = logging.getLogger("silver")

QUERY_NAME = "silver"
SOURCES = {"trades": bronze.TRADES, "agg_trades": bronze.AGG_TRADES}
_MIN = B.MINUTE_MS

# The table's columns.
BAR_OUTPUT = (
    "symbol",
    "interval",
    "open_time",
    "close_time",
    *(c for c in B.BAR_COLUMNS if c not in ("symbol", "open_ms")),
    "vwap",
    "is_final",
    "updated_at",
    "updated_ms",
    *ind.OUTPUTS,
    *ind.STATE,
    "period",
)

# What series.update_symbol returns and the ripe bars join: series.ROW_COLUMNS.
_ROWS = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("open_ms", T.LongType()),
        *[T.StructField(c, T.DecimalType(28, 8)) for c in ("open", "high", "low", "close")],
        T.StructField("volume", T.DecimalType(38, 8)),
        T.StructField("quote_volume", T.DecimalType(38, 16)),
        T.StructField("trade_count", T.LongType()),
        T.StructField("taker_buy_base", T.DecimalType(38, 8)),
        T.StructField("taker_buy_quote", T.DecimalType(38, 16)),
        T.StructField("first_trade_id", T.LongType()),
        T.StructField("last_trade_id", T.LongType()),
        T.StructField("is_filled", T.BooleanType()),
        T.StructField("interval", T.StringType()),
        *[T.StructField(c, T.DoubleType()) for c in ind.OUTPUTS],
        T.StructField("bar_index", T.LongType()),
        *[T.StructField(c, T.DoubleType()) for c in ind.STATE if c != "bar_index"],
        T.StructField("is_final", T.BooleanType()),
    ]
)
assert tuple(f.name for f in _ROWS.fields) == series.ROW_COLUMNS


class SilverBatch:
    """The foreachBatch function over new bronze trade rows.

    Besides the table it keeps, per symbol, the open time of its last 1m
    bar (read once at start, then advanced by each batch it writes), so a
    batch reads only the stored bars around what it touched. It is the
    table's only writer, and a restart reads the table again.
    """

    def __init__(self, spark: SparkSession, settings: Settings):
        self._spark = spark
        self._layer = settings.pipeline.streaming.silver
        self._path = settings.table_path(tables.OHLCV.name)
        self._source_path = settings.table_path(SOURCES[self._layer.bars_from].name)
        self._intervals = [(i, INTERVAL_MS[i]) for i in self._layer.intervals]
        self._widest = max(ms for _, ms in self._intervals)
        self._last_1m: dict[str, int] = {}
        self._max_event_ms: int | None = None
        # Every stored bar ending at or before this has been judged final or
        # not (unknown after a start: the first batch looks at every bar).
        self._judged: int | None = None
        self._batch: Batch | None = None
        self._load_state()
        self.late_trades = 0  # since this driver started; each batch logs its own

    # -- state kept in the table ------------------------------------------------

    def _stored(self) -> DataFrame | None:
        if not table_exists(self._spark, self._path):
            return None
        return read_table(self._spark, self._path).withColumn("open_ms", F.unix_millis("open_time"))

    def _load_state(self) -> None:
        """Each symbol's last 1m bar and the latest trade time seen (resumes the watermark)."""
        stored = self._stored()
        if stored is None:
            return
        rows = (
            stored.filter(F.col("interval") == "1m")
            .groupBy("symbol")
            .agg(
                F.max("open_ms").alias("last"),
                F.max(F.when(~F.col("is_filled"), F.col("open_ms"))).alias("last_real"),
            )
            .collect()
        )
        self._last_1m = {r["symbol"]: int(r["last"]) for r in rows}
        reals = [int(r["last_real"]) for r in rows if r["last_real"] is not None]
        self._max_event_ms = max(reals) + _MIN - 1 if reals else None

    # -- the batch --------------------------------------------------------------

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        self._batch = current_batch(self._spark, QUERY_NAME, batch_id)
        trades = B.trade_rows(df, self._layer.bars_from)
        minute = B.floor_ms("time_ms", _MIN)
        # Trades whose bar was already final: corrected, and counted.
        late = (
            F.lit(0)
            if self._max_event_ms is None
            else F.count(
                F.when(minute + (_MIN - 1) <= self._max_event_ms - self._layer.watermark_ms, 1)
            )
        )
        spans = {
            r["symbol"]: (int(r["lo"]), int(r["hi"]), int(r["last_ms"]), int(r["late"]))
            for r in trades.groupBy("symbol")
            .agg(
                F.min(minute).alias("lo"),
                F.max(minute).alias("hi"),
                F.max("time_ms").alias("last_ms"),
                late.alias("late"),
            )
            .collect()
        }
        late_n = sum(s[3] for s in spans.values())
        if spans:
            latest = max(s[2] for s in spans.values())
            self._max_event_ms = max(self._max_event_ms or latest, latest)
        watermark = (
            None if self._max_event_ms is None else self._max_event_ms - self._layer.watermark_ms
        )
        written = self._write({s: (v[0], v[1]) for s, v in spans.items()}, watermark)
        for symbol, (_, hi, _, _) in spans.items():
            self._last_1m[symbol] = max(self._last_1m.get(symbol, hi), hi)
        self._judged = watermark
        self.late_trades += late_n
        log.info(
            "batch %d: %d symbols, %d late trades (%d in all), %d bars written, "
            "watermark %s, in %.1f s",
            batch_id,
            len(spans),
            late_n,
            self.late_trades,
            written,
            watermark,
            time.monotonic() - started,
        )

    def _write(self, touched: dict[str, tuple[int, int]], watermark: int | None) -> int:
        stored = self._stored()
        parts = []
        if touched:
            parts.append(self._changed(touched, stored, watermark))
        if stored is not None and watermark is not None:
            parts.append(self._ripe(stored, set(touched), watermark))
        if not parts:
            return 0
        rows = parts[0]
        for frame in parts[1:]:
            rows = rows.unionByName(frame)
        # Materialized once: Hudi's upsert reads its input more than once.
        rows = self._table_rows(rows).localCheckpoint()
        n = rows.count()
        if n:
            write_batch(rows, tables.OHLCV, self._path, self._batch)
        return n

    def _changed(
        self, touched: dict[str, tuple[int, int]], stored: DataFrame | None, watermark: int | None
    ) -> DataFrame:
        """Every row the touched symbols write: bars of all intervals, indicators, finality.

        One pass per symbol (series.update_symbol) over the 1m bars
        recomputed from bronze and the stored bars around them.
        """
        real = B.minute_bars(self._source_trades(touched))
        intervals = self._intervals

        def one_symbol(real: pd.DataFrame, around: pd.DataFrame) -> pd.DataFrame:
            return series.update_symbol(real, around, intervals, watermark)

        return (
            real.groupBy("symbol")
            .cogroup(self._around(touched, stored).groupBy("symbol"))
            .applyInPandas(one_symbol, _ROWS)
        )

    def _around(self, touched: dict[str, tuple[int, int]], stored: DataFrame | None) -> DataFrame:
        """The stored bars a touched symbol's update needs (series.update_symbol's `stored`).

        Per interval, from CONTEXT_STEPS steps before the first bar the
        batch can change (1m: from the start of the widest interval's
        bucket, which the roll-ups re-aggregate) to the end of the series.
        """
        if stored is None:
            return self._spark.createDataFrame([], _ROWS)
        first_of = {}
        for symbol, (lo, _) in touched.items():
            last = self._last_1m.get(symbol)
            # Past the symbol's last bar, the fill starts right after it.
            first_of[symbol] = last + _MIN if last is not None and last < lo else lo
        first = F.element_at(
            F.create_map(*[F.lit(x) for pair in first_of.items() for x in pair]), F.col("symbol")
        )
        step = self._step()
        bound = first - F.pmod(first, step) - series.CONTEXT_STEPS * step
        bound = F.when(
            F.col("interval") == "1m", F.least(bound, first - F.pmod(first, F.lit(self._widest)))
        ).otherwise(bound)
        # The same bounds as literals, per interval, for the partitions to prune on.
        earliest = min(first_of.values())
        since = {
            name: series.floor(earliest, ms) - series.CONTEXT_STEPS * ms
            for name, ms in self._intervals
        }
        since["1m"] = min(since["1m"], series.floor(earliest, self._widest))
        pruned = any_of([tables.opening_since(name, ms) for name, ms in since.items()])
        return stored.filter(
            pruned & F.col("symbol").isin(list(touched)) & (F.col("open_ms") >= bound)
        ).select(*series.ROW_COLUMNS)

    def _ripe(self, stored: DataFrame, touched: set[str], watermark: int) -> DataFrame:
        """Bars of untouched symbols that became final without changing."""
        ripe = stored.filter(~F.col("is_final") & (F.unix_millis("close_time") <= watermark))
        if self._judged is not None:
            # Only bars ending after the last batch's watermark can have
            # ripened since, of symbols whose series reaches that far.
            symbols = [
                s
                for s, last in self._last_1m.items()
                if s not in touched and last + self._widest > self._judged
            ]
            judged = self._judged
            pruned = any_of(
                [tables.opening_since(name, judged - ms + 1) for name, ms in self._intervals]
            )
            ripe = ripe.filter(
                pruned
                & F.col("symbol").isin(symbols or [""])
                & (F.unix_millis("close_time") > judged)
            )
        elif touched:
            ripe = ripe.filter(~F.col("symbol").isin(list(touched)))
        return ripe.withColumn("is_final", F.lit(True)).select(*series.ROW_COLUMNS)

    def _source_trades(self, touched: dict[str, tuple[int, int]]) -> DataFrame:
        """The bronze trades of each touched span, read with partition pruning."""
        spans = []
        for symbol, (lo, hi) in touched.items():
            start, end = F.timestamp_millis(F.lit(lo)), F.timestamp_millis(F.lit(hi + _MIN))
            spans.append(
                (F.col("symbol") == symbol)
                & F.col("date").between(F.to_date(start), F.to_date(end))
                & (F.col("trade_time") >= start)
                & (F.col("trade_time") < end)
            )
        source = read_table(self._spark, self._source_path).filter(any_of(spans))
        return B.trade_rows(source, self._layer.bars_from)

    def _step(self) -> Column:
        """A row's interval in milliseconds (a long: 35 days of them overflow an int)."""
        pairs = [(F.lit(i), F.lit(ms).cast("long")) for i, ms in self._intervals]
        return F.element_at(F.create_map(*[x for pair in pairs for x in pair]), F.col("interval"))

    def _table_rows(self, rows: DataFrame) -> DataFrame:
        """Rows of series.ROW_COLUMNS -> the table's columns."""
        step = self._step()
        now = F.current_timestamp()
        return (
            rows.select(
                "*",
                F.timestamp_millis("open_ms").alias("open_time"),
                F.timestamp_millis(F.col("open_ms") + step - 1).alias("close_time"),
                # A ratio, not a sum: float64 (decimal division would need more than 38 digits).
                F.when(
                    F.col("volume") > 0,
                    F.col("quote_volume").cast("double") / F.col("volume").cast("double"),
                ).alias("vwap"),
                now.alias("updated_at"),
                F.unix_millis(now).alias("updated_ms"),
            )
            .transform(tables.with_period)
            .select(*BAR_OUTPUT)
        )


def start(spark: SparkSession, settings: Settings, once: bool = False) -> Any:
    layer = settings.pipeline.streaming.silver
    source = settings.table_path(SOURCES[layer.bars_from].name)
    writer = (
        read_stream(spark, source)
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(SilverBatch(spark, settings))
        .option("checkpointLocation", settings.checkpoint_path(QUERY_NAME))
    )
    trigger = {"availableNow": True} if once else {"processingTime": layer.trigger}
    return writer.trigger(**trigger).start()


def await_source(spark: SparkSession, settings: Settings) -> None:
    """Bronze creates its tables with its first commit; until then there is nothing to read."""
    layer = settings.pipeline.streaming.silver
    await_table(spark, settings.table_path(SOURCES[layer.bars_from].name), "bronze")


def main(argv: list[str]) -> int:
    return run_layer("silver", start, argv, prepare=await_source)
