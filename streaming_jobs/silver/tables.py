"""The silver table: bars and their indicators, one row per (symbol, interval, bar).

Indicators live on the bar's row, with the few state values that continue
the series (bar index, MACD's fast EMA, RSI's average gain and loss): a bar
and the indicators computed up to it are written in one commit, so a reader
never sees a bar with another version's indicators, and a restart finds its
state where the bars are.

Layout: partitioned by interval and a `period` of the bar's open time, never
by symbol (a commit touching the whole market's 2,000 symbols would write
12,000 partitions). The period is sized so that a partition of the whole
market holds a few million bars at most (PERIOD_FORMATS): a batch's upserts
look up keys in the current period's files only, and a reader of one symbol
reads the partitions of the periods it wants and skips files and row groups
by their symbol statistics.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, functions as F

from streaming_jobs.common.hudi import HudiTable, WritePath
from streaming_jobs.common.settings import INTERVAL_MS

PARTITION = ("interval", "period")
# The period of a bar by its interval's length: a UTC day below an hour, a month below
# a day, a year from a day on (Spark date patterns, and the same for Python readers).
PERIOD_FORMATS = ((3_600_000, "yyyy-MM-dd"), (86_400_000, "yyyy-MM"), (None, "yyyy"))
_PY_FORMATS = {"yyyy-MM-dd": "%Y-%m-%d", "yyyy-MM": "%Y-%m", "yyyy": "%Y"}

# Bars change (a bar's trades keep coming until it is final; a late trade corrects
# it): upserts, every few seconds, of a few rows per symbol. Merge-on-read with a
# bucket index: a commit appends the changed rows to the log of the key's bucket
# instead of looking each key up in the bloom filters of the period's files and
# rewriting the files that hold them (copy-on-write). Every COMPACT_EVERY commits
# the logs are merged into the base files (inline), so a reader merges a few log
# blocks at most. Readers: Spark's snapshot read, and hudi-rs (common/lakefiles)
# merging the logs (tests/integration/test_operate.py).
# Measured (docs/BENCHMARKS.md): idle, one commit (make bench-write, `bars`, 4
# buckets) 0.93-1.00 s against 1.33-1.34 s copy-on-write with bloom filters, about
# 3 s a compacting one. Live at 1k trades/s on 2 cores (make bench-live), 4 buckets
# lost: each commit wrote a task per bucket and partition (24) and each compaction
# 132, and silver's batch p50 went from 3.3 s (copy-on-write) to 6.0 s, gold's from
# 4.7 to 10.8, trade -> gold p99 from 46.6 to 55.4 s. One bucket per (interval,
# period): silver 3.1 s, gold 4.5 s, trade -> gold p99 37.1 s. Every batch touches
# every symbol, so more buckets rewrite the same bytes at compaction, in more
# tasks; whether a bucket per core pays at 2,000 symbols is not measured yet.
BUCKETS = 1
COMPACT_EVERY = 5
# A batch writes one row per key (the live path's rows are keyed by bar, the general
# path's series have one bar per step), so Hudi's merge of a key's copies is skipped:
# its shuffle sizes every record's Java object graph, Avro schema and all (a JFR
# profile of make bench-silver's commit: most of its executor time), about a quarter
# of the backfill's one commit.
BARS = WritePath(
    operation="upsert",
    table_type="MERGE_ON_READ",
    index="BUCKET",
    buckets=BUCKETS,
    compact_every=COMPACT_EVERY,
    combine=False,
)

OHLCV = HudiTable(
    "silver_ohlcv", ("symbol", "interval", "open_time"), "updated_ms", PARTITION, BARS
)


def period_format(interval: str) -> str:
    step = INTERVAL_MS[interval]
    for below, pattern in PERIOD_FORMATS:
        if below is None or step < below:
            return pattern
    raise AssertionError("unreachable: the last format has no bound")


def period(interval: Column, open_time: Column) -> Column:
    """The period partition of a bar (interval, open time) as text, e.g. 2024-08-08."""
    out = None
    for name in INTERVAL_MS:
        value = F.date_format(open_time, period_format(name))
        out = F.when(interval == name, value) if out is None else out.when(interval == name, value)
    assert out is not None
    return out


def with_period(df: DataFrame) -> DataFrame:
    return df.withColumn("period", period(F.col("interval"), F.col("open_time")))


def period_of(interval: str, open_ms: int) -> str:
    """`period` for Python readers (the CLI): the same text Spark writes."""
    import datetime as dt

    when = dt.datetime.fromtimestamp(open_ms / 1000, dt.UTC)
    return when.strftime(_PY_FORMATS[period_format(interval)])


def opening_since(interval: str, open_ms: int) -> Column:
    """Bars of `interval` opening at or after open_ms, as a filter the partitions prune on."""
    return (
        (F.col("interval") == interval)
        & (F.col("period") >= period_of(interval, open_ms))
        & (F.unix_millis("open_time") >= open_ms)
    )
