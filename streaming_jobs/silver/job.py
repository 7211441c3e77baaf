"""The silver query: bronze trades (a Hudi stream) -> exact OHLCV bars + indicators.

    ./spark-submit.sh silver [--once]

Each micro-batch of new bronze rows (../shared/docs/design.md, "Live at
market width") does work in proportion to what it brings:

1. one Spark job sums its trades into exact per-minute aggregates per
   symbol, another finds the runs of consecutive trade ids (both
   collected: a few rows per symbol); the trades are read straight from the
   files the batch's bronze commits wrote, only the columns bars need
   (hudi.stream_batch), where Hudi's stream would read every column row by row;
2. per symbol, on the driver, the running state (silver/live.py: the open
   bar of every interval, the indicator state, the trade sequence) takes
   those aggregates: bars merge, close, fill trade-less minutes and roll
   up, indicators continue, and bars are final once the exchange's
   sequence (no trade id missing below a later trade) or, at the live
   edge, the exchange clock has passed them;
3. one upsert writes the rows that changed, stamped with the batch.

A symbol whose batch reaches back before its open minute (a backfilled gap,
a late trade) or repeats an id takes the general path instead
(series.update_symbol): its minutes recomputed from bronze, the stored bars
around them read, every later bar's indicators rewritten; its state is
then read back from the table. A late trade is never dropped.

The state is the table's: at start (and for a symbol first met) it is read
from the latest bars and the bronze trades not yet final; a batch the table
already holds (a restart between Hudi's commit and the checkpoint's) is
skipped by its stamp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window, functions as F, types as T

from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common.columns import any_of, is_in
from streaming_jobs.common.frames import local_frame
from streaming_jobs.common.hudi import (
    Batch,
    BatchLedger,
    await_table,
    current_batch,
    read_stream,
    read_table,
    stream_batch,
    stream_range,
    table_exists,
    write_batch,
)
from streaming_jobs.common.layer import run_layer
from streaming_jobs.common.settings import INTERVAL_MS, Settings
from streaming_jobs.silver import bars as B, indicators as ind, live, series, tables

log = logging.getLogger("silver")

QUERY_NAME = "silver"
SOURCES = {"trades": bronze.TRADES, "agg_trades": bronze.AGG_TRADES}
_MIN = B.MINUTE_MS
# The bronze columns a batch reads, per source (bars.trade_rows).
_SOURCE_COLUMNS = {
    "trades": ("symbol", "trade_id", "price", "qty", "trade_time", "is_buyer_maker"),
    "agg_trades": (
        "symbol",
        "first_trade_id",
        "last_trade_id",
        "price",
        "qty",
        "trade_time",
        "is_buyer_maker",
    ),
}

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

    Keeps a `live.SymbolState` per symbol (read from the table at start and
    for a symbol first met, then advanced by each batch), and the exchange
    clock: the latest trade time of any symbol. It is the table's only
    writer.
    """

    def __init__(self, spark: SparkSession, settings: Settings):
        self._spark = spark
        self._layer = settings.pipeline.streaming.silver
        self._path = settings.table_path(tables.OHLCV.name)
        self._source_path = settings.table_path(SOURCES[self._layer.bars_from].name)
        self._checkpoint = settings.checkpoint_path(QUERY_NAME)
        self._intervals = [(i, INTERVAL_MS[i]) for i in self._layer.intervals]
        self._widest = max(ms for _, ms in self._intervals)
        self._live: dict[str, live.SymbolState] = {}
        self._clock_ms: int | None = None
        self._ledger = BatchLedger(spark)
        self._batch: Batch | None = None
        self.late_trades = 0  # since this driver started; each batch logs its own
        self.lost_trades = 0  # ids given up after gap_timeout, since this driver started
        self._load(None)

    # -- the batch --------------------------------------------------------------

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        self._batch = batch = current_batch(self._spark, QUERY_NAME, batch_id)
        if self._ledger.committed(self._path, batch):
            log.info("batch %d: already in %s, skipped", batch_id, tables.OHLCV.name)
            return
        df = self._new_rows(df, batch_id)
        trades = B.trade_rows(df, self._layer.bars_from)
        # One job in the common case: each minute's ids are consecutive, and its runs
        # follow from the minutes; otherwise a second job finds them trade by trade.
        summary = B.minute_bars(trades, with_times=True).collect()
        runs = minute_runs(summary)
        if runs is None:
            runs = _by_symbol(id_runs(trades).collect(), _run)
        minutes = _by_symbol(summary, _bar)
        summed = time.monotonic()
        latest = [r.last_ms for rs in runs.values() for r in rs]
        if latest:
            self._clock_ms = max(self._clock_ms or max(latest), max(latest))
        unknown = [s for s in minutes if s not in self._live]
        if unknown:
            self._load(unknown)
        rows: list[dict[str, Any]] = []
        general: dict[str, tuple[int, int]] = {}
        late = lost = 0
        for symbol, state in list(self._live.items()) + [
            (s, live.SymbolState.new(s, self._intervals)) for s in minutes if s not in self._live
        ]:
            mine, ids = minutes.get(symbol, []), runs.get(symbol, [])
            before = state.sequence.lost
            out = None if state.sequence.repeats(ids) else self._update(state, mine, ids)
            if out is None:
                opened = state.series["1m"].current
                late += sum(b.trade_count for b in mine if opened and b.open_ms < opened.open_ms)
                general[symbol] = (min(b.open_ms for b in mine), max(b.open_ms for b in mine))
                continue
            self._live[symbol] = state
            lost += state.sequence.lost - before
            rows.extend(out)
        # The general path reads bronze again: only the commits this batch reached, since
        # bronze may be ahead of silver and the state holds exactly what silver has read.
        upto = ""
        if general:
            newest = df.agg(F.max("_hoodie_commit_time")).first()
            upto = str(newest[0]) if newest is not None else ""
        updated = time.monotonic()
        written = self._write(rows, general, runs, upto)
        self._ledger.record(self._path, batch)
        if general:
            self._load(list(general))  # the general path rewrote them: their state again
        self.late_trades += late
        self.lost_trades += lost
        log.info(
            "batch %d: %d symbols traded (%d by the general path), %d late trades (%d in all), "
            "%d trade ids given up (%d in all), %d bars written, clock %s "
            "(summed in %.1f s, state %.1f s, written %.1f s), in %.1f s",
            batch_id,
            len(minutes),
            len(general),
            late,
            self.late_trades,
            lost,
            self.lost_trades,
            written,
            self._clock_ms,
            summed - started,
            updated - summed,
            time.monotonic() - updated,
            time.monotonic() - started,
        )

    def _new_rows(self, df: DataFrame, batch_id: int) -> DataFrame:
        """The batch's bronze rows, read straight from the files of its commits where that
        is exact (hudi.stream_batch), else the stream's own."""
        span = stream_range(self._spark, self._checkpoint, batch_id)
        rows = None
        if span is not None:
            rows = stream_batch(
                self._spark, self._source_path, span, _SOURCE_COLUMNS[self._layer.bars_from]
            )
        return df if rows is None else rows

    def _update(
        self, state: live.SymbolState, minutes: list[live.Bar], runs: list[live.Run]
    ) -> list[dict[str, Any]] | None:
        return state.update(
            minutes,
            runs,
            self._clock_ms,
            self._layer.clock_grace_ms,
            self._layer.gap_timeout_ms,
        )

    def _write(
        self,
        rows: list[dict[str, Any]],
        general: dict[str, tuple[int, int]],
        runs: dict[str, list[live.Run]],
        upto: str,
    ) -> int:
        parts = []
        if rows:
            parts.append(
                local_frame(
                    self._spark, [tuple(r[c] for c in series.ROW_COLUMNS) for r in rows], _ROWS
                )
            )
        if general:
            watermarks = self._watermarks(general, runs)
            parts.append(self._changed(general, self._stored(), watermarks, upto))
        if not parts:
            return 0
        out = parts[0]
        for frame in parts[1:]:
            out = out.unionByName(frame)
        out = self._table_rows(out)
        if general:
            # Materialized once: Hudi's upsert reads its input more than once.
            out = out.localCheckpoint()
            n = out.count()
        else:
            n = len(rows)  # local rows: cheap to read again
        if n:
            write_batch(out, tables.OHLCV, self._path, self._batch)
        return n

    def _watermarks(
        self, general: dict[str, tuple[int, int]], runs: dict[str, list[live.Run]]
    ) -> dict[str, int | None]:
        """The general path's finality per symbol: bars ending at or before this are final."""
        out: dict[str, int | None] = {}
        for symbol in general:
            state = self._live.get(symbol)
            sequence = state.sequence if state else live.Sequence()
            sequence.add([r for r in runs.get(symbol, []) if not sequence.covers(r)])
            horizon = sequence.horizon(self._clock_ms, self._layer.clock_grace_ms)
            out[symbol] = None if horizon is None else horizon - 1
        return out

    # -- state kept in the table ------------------------------------------------

    def _stored(self) -> DataFrame | None:
        if not table_exists(self._spark, self._path):
            return None
        return read_table(self._spark, self._path).withColumn("open_ms", F.unix_millis("open_time"))

    def _load(self, symbols: list[str] | None) -> None:
        """Read the state of `symbols` (None: every symbol of the latest two 1m periods).

        Per interval the last LOADED bars of each series (enough to continue
        its indicators, or the whole series while it is younger than the
        warm-up); then the trade sequence from the last final 1m bar on,
        from bronze.
        """
        stored = self._stored()
        if stored is None:
            return
        one_minute = stored.filter(F.col("interval") == "1m")
        if symbols is None:
            recent = self._latest_periods("1m", 2)
            if not recent:
                return
            one_minute = one_minute.filter(F.col("period").isin(recent))
        else:
            one_minute = one_minute.filter(is_in("symbol", symbols))
        latest = {
            r["symbol"]: int(r["last"])
            for r in one_minute.groupBy("symbol").agg(F.max("open_ms").alias("last")).collect()
        }
        for symbol in symbols or []:
            self._live.pop(symbol, None)
        if not latest:
            return
        earliest = min(latest.values())
        since = [
            tables.opening_since(name, series.floor(earliest, ms) - LOADED * ms)
            for name, ms in self._intervals
        ]
        newest = Window.partitionBy("symbol", "interval").orderBy(F.col("open_ms").desc())
        bars = (
            stored.filter(is_in("symbol", list(latest)) & any_of(since))
            .withColumn("_n", F.row_number().over(newest))
            .filter(F.col("_n") <= LOADED)
            .select(*series.ROW_COLUMNS)
            .collect()
        )
        grouped: dict[str, dict[str, list[Row]]] = {}
        for row in bars:
            grouped.setdefault(row["symbol"], {}).setdefault(row["interval"], []).append(row)
        states = {s: self._state(s, by_interval) for s, by_interval in grouped.items()}
        processed = {
            s: max(
                (
                    int(r["last_trade_id"])
                    for r in by.get("1m", [])
                    if r["last_trade_id"] is not None
                ),
                default=None,
            )
            for s, by in grouped.items()
        }
        self._sequences(states, processed)
        self._live.update(states)
        log.info("state of %d symbols read from %s", len(states), tables.OHLCV.name)

    def _state(self, symbol: str, by_interval: dict[str, list[Row]]) -> live.SymbolState:
        state = live.SymbolState.new(symbol, self._intervals)
        for name, rows in by_interval.items():
            rows = sorted(rows, key=lambda r: r["open_ms"])
            state.series[name] = _series(state.series[name].step, rows)
            for row in rows:
                if not row["is_final"]:
                    state.pending[(name, int(row["open_ms"]))] = _row_dict(row)
        # The sequence as far as the final bars tell: complete up to the end of the
        # newest final minute, every id up to the newest final trade seen.
        minutes = by_interval.get("1m", [])
        final = [r for r in minutes if r["is_final"]]
        if final:
            state.sequence.contiguous_ms = max(int(r["open_ms"]) for r in final) + live.MINUTE_MS
            ids = [int(r["last_trade_id"]) for r in final if r["last_trade_id"] is not None]
            state.sequence.contiguous = max(ids) if ids else None
        return state

    def _sequences(
        self, states: dict[str, live.SymbolState], processed: dict[str, int | None]
    ) -> None:
        """The runs of trade ids the not-final bars hold, from bronze (up to the newest trade
        the bars hold: bronze may be ahead of silver)."""
        reads = []
        for symbol, state in states.items():
            pending = [t for name, t in state.pending if name == "1m"]
            upto = processed.get(symbol)
            if not pending or upto is None:
                continue
            after = state.sequence.contiguous
            reads.append((symbol, -1 if after is None else after, upto, min(pending)))
        if not reads or not table_exists(self._spark, self._source_path):
            return
        bounds = local_frame(
            self._spark, reads, "symbol string, after_id long, upto_id long, from_ms long"
        )
        earliest = min(r[3] for r in reads)
        source = read_table(self._spark, self._source_path).filter(
            F.col("date") >= F.to_date(F.timestamp_millis(F.lit(earliest)))
        )
        trades = (
            B.trade_rows(source, self._layer.bars_from)
            .join(F.broadcast(bounds), "symbol")
            .filter(
                (F.col("last_id") > F.col("after_id"))
                & (F.col("last_id") <= F.col("upto_id"))
                & (F.col("time_ms") >= F.col("from_ms"))
            )
            .drop("after_id", "upto_id", "from_ms")
        )
        for symbol, found in _by_symbol(id_runs(trades).collect(), _run).items():
            states[symbol].sequence.add(found)

    def _latest_periods(self, interval: str, count: int) -> list[str]:
        jvm = self._spark.sparkContext._jvm
        assert jvm is not None
        root = jvm.org.apache.hadoop.fs.Path(f"{self._path}/interval={interval}")
        fs = root.getFileSystem(self._spark.sparkContext._jsc.hadoopConfiguration())
        if not fs.exists(root):
            return []
        names = [str(s.getPath().getName()) for s in fs.listStatus(root) if s.isDirectory()]
        return sorted(n.removeprefix("period=") for n in names if n.startswith("period="))[-count:]

    def _changed(
        self,
        touched: dict[str, tuple[int, int]],
        stored: DataFrame | None,
        watermarks: dict[str, int | None],
        upto: str,
    ) -> DataFrame:
        """Every row the touched symbols write: bars of all intervals, indicators, finality.

        One pass per symbol (series.update_symbol) over the 1m bars
        recomputed from bronze and the stored bars around them.
        """
        real = B.minute_bars(self._source_trades(touched, upto))
        intervals = self._intervals

        def one_symbol(real: pd.DataFrame, around: pd.DataFrame) -> pd.DataFrame:
            symbol = str(real["symbol"].iloc[0])
            return series.update_symbol(real, around, intervals, watermarks.get(symbol))

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
            return local_frame(self._spark, [], _ROWS)
        first_of = {}
        for symbol, (lo, _) in touched.items():
            state = self._live.get(symbol)
            opened = state.series["1m"].current if state else None
            last = opened.open_ms if opened else None
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
            pruned & is_in("symbol", list(touched)) & (F.col("open_ms") >= bound)
        ).select(*series.ROW_COLUMNS)

    def _source_trades(self, touched: dict[str, tuple[int, int]], upto: str) -> DataFrame:
        """The bronze trades of each touched span up to commit `upto`, with partition pruning."""
        spans = []
        for symbol, (lo, hi) in touched.items():
            start, end = F.timestamp_millis(F.lit(lo)), F.timestamp_millis(F.lit(hi + _MIN))
            spans.append(
                (F.col("symbol") == symbol)
                & F.col("date").between(F.to_date(start), F.to_date(end))
                & (F.col("trade_time") >= start)
                & (F.col("trade_time") < end)
            )
        source = read_table(self._spark, self._source_path).filter(
            any_of(spans) & (F.col("_hoodie_commit_time") <= upto)
        )
        return B.trade_rows(source, self._layer.bars_from)

    def _step(self) -> Column:
        """A row's interval in milliseconds (a long: 35 days of them overflow an int)."""
        pairs = [(F.lit(i), F.lit(ms).cast("long")) for i, ms in self._intervals]
        return F.element_at(F.create_map(*[x for pair in pairs for x in pair]), F.col("interval"))

    def _table_rows(self, rows: DataFrame) -> DataFrame:
        """Rows of series.ROW_COLUMNS -> the table's columns."""
        step = self._step()
        # The batch's one write time, fixed on the driver: the ordering field must not
        # change if Hudi computes the rows again.
        now_ms = F.lit(int(time.time() * 1000)).cast("long")
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
                F.timestamp_millis(now_ms).alias("updated_at"),
                now_ms.alias("updated_ms"),
            )
            .transform(tables.with_period)
            .select(*BAR_OUTPUT)
        )


