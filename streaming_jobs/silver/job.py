"""The silver query: bronze trades (a Hudi stream) -> exact OHLCV bars + indicators.

    ./spark-submit.sh silver [--once]

Each micro-batch of new bronze rows (../shared/docs/design.md):
1. gives, per symbol, the span of minutes it touched;
2. recomputes the 1m bars of that span from bronze (all its trades, by
   exchange time, decimals summed exactly) and fills the trade-less minutes
   from the bar before the span to the next bar that traded;
3. rolls the touched buckets of every longer interval up from the 1m bars;
4. recomputes indicators per (symbol, interval) from the earliest changed
   bar to the last one, continuing from the state stored on the bar before;
5. marks bars final once the watermark (latest trade time seen minus the
   allowed delay) passes their end, and upserts everything in one commit.

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
from streaming_jobs.common.hudi import (
    await_table,
    read_stream,
    read_table,
    table_exists,
    upsert_batch,
)
from streaming_jobs.common.layer import run_layer
from streaming_jobs.common.settings import INTERVAL_MS, Settings
from streaming_jobs.silver import bars as B, indicators as ind, tables

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
)

_SERIES_OUT = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("interval", T.StringType()),
        T.StructField("open_ms", T.LongType()),
        *[T.StructField(c, T.DoubleType()) for c in ind.OUTPUTS],
        T.StructField("bar_index", T.LongType()),
        *[T.StructField(c, T.DoubleType()) for c in ind.STATE if c != "bar_index"],
    ]
)


def series_indicators(pdf: pd.DataFrame) -> pd.DataFrame:
    """One (symbol, interval): stored context bars before the first changed bar + bars to do.

    Continues from the last context bar's state when it is warm and the 19
    closes before are there; otherwise the context is the series from its
    first bar and the whole series is computed.
    """
    pdf = pdf.sort_values("open_ms")
    ctx = pdf[pdf["ctx"]]
    todo = pdf[~pdf["ctx"]]
    window = ind.SMA_N - 1
    if len(ctx) >= window and ctx["bar_index"].iloc[-1] >= ind.WARM:
        last = ctx.iloc[-1]
        prior = ind.State(
            bar_index=int(last["bar_index"]),
            close=float(last["close_f"]),
            ema_12=float(last["ema_12"]),
            ema_26=float(last["ema_26"]),
            macd_fast_ema=float(last["macd_fast_ema"]),
            macd_signal=float(last["macd_signal"]),
            rsi_avg_gain=float(last["rsi_avg_gain"]),
            rsi_avg_loss=float(last["rsi_avg_loss"]),
        )
        values = ind.compute(todo["close_f"].to_numpy(), prior, ctx["close_f"].to_numpy()[-window:])
    else:
        full = ind.compute(pdf["close_f"].to_numpy())
        values = {k: v[len(ctx) :] for k, v in full.items()}
    out = todo[["symbol", "interval", "open_ms"]].reset_index(drop=True)
    for name, column in values.items():
        out[name] = column
    out["bar_index"] = out["bar_index"].astype("int64")
    return out[[f.name for f in _SERIES_OUT.fields]]


class SilverBatch:
    """The foreachBatch function over new bronze trade rows."""

    def __init__(self, spark: SparkSession, settings: Settings):
        self._spark = spark
        self._layer = settings.pipeline.streaming.silver
        self._path = settings.table_path(tables.OHLCV.name)
        self._source_path = settings.table_path(SOURCES[self._layer.bars_from].name)
        self._max_event_ms = self._stored_max_event_ms()
        self.late_trades = 0  # since this driver started; each batch logs its own

    # -- state kept in the table ------------------------------------------------

    def _stored(self) -> DataFrame | None:
        if not table_exists(self._spark, self._path):
            return None
        return read_table(self._spark, self._path).withColumn("open_ms", F.unix_millis("open_time"))

    def _stored_max_event_ms(self) -> int | None:
        """The latest trade time seen, from the bars (a restart resumes the watermark)."""
        stored = self._stored()
        if stored is None:
            return None
        row = (
            stored.filter((F.col("interval") == "1m") & ~F.col("is_filled"))
            .agg(F.max("open_ms"))
            .first()
        )
        return None if row is None or row[0] is None else int(row[0]) + _MIN - 1

    # -- the batch --------------------------------------------------------------

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        trades = B.trade_rows(df, self._layer.bars_from)
        spans = [
            (r["symbol"], int(r["lo"]), int(r["hi"]), int(r["last_ms"]))
            for r in trades.groupBy("symbol")
            .agg(
                F.min(B.floor_ms("time_ms", _MIN)).alias("lo"),
                F.max(B.floor_ms("time_ms", _MIN)).alias("hi"),
                F.max("time_ms").alias("last_ms"),
            )
            .collect()
        ]
        late = 0
        if spans and self._max_event_ms is not None:
            # Trades whose bar was already final: corrected, and counted.
            before = self._max_event_ms - self._layer.watermark_ms
            late = trades.filter(B.floor_ms("time_ms", _MIN) + (_MIN - 1) <= before).count()
        if spans:
            latest = max(s[3] for s in spans)
            self._max_event_ms = max(self._max_event_ms or latest, latest)
        watermark = (
            None if self._max_event_ms is None else self._max_event_ms - self._layer.watermark_ms
        )
        written = self._write({s[0]: (s[1], s[2]) for s in spans}, watermark)
        self.late_trades += late
        log.info(
            "batch %d: %d symbols, %d late trades (%d in all), %d bars written, "
            "watermark %s, in %.1f s",
            batch_id,
            len(spans),
            late,
            self.late_trades,
            written,
            watermark,
            time.monotonic() - started,
        )

    def _write(self, touched: dict[str, tuple[int, int]], watermark: int | None) -> int:
        # Intermediate frames are reused by several steps: each is
        # materialized once with localCheckpoint, which also cuts its plan
        # (a plan that embeds its inputs' plans grows with every reuse).
        everything = self._stored()
        stored = None
        if everything is not None:
            stored = everything.filter(
                F.col("symbol").isin(list(touched) or [""])
            ).localCheckpoint()
        changed = self._bars(touched, stored) if touched else None
        rows = self._finish(changed, stored, everything, watermark)
        if rows is None:
            return 0
        rows = rows.localCheckpoint()
        n = rows.count()
        if n:
            upsert_batch(rows, tables.OHLCV, self._path)
        return n

    def _bars(self, touched: dict[str, tuple[int, int]], stored: DataFrame | None) -> DataFrame:
        """The changed bars of every interval (without indicators), as BAR columns + interval."""
        spark = self._spark
        spans = spark.createDataFrame(
            [(s, lo, hi) for s, (lo, hi) in touched.items()], "symbol string, lo long, hi long"
        )
        if stored is not None:
            m1 = stored.filter(F.col("interval") == "1m")
            around = (
                spans.join(m1, "symbol", "left")
                .groupBy("symbol", "lo", "hi")
                .agg(
                    F.max(
                        F.when(F.col("open_ms") < F.col("lo"), F.struct("open_ms", "close"))
                    ).alias("prev"),
                    F.min(
                        F.when(
                            (F.col("open_ms") > F.col("hi")) & ~F.col("is_filled"), F.col("open_ms")
                        )
                    ).alias("next_real"),
                )
                .select(
                    "symbol",
                    "lo",
                    "hi",
                    F.col("prev.open_ms").alias("prev_ms"),
                    F.col("prev.close").alias("carry_close"),
                    "next_real",
                )
            )
        else:
            around = spans.select(
                "*",
                F.lit(None).cast("long").alias("prev_ms"),
                F.lit(None).cast(T.DecimalType(28, 8)).alias("carry_close"),
                F.lit(None).cast("long").alias("next_real"),
            )
        fill_spans = around.select(
            "symbol",
            "lo",
            "hi",
            F.coalesce(F.col("prev_ms") + _MIN, F.col("lo")).alias("first_ms"),
            F.coalesce(F.col("next_real") - _MIN, F.col("hi")).alias("last_ms"),
            "carry_close",
        ).localCheckpoint()
        real = B.minute_bars(self._source_trades(touched))
        minutes = B.fill_minutes(real, fill_spans).localCheckpoint()
        out = [B.with_times(minutes, "1m", _MIN)]
        longer = [i for i in self._layer.intervals if i != "1m"]
        if longer:
            # Every 1m bar of the touched buckets of the longest interval: the
            # stored ones, replaced by the ones just computed.
            widest = max(INTERVAL_MS[i] for i in longer)
            bounds = fill_spans.select(
                "symbol",
                B.floor_ms("first_ms", widest).alias("b_lo"),
                (B.floor_ms("last_ms", widest) + widest).alias("b_hi"),
            )
            context = minutes
            if stored is not None:
                old = (
                    stored.filter(F.col("interval") == "1m")
                    .join(bounds, "symbol")
                    .filter(
                        (F.col("open_ms") >= F.col("b_lo")) & (F.col("open_ms") < F.col("b_hi"))
                    )
                    .select(*B.BAR_COLUMNS)
                    .join(minutes.select("symbol", "open_ms"), ["symbol", "open_ms"], "left_anti")
                )
                context = old.unionByName(minutes)
            context = context.localCheckpoint()
            for interval in longer:
                ms = INTERVAL_MS[interval]
                rolled = (
                    B.roll_up(context, ms)
                    .join(fill_spans, "symbol")
                    .filter(
                        (F.col("open_ms") >= B.floor_ms("first_ms", ms))
                        & (F.col("open_ms") <= B.floor_ms("last_ms", ms))
                    )
                )
                out.append(B.with_times(rolled.select(*B.BAR_COLUMNS), interval, ms))
        changed = out[0]
        for frame in out[1:]:
            changed = changed.unionByName(frame)
        return changed

    def _source_trades(self, touched: dict[str, tuple[int, int]]) -> DataFrame:
        """The bronze trades of each touched span, read with partition pruning."""
        condition: Column | None = None
        for symbol, (lo, hi) in touched.items():
            start, end = F.timestamp_millis(F.lit(lo)), F.timestamp_millis(F.lit(hi + _MIN))
            one = (
                (F.col("symbol") == symbol)
                & F.col("date").between(F.to_date(start), F.to_date(end))
                & (F.col("trade_time") >= start)
                & (F.col("trade_time") < end)
            )
            condition = one if condition is None else condition | one
        assert condition is not None
        source = read_table(self._spark, self._source_path).filter(condition)
        return B.trade_rows(source, self._layer.bars_from)

    def _finish(
        self,
        changed: DataFrame | None,
        stored: DataFrame | None,
        everything: DataFrame | None,
        watermark: int | None,
    ) -> DataFrame | None:
        """Indicators for the changed bars and every later bar; finality; the table's columns."""
        parts = []
        if changed is not None:
            changed = changed.localCheckpoint()
            starts = changed.groupBy("symbol", "interval").agg(F.min("open_ms").alias("e"))
            bars = changed
            ctx = None
            if stored is not None:
                later = (
                    stored.join(starts, ["symbol", "interval"])
                    .filter(F.col("open_ms") >= F.col("e"))
                    .join(
                        changed.select("symbol", "interval", "open_ms"),
                        ["symbol", "interval", "open_ms"],
                        "left_anti",
                    )
                    .select(*changed.columns)
                )
                bars = changed.unionByName(later)
                step = F.expr(
                    "element_at(map("
                    + ", ".join(f"'{i}', {INTERVAL_MS[i]}L" for i in self._layer.intervals)
                    + "), interval)"
                )
                ctx = stored.join(starts, ["symbol", "interval"]).filter(
                    (F.col("open_ms") < F.col("e"))
                    & (
                        (F.col("open_ms") >= F.col("e") - step * (ind.SMA_N - 1))
                        | (F.col("bar_index") <= ind.WARM)
                    )
                )
            series = bars.select(
                "symbol",
                "interval",
                "open_ms",
                F.col("close").cast("double").alias("close_f"),
                F.lit(False).alias("ctx"),
                *[F.lit(None).cast("double").alias(c) for c in (*ind.OUTPUTS, *ind.STATE)],
            )
            if ctx is not None:
                series = series.unionByName(
                    ctx.select(
                        "symbol",
                        "interval",
                        "open_ms",
                        F.col("close").cast("double").alias("close_f"),
                        F.lit(True).alias("ctx"),
                        *[F.col(c).cast("double") for c in (*ind.OUTPUTS, *ind.STATE)],
                    )
                )
            values = series.groupBy("symbol", "interval").applyInPandas(
                series_indicators, _SERIES_OUT
            )
            parts.append(
                bars.select(*B.BAR_COLUMNS, "interval", "open_time", "close_time").join(
                    values, ["symbol", "interval", "open_ms"]
                )
            )
        if everything is not None and watermark is not None:
            # Bars of any symbol that became final without changing.
            ripe = everything.filter(
                ~F.col("is_final") & (F.unix_millis("close_time") <= F.lit(watermark))
            )
            if parts:
                ripe = ripe.join(
                    parts[0].select("symbol", "interval", "open_ms"),
                    ["symbol", "interval", "open_ms"],
                    "left_anti",
                )
            parts.append(ripe.select(*parts[0].columns) if parts else ripe.select(*_ripe_columns()))
        if not parts:
            return None
        rows = parts[0]
        for frame in parts[1:]:
            rows = rows.unionByName(frame)
        final = (
            F.lit(False) if watermark is None else F.unix_millis("close_time") <= F.lit(watermark)
        )
        now = F.current_timestamp()
        return rows.select(
            *[c for c in rows.columns if c not in ("open_ms",)],
            # A ratio, not a sum: float64 (decimal division would need more than 38 digits).
            F.when(
                F.col("volume") > 0,
                F.col("quote_volume").cast("double") / F.col("volume").cast("double"),
            ).alias("vwap"),
            final.alias("is_final"),
            now.alias("updated_at"),
            F.unix_millis(now).alias("updated_ms"),
        ).select(*BAR_OUTPUT)


def _ripe_columns() -> list[str]:
    return [*B.BAR_COLUMNS, "interval", "open_time", "close_time", *ind.OUTPUTS, *ind.STATE]


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
