"""Driver rows -> DataFrame without a Python worker, and frames held for a batch
(streaming_jobs.common.frames).

The oracle is Spark's own `createDataFrame` of the same rows (the pickled
path the jobs used before): the same values come back, while the plan reads
a local relation instead of an RDD that Python workers un-pickle.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import functions as F, types as T

from streaming_jobs.common.frames import held, local_frame, release

SCHEMA = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("open_ms", T.LongType()),
        T.StructField("price", T.DecimalType(28, 8)),
        T.StructField("quote", T.DecimalType(38, 16)),
        T.StructField("rsi", T.DoubleType()),
        T.StructField("final", T.BooleanType()),
        T.StructField("date", T.DateType()),
    ]
)
# Real values: BTCUSDT's first two 1m klines of 2020-01-01 (open time, open,
# quote volume; tests/fixtures/klines, Binance's archive), with the nulls and
# the NaN a row can carry.
ROWS: list[tuple[Any, ...]] = [
    (
        "BTCUSDT",
        1577836800000,
        Decimal("7195.24000000"),
        Decimal("371233.51835535"),
        None,
        False,
        dt.date(2020, 1, 1),
    ),
    ("BTCUSDT", 1577836860000, Decimal("7187.67000000"), None, 55.25, True, dt.date(2020, 1, 1)),
    ("BTCUSDT", 1577836920000, None, Decimal("52080.12778780"), math.nan, None, None),
]


def _values(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows comparable with ==: NaN as a marker."""
    return [
        tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row) for row in rows
    ]


def test_the_same_rows_as_spark_gives_with_nulls_and_nan_kept(spark: Any) -> None:
    expected = spark.createDataFrame(ROWS, SCHEMA).collect()
    got = local_frame(spark, ROWS, SCHEMA).collect()
    assert _values(got) == _values(expected)
    assert got[2]["rsi"] is not None and math.isnan(got[2]["rsi"])  # NaN is not null
    assert got[0]["rsi"] is None


def test_read_by_the_jvm_alone(spark: Any) -> None:
    def plan(df: Any) -> str:
        return str(df._jdf.queryExecution().executedPlan().toString())

    assert "ExistingRDD" in plan(spark.createDataFrame(ROWS, SCHEMA))  # the pickled path
    local = plan(local_frame(spark, ROWS, SCHEMA).filter("open_ms > 0"))
    assert "LocalTableScan" in local and "ExistingRDD" not in local


def test_a_ddl_schema_and_no_rows(spark: Any) -> None:
    empty = local_frame(spark, [], "symbol string, date date")
    assert empty.schema.fieldNames() == ["symbol", "date"]
    assert empty.count() == 0
    days = local_frame(spark, [("BTCUSDT", dt.date(2020, 1, 1))], "symbol string, date date")
    assert days.collect()[0]["date"] == dt.date(2020, 1, 1)


def test_a_decimal_finer_than_its_column_is_an_error_never_rounded(spark: Any) -> None:
    row = ("BTCUSDT", 1, Decimal("7195.240000001"), None, None, None, None)
    with pytest.raises(pa.ArrowInvalid):
        local_frame(spark, [row], SCHEMA)


def test_a_row_of_the_wrong_width_is_an_error(spark: Any) -> None:
    with pytest.raises(ValueError, match="7 columns"):
        local_frame(spark, [("BTCUSDT", 1)], SCHEMA)


def _kept_blocks(spark: Any) -> int:
    """Blocks of RDDs the executors keep (in memory or on disk)."""
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return sum(info.numCachedPartitions() for info in infos)


def test_a_held_frame_is_computed_once_read_without_its_plan_and_released(spark: Any) -> None:
    before = _kept_blocks(spark)
    source = spark.range(1000, numPartitions=3).withColumn("x", F.col("id") * 2)
    frame = held(source)
    assert _kept_blocks(spark) == before  # lazy: the batch's first job fills it
    # Each row computed once: a nondeterministic column keeps its first values.
    tagged = held(source.withColumn("r", F.rand()))
    first = sorted(tagged.select("id", "r").collect())
    assert sorted(tagged.select("id", "r").collect()) == first
    assert frame.agg(F.sum("x")).first()[0] == 999 * 1000
    assert _kept_blocks(spark) >= before + 6
    # Later jobs read one node, not the plan that built it.
    plan = frame.filter("x > 10")._jdf.queryExecution().optimizedPlan().toString()
    assert "Range" not in plan and "LogicalRDD" in plan
    release(frame)
    release(tagged)
    assert _kept_blocks(spark) == before