# Bars of each series read back into the state: the warm-up plus the SMA window.
LOADED = ind.WARM + 2


def id_runs(trades: DataFrame) -> DataFrame:
    """trade_rows -> per symbol, the runs of consecutive trade ids: first, last and their times.

    A run breaks where a row's first id does not follow the previous row's
    last; an id that comes twice breaks it too (its run starts at or below
    the previous one's end, which `Sequence.repeats` recognises).
    """
    order = Window.partitionBy("symbol").orderBy("first_id", "last_id")
    starts = F.coalesce(F.col("first_id") != F.lag("last_id").over(order) + 1, F.lit(True))
    numbered = trades.withColumn("_run", F.sum(starts.cast("long")).over(order))
    return numbered.groupBy("symbol", "_run").agg(
        F.min("first_id").alias("first"),
        F.max("last_id").alias("last"),
        F.min("time_ms").alias("first_ms"),
        F.max("time_ms").alias("last_ms"),
    )


def minute_runs(summary: list[Row]) -> dict[str, list[live.Run]] | None:
    """The runs of consecutive ids from per-minute aggregates (with times), or None when
    some minute's ids are not consecutive (a gap or a repeat inside it)."""
    out: dict[str, list[live.Run]] = {}
    for row in sorted(summary, key=lambda r: (r["symbol"], r["first_trade_id"])):
        first, last = int(row["first_trade_id"]), int(row["last_trade_id"])
        if last - first + 1 != int(row["trade_count"]):
            return None
        runs = out.setdefault(row["symbol"], [])
        run = live.Run(first, last, int(row["first_ms"]), int(row["last_ms"]))
        if runs and runs[-1].last + 1 == first:
            runs[-1] = live.Run(runs[-1].first, last, runs[-1].first_ms, run.last_ms)
        elif runs and first <= runs[-1].last:
            return None  # minutes overlapping in ids: a repeat
        else:
            runs.append(run)
    return out


