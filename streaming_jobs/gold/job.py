"""The gold query: silver bars (a Hudi stream) -> analytics, risk, signals, data quality.

    ./spark-submit.sh gold [--once]

Each micro-batch of changed silver bars (../shared/docs/design.md) gives,
per (symbol, interval), the earliest bar that changed. Gold then recomputes
every row whose window contains a changed bar, from the changed bars plus
the context before them, and upserts:

- gold_market_summary: per changed bar, from its series (analytics.summary_row);
- gold_signals: events of final bars (analytics.signals); an event that a
  correction made disappear is kept with `retracted` true;
- gold_correlation and gold_risk: from the final 1m bars of the active and
  portfolio symbols (analytics.correlations, analytics.risk);
- gold_data_quality: per (symbol, UTC day) touched, from bronze and silver
  (trade counts kept between batches: quality.QualityCounts).

Two queries share the driver, each over silver's commits with its own
checkpoint: `gold` writes the first four on a short trigger; `gold_quality`
writes gold_data_quality on a longer one (`quality_trigger`): it reads the
trades bronze committed since its last batch, and silver's minutes and
bronze's quarantine of the days touched.

The summary's context comes from the bars gold holds (recent.RecentBars:
each series' last day, read from silver when a series is first met or a
change reaches further back, then updated by each batch's changed bars,
with the summary's columns and running sums kept per series: a batch
works on the bars it changed, not on a frame of every held series);
the signals and cross-asset figures read theirs from silver, in the batches
where a bar became final. The held bars are a copy of silver, never a
source: a restart reads them again, recomputes and writes the same rows,
and a replayed batch changes nothing.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession, functions as F, types as T

from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common import lakefiles
from streaming_jobs.common.columns import any_of, batch_clock, is_in, once
from streaming_jobs.common.frames import local_frame
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
from streaming_jobs.gold.quality import TRADE_COLUMNS, Pair, QualityCounts, trade_figures
from streaming_jobs.gold.recent import (
    CLOSE,
    CLOSE_MS,
    COLUMNS,
    FINAL,
    OPEN,
    UPDATED,
    Key,
    RecentBars,
)
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
# The summary rows built on the driver: _SUMMARY_OUT's values and the bar's own columns.
_SUMMARY_ROWS = T.StructType(
    [
        *_SUMMARY_OUT.fields[:2],
        T.StructField("open_ms", T.LongType()),
        T.StructField("close_ms", T.LongType()),
        *_SUMMARY_OUT.fields[3:],
        T.StructField("close", PRICE),
        T.StructField("is_final", T.BooleanType()),
        T.StructField("bar_updated_ms", T.LongType()),
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


def _series_signals(pdf: pd.DataFrame, anomaly_window: int, anomaly_z: float) -> pd.DataFrame:
    interval = str(pdf["interval"].iat[0])
    window = anomaly_window if interval == "1m" else None
    out = A.signals(pdf, int(pdf["from_ms"].min()), window, anomaly_z)
    out.insert(0, "interval", interval)
    out.insert(0, "symbol", str(pdf["symbol"].iat[0]))
    return out


class Changed(NamedTuple):
    """A series a batch changed: its earliest changed bar, and earliest final one."""

    symbol: str
    interval: str
    from_ms: int
    final_from_ms: int | None


def _held_columns(bars: DataFrame) -> DataFrame:
    """Silver's bars -> the columns gold holds (recent.COLUMNS), with symbol and interval.

    Prices and sums in the types the summary's formulas and table take (a quote
    volume rounds to 8 decimals, as the summary's columns are).
    """
    return bars.select(
        "symbol",
        "interval",
        F.unix_millis("open_time").alias("open_ms"),
        F.unix_millis("close_time").alias("close_ms"),
        *[F.col(c).cast(PRICE).alias(c) for c in ("open", "high", "low", "close")],
        *[F.col(c).cast(SUM).alias(c) for c in ("volume", "quote_volume")],
        "is_final",
        "updated_ms",
    )


def _by_series(bars: pd.DataFrame) -> dict[Key, list[tuple[Any, ...]]]:
    """_held_columns' rows (as pandas) -> per (symbol, interval), its bars as recent.COLUMNS.

    One conversion of each column to Python values (every held column is
    non-null in silver), not a pandas group per series.
    """
    out: dict[Key, list[tuple[Any, ...]]] = {}
    keys = zip(bars["symbol"].tolist(), bars["interval"].tolist(), strict=True)
    values = zip(*(bars[c].tolist() for c in COLUMNS), strict=True)
    for key, bar in zip(keys, values, strict=True):
        out.setdefault(key, []).append(bar)
    return out


def _changed(key: Key, bars: list[tuple[Any, ...]]) -> Changed:
    finals = [b[OPEN] for b in bars if b[FINAL]]
    return Changed(*key, min(b[OPEN] for b in bars), min(finals) if finals else None)


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
        # Each series' last day of bars (and the windows before it), between batches.
        self._recent = RecentBars(
            {i: (self._context_bars(i) + 1) * INTERVAL_MS[i] for i in INTERVAL_MS}
        )

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        self._batch = current_batch(self._spark, QUERY_NAME, batch_id)
        bars = _by_series(_held_columns(df).toPandas())
        if not bars:
            log.info("batch %d: no change", batch_id)
            return
        changed = [_changed(key, bars[key]) for key in sorted(bars)]
        wanted = {(c.symbol, c.interval): self._lookback(c) for c in changed}
        missing = self._recent.needs(wanted)
        if missing:
            self._load(missing)
        for key, held in bars.items():
            self._recent.update(key, held)
        # Signals and cross-asset figures come from final bars only: most batches
        # (a minute ends once every four 15 s triggers) do not read silver at all.
        finals = [c for c in changed if c.final_from_ms is not None]
        # The market summary, what a reader waits for, commits first and alone: beside
        # the signals and cross-asset work it shared the cores with them (in make
        # bench-live, batches with that work took 22-38 s, those without 4-18 s).
        written = [tables.MARKET_SUMMARY]
        self._upsert(tables.MARKET_SUMMARY, self._summary(changed))
        summary_s = time.monotonic() - started
        with ThreadPoolExecutor(max_workers=UPSERT_THREADS) as pool:
            upserts = []
            silver_bars = (
                read_table(self._spark, self._silver_path).withColumn(
                    "open_ms", F.unix_millis("open_time")
                )
                if finals
                else None
            )
            for table, rows in (
                *self._signals(silver_bars, finals),
                *self._cross_asset(silver_bars, finals),
            ):
                written.append(table)
                upserts.append(pool.submit(self._upsert, table, rows))
            for upsert in upserts:
                upsert.result()
        self._recent.trim()
        log.info(
            # Ends "in <s> s", as every layer's batch line (tests/bench reads them).
            "batch %d: %d series changed (%d read from silver), wrote %s (the summary "
            "at %.1f s) in %.1f s",
            batch_id,
            len(changed),
            len(missing),
            ", ".join(table.name for table in written),
            summary_s,
            time.monotonic() - started,
        )

    def _context_bars(self, interval: str) -> int:
        """How many bars before a changed one its rows need: a day, or a longer window."""
        step = INTERVAL_MS[interval]
        return max(A.DAY_MS // step, self._gold.vol_window + 1, self._gold.anomaly_window + 1)

    def _lookback(self, row: Changed) -> int:
        """The first open time a changed series needs as context."""
        earliest = min(v for v in (row.from_ms, row.final_from_ms) if v is not None)
        return earliest - self._context_bars(row.interval) * INTERVAL_MS[row.interval]

    def _load(self, missing: dict[Key, int]) -> None:
        """Read series from silver into the held bars, each from the open time given."""
        rows: pd.DataFrame = (
            self._since(
                read_table(self._spark, self._silver_path),
                [(s, i, lo) for (s, i), lo in missing.items()],
                "symbol string, interval string, lo_ms long",
            )
            .transform(_held_columns)
            .toPandas()
        )
        held = _by_series(rows)
        for key, lo in missing.items():
            self._recent.load(key, lo, held.get(key, []))

    def _since(self, bars: DataFrame, starts: list[tuple[Any, ...]], schema: str) -> DataFrame:
        """Silver's `bars` of each series in `starts` (symbol, interval, lo_ms, then any
        columns to carry along) opening at or after its lo_ms.

        Literal filters on the partition columns (interval, period) let Hudi skip
        other intervals' and periods' files.
        """
        since: dict[str, int] = {}
        for _, interval, lo, *_rest in starts:
            since[interval] = min(since.get(interval, lo), lo)
        return (
            bars.filter(
                is_in("symbol", sorted({start[0] for start in starts}))
                & any_of([silver.opening_since(i, lo) for i, lo in sorted(since.items())])
            )
            .join(F.broadcast(local_frame(self._spark, starts, schema)), ["symbol", "interval"])
            .filter(F.unix_millis("open_time") >= F.col("lo_ms"))
        )

    def _upsert(self, table: HudiTable, rows: DataFrame) -> None:
        in_pool(self._spark, QUERY_NAME)  # a pool's worker thread does not inherit it
        write_batch(rows, table, self._settings.table_path(table.name), self._batch)

    # -- per series -------------------------------------------------------------------

    def _summary(self, changed: list[Changed]) -> DataFrame:
        """The market summary of every changed bar, from the held bars of its series."""
        rows: list[tuple[Any, ...]] = []
        for c in changed:
            series = self._recent[(c.symbol, c.interval)]
            columns = series.columns()
            step = INTERVAL_MS[c.interval]
            for i in range(bisect.bisect_left(columns.opens, c.from_ms), len(columns.opens)):
                open_ms, *values = A.summary_row(columns, i, step, self._gold.vol_window)
                bar = series.bars[open_ms]
                closing = (bar[CLOSE], bar[FINAL], bar[UPDATED])
                rows.append((c.symbol, c.interval, open_ms, bar[CLOSE_MS], *values, *closing))
        frame = local_frame(self._spark, rows, _SUMMARY_ROWS)
        return (
            frame.select(
                "symbol",
                "interval",
                *_SUMMARY_OUT.fieldNames()[3:],
                F.timestamp_millis("open_ms").alias("open_time"),
                F.timestamp_millis("close_ms").alias("close_time"),
                "close",
                "is_final",
                "bar_updated_ms",
            )
            .transform(silver.with_period)
            .transform(_stamped)
        )

    def _context(self, silver_bars: DataFrame, changed: list[Changed]) -> DataFrame:
        """Silver's bars of the changed series from their lookback on (the signals' input)."""
        return self._since(
            silver_bars,
            [
                (r.symbol, r.interval, self._lookback(r), r.from_ms, r.final_from_ms)
                for r in changed
            ],
            "symbol string, interval string, lo_ms long, from_ms long, final_from_ms long",
        ).localCheckpoint()

    def _signals(
        self, silver_bars: DataFrame | None, finals: list[Changed]
    ) -> list[tuple[HudiTable, DataFrame]]:
        """`finals`: the changed series with a final bar among their changes."""
        if silver_bars is None or not finals:
            # No bar became final or changed after it was: no event can appear or go,
            # and an empty upsert would still cost a commit.
            return []
        symbols = sorted({r.symbol for r in finals})
        since: dict[str, int] = {}
        for r in finals:
            first = int(r.final_from_ms or 0)
            since[r.interval] = min(since.get(r.interval, first), first)
        context = self._context(silver_bars, finals)
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
                    is_in("symbol", symbols)
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
        self, silver_bars: DataFrame | None, finals: list[Changed]
    ) -> list[tuple[HudiTable, DataFrame]]:
        symbols = sorted(set(self._cross_symbols) | set(self._portfolio.weights))
        froms = [
            r.final_from_ms
            for r in finals
            if r.interval == "1m" and r.symbol in symbols and r.final_from_ms is not None
        ]
        if silver_bars is None or not froms:
            return []
        since = min(froms)
        windows = (*self._gold.correlation_windows, *self._gold.risk_windows)
        lo = since - max(duration_ms(w) for w in windows) - A.MINUTE_MS
        bars: pd.DataFrame = (
            silver_bars.filter(
                (F.col("interval") == "1m")
                & F.col("is_final")
                & is_in("symbol", symbols)
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
        frame = local_frame(self._spark, rows, schema)
        return (
            frame.withColumn("as_of", F.timestamp_millis("as_of_ms"))
            .drop("as_of_ms")
            .transform(_stamped)
        )


class Counted(NamedTuple):
    """What QualityBatch.count gives: the trade figures of the days asked, how many of
    them were counted in full, how many commits were added, and the rows read."""

    days: dict[Pair, dict[str, Any]]
    in_full: int
    commits: int
    trades_read: int


class QualityBatch:
    """The foreachBatch function writing gold_data_quality for the days of changed bars.

    Trade counts are kept per day between batches (quality.QualityCounts): a
    day met for the first time is read from bronze in full, then only the
    commits completed since are read and added, so a batch reads about a
    minute of trades however late in the day it runs.
    """

    def __init__(self, spark: SparkSession, settings: Settings):
        self._spark = spark
        self._settings = settings
        self._counts = QualityCounts()
        self._watermark_ms = settings.pipeline.streaming.silver.watermark_ms

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        batch = current_batch(self._spark, QUALITY_QUERY, batch_id)
        pairs: list[Pair] = sorted(
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
        counted = self.count(pairs)
        counted_s = time.monotonic() - started
        table = tables.DATA_QUALITY
        rows = data_quality(self._spark, self._settings, pairs, counted.days)
        write_batch(rows, table, self._settings.table_path(table.name), batch)
        self._counts.trim()
        log.info(
            "%s batch %d: %d (symbol, day) counted (%d in full, %d commits added, "
            "%d trades read in %.1f s) in %.1f s",
            QUALITY_QUERY,
            batch_id,
            len(pairs),
            counted.in_full,
            counted.commits,
            counted.trades_read,
            counted_s,
            time.monotonic() - started,
        )

    def count(self, pairs: list[Pair]) -> Counted:
        """The trade counts of `pairs` as of bronze's timeline listed now.

        The days held get the commits completed since the last call (an incremental
        read of the files they wrote); days met for the first time every row of a
        commit completed by now (their dates' files, a file slice at a time). Read
        without Spark (hudi-rs): a minute's commits are a few files."""
        table = bronze.TRADES.name
        listed = lakefiles.timeline(self._settings, table)
        new = self._counts.new_commits(listed.completed)
        held = self._counts.held() if new else set()
        fresh = self._counts.meet(pairs)
        read = 0
        if held:
            read += self._add(
                lakefiles.rows_since(self._settings, table, new[0], TRADE_COLUMNS),
                held,
                listed,
                lambda commits: pc.is_in(commits, pa.array(new, pa.string())),
            )
        if fresh:
            # Not a write still in flight at the listing (an instant earlier than the
            # last completed one may complete after it): the next batch adds it.
            upto = max(listed.completed, default="")
            in_flight = pa.array(sorted(listed.pending), pa.string())
            dates = ",".join(sorted({d.isoformat() for _, d in fresh}))
            read += self._add(
                lakefiles.row_batches(
                    self._settings, table, [("date", "IN", dates)], TRADE_COLUMNS
                ),
                set(fresh),
                listed,
                lambda commits: pc.and_(
                    pc.less_equal(commits, upto), pc.invert(pc.is_in(commits, in_flight))
                ),
            )
        self._counts.done(listed.completed)
        return Counted(self._counts.rows(pairs), len(fresh), len(new), read)

    def _add(
        self,
        batches: Iterable[pa.RecordBatch],
        pairs: set[Pair],
        listed: lakefiles.Timeline,
        of_commits: Callable[[pa.ChunkedArray], pa.ChunkedArray],
    ) -> int:
        """Add the rows of `pairs` whose commit `of_commits` keeps, about a million at a
        time; returns how many were added."""
        symbols = pa.array(sorted({s for s, _ in pairs}))
        added = 0
        for rows in _chunks(batches, _CHUNK_ROWS):
            rows = rows.filter(
                pc.and_(of_commits(rows["_hoodie_commit_time"]), pc.is_in(rows["symbol"], symbols))
            )
            keys = zip(rows["symbol"].to_pylist(), rows["date"].to_pylist(), strict=True)
            rows = rows.filter(pa.array([key in pairs for key in keys], pa.bool_()))
            runs, buckets = trade_figures(rows, listed.completed, self._watermark_ms)
            self._counts.add_runs(runs)
            self._counts.add_latencies(buckets)
            added += rows.num_rows
        return added


_CHUNK_ROWS = 1_000_000  # rows of bronze counted at once: a day is read a slice at a time


def _chunks(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Record batches -> tables of at least `rows` rows each (the last: what is left)."""
    chunk: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        chunk.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield pa.Table.from_batches(chunk)
            chunk, held = [], 0
    if chunk:
        yield pa.Table.from_batches(chunk)


_TRADE_COUNTS = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("date", T.DateType()),
        *[
            T.StructField(c, T.LongType())
            for c in (
                "trades",
                "first_trade_id",
                "last_trade_id",
                "gaps_open",
                "missing_trades",
                "gaps_filled",
                "backfilled_trades",
                "late_trades",
            )
        ],
        T.StructField("latency_max_s", T.DoubleType()),
        T.StructField("latency_p99_s", T.DoubleType()),
    ]
)


def data_quality(
    spark: SparkSession,
    settings: Settings,
    pairs: list[Pair],
    trades: dict[Pair, dict[str, Any]],
) -> DataFrame:
    """One row per (symbol, UTC day) in `pairs`, and per day for quarantined frames
    without a symbol: the trade counts given (quality.DayCounts.row), silver's
    minutes and bronze's quarantine."""
    dates = sorted({d for _, d in pairs})
    days = local_frame(
        spark, [*pairs, *[(UNKNOWN_SYMBOL, d) for d in dates]], "symbol string, date date"
    )
    trade_stats = local_frame(
        spark,
        [
            (s, d, *(values[f] for f in _TRADE_COUNTS.fieldNames()[2:]))
            for (s, d), values in sorted(trades.items())
        ],
        _TRADE_COUNTS,
    )
    first_ms = int(dt.datetime.combine(dates[0], dt.time(), dt.UTC).timestamp() * 1000)
    minutes = (
        read_table(spark, settings.table_path(silver.OHLCV.name))
        .filter(silver.opening_since("1m", first_ms))
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
            .filter(F.col("date").isin(dates))  # partition pruning
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
    return df.withColumn("updated_at", once(("gold", "clock"), batch_clock)).withColumn(
        "updated_ms", F.unix_millis("updated_at")
    )


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
