"""Records published twice never become two rows, without an index lookup per commit.

Bronze inserts the rows of its immutable tables (no index, no rewrite), so
something else must keep a key that reaches Kafka twice (a producer that
died between Kafka's acknowledgement and saving its state, a replay tool)
from landing twice. Each of those tables has a sequence that grows per
symbol in the exchange's order (bronze/tables.SEQUENCE: trade ids,
aggregate trade ids, order book update ids, event times) and a partition
that the row itself decides (the date of its exchange time, or of its
receipt), so within one (date, symbol) a row whose sequence is above the
highest the table holds cannot be in the table yet. Only rows at or below
it, a duplicate or a backfilled gap, are looked up, by symbol and sequence
range within their dates, and those the table holds are dropped.

`SequenceGuard` keeps, per table, the highest sequence held per (date,
symbol), read from the table the first time a date comes up and advanced
after each commit; the batch hands it the bounds of its good rows (`Bounds`,
computed in the job that counts them).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping

from pyspark.sql import Column, DataFrame, SparkSession, functions as F, types as T

from streaming_jobs.common.columns import any_of
from streaming_jobs.common.hudi import HudiTable, read_table, table_exists

log = logging.getLogger("bronze.guard")

# (date, symbol) -> (lowest, highest) sequence among a batch's good rows of a table.
Bounds = Mapping[tuple[dt.date, str], tuple[int, int]]
# Dates further back than this are forgotten (they get no live rows any more).
KEEP_DAYS = 3


def sequence_value(column: str, data_type: T.DataType) -> Column:
    """A sequence column as a long: ids as they are, times in microseconds."""
    if isinstance(data_type, T.TimestampType):
        return F.unix_micros(F.col(column))
    return F.col(column).cast("long")


class SequenceGuard:
    """Drops the rows of a batch that one immutable table already holds."""

    def __init__(self, spark: SparkSession, table: HudiTable, path: str, sequence: str):
        self._spark = spark
        self._table = table
        self._path = path
        self._sequence = sequence
        self._highest: dict[dt.date, dict[str, int]] = {}
        self.dropped = 0  # since this driver started

    def fresh(self, rows: DataFrame, bounds: Bounds) -> DataFrame:
        """`rows` without those the table holds; `bounds` are the rows' own."""
        suspects = {}
        for (date, symbol), (low, high) in bounds.items():
            held = self._held(date).get(symbol)
            if held is not None and low <= held:
                suspects[(date, symbol)] = (low, min(high, held))
        if not suspects:
            return rows
        seq = sequence_value(self._sequence, rows.schema[self._sequence].dataType)
        stored = read_table(self._spark, self._path)
        stored_seq = sequence_value(self._sequence, stored.schema[self._sequence].dataType)
        ranges = [
            (F.col("date") == F.lit(date))
            & (F.col("symbol") == symbol)
            & stored_seq.between(low, high)
            for (date, symbol), (low, high) in suspects.items()
        ]
        keys = list(self._table.record_key)
        held_rows = stored.filter(
            F.col("date").isin(sorted({d for d, _ in suspects})) & any_of(ranges)
        ).select(*keys)
        candidates = rows.withColumn("_seq", seq)
        kept = candidates.join(held_rows, keys, "left_anti").drop("_seq")
        log.info(
            "%s: %d (date, symbol) pairs at or below the highest held sequence; looked up",
            self._table.name,
            len(suspects),
        )
        return kept

    def advance(self, bounds: Bounds) -> None:
        """After a commit of rows with these bounds."""
        for (date, symbol), (_low, high) in bounds.items():
            by_symbol = self._held(date)
            by_symbol[symbol] = max(by_symbol.get(symbol, high), high)
        self._forget(max((d for d, _ in bounds), default=None))

    def _held(self, date: dt.date) -> dict[str, int]:
        if date not in self._highest:
            self._highest[date] = self._read(date)
        return self._highest[date]

    def _read(self, date: dt.date) -> dict[str, int]:
        if not table_exists(self._spark, self._path):
            return {}
        stored = read_table(self._spark, self._path).filter(F.col("date") == F.lit(date))
        seq = sequence_value(self._sequence, stored.schema[self._sequence].dataType)
        rows = stored.groupBy("symbol").agg(F.max(seq).alias("high")).collect()
        return {r["symbol"]: int(r["high"]) for r in rows if r["high"] is not None}

    def _forget(self, newest: dt.date | None) -> None:
        if newest is None:
            return
        for date in [d for d in self._highest if (newest - d).days > KEEP_DAYS]:
            del self._highest[date]


def bounds_of(
    rows: Iterable[tuple[dt.date, str, int, int]],
) -> dict[tuple[dt.date, str], tuple[int, int]]:
    return {(date, symbol): (low, high) for date, symbol, low, high in rows}