def _by_symbol(rows: Iterable[Row], make: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row["symbol"], []).append(make(row))
    return out


def _run(row: Row) -> live.Run:
    return live.Run(int(row["first"]), int(row["last"]), int(row["first_ms"]), int(row["last_ms"]))


def _bar(row: Row) -> live.Bar:
    def ident(value: Any) -> int | None:
        return None if value is None else int(value)

    return live.Bar(
        open_ms=int(row["open_ms"]),
        open=Decimal(row["open"]),
        high=Decimal(row["high"]),
        low=Decimal(row["low"]),
        close=Decimal(row["close"]),
        volume=Decimal(row["volume"]),
        quote_volume=Decimal(row["quote_volume"]),
        trade_count=int(row["trade_count"]),
        taker_buy_base=Decimal(row["taker_buy_base"]),
        taker_buy_quote=Decimal(row["taker_buy_quote"]),
        first_trade_id=ident(row["first_trade_id"]),
        last_trade_id=ident(row["last_trade_id"]),
        is_filled=bool(row["is_filled"]),
    )


def _row_dict(row: Row) -> dict[str, Any]:
    return {c: row[c] for c in series.ROW_COLUMNS}


def _series(step: int, rows: list[Row]) -> live.Series:
    """A series' state from its last stored bars (oldest first)."""
    last = rows[-1]
    index = int(last["bar_index"])
    out = live.Series(step, _bar(last), index)
    before = rows[:-1]
    if index - 1 >= ind.WARM:
        prior = before[-1]
        out.prior = ind.State(
            bar_index=int(prior["bar_index"]),
            close=float(prior["close"]),
            ema_12=float(prior["ema_12"]),
            ema_26=float(prior["ema_26"]),
            macd_fast_ema=float(prior["macd_fast_ema"]),
            macd_signal=float(prior["macd_signal"]),
            rsi_avg_gain=float(prior["rsi_avg_gain"]),
            rsi_avg_loss=float(prior["rsi_avg_loss"]),
        )
        out.closes = [float(r["close"]) for r in before[-(ind.SMA_N - 1) :]]
    else:
        if len(before) != index:
            raise ValueError(f"the stored series does not reach its first bar ({index} before)")
        out.closes = [float(r["close"]) for r in before]
    return out


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
