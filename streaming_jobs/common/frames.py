"""Frames a batch builds: rows held on the driver -> a DataFrame without a Python
worker behind it (`local_frame`); a frame kept for the rest of its batch
without its plan (`held`).

`spark.createDataFrame(list_of_rows)` (Spark 3.5) pickles the rows into an
RDD that a Python worker un-pickles in every task that reads it, and a Hudi
upsert reads its input three times (tagging, the workload profile, the
write). For the 120 bars of a silver batch or gold's summary rows that
made the input stages of a commit take 2-4 s of waiting on Python workers
for 60-80 ms of JVM work (make bench-live, the Spark UI's stages of
`mapToPair at HoodieJavaRDD`), the largest part of each small commit while
the stack is busy.

`local_frame` sends the rows as Arrow record batches, the path
`createDataFrame(pandas)` takes with Arrow on, minus pandas: Spark plans them
as a local relation read by the JVM alone. Values keep their exact types
(None is null, a float NaN stays NaN, a Decimal that does not fit the
column's scale is an error, never rounded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, types as T
from pyspark.sql.pandas.serializers import ArrowStreamSerializer
from pyspark.sql.pandas.types import to_arrow_schema


def arrow_table(rows: Iterable[Sequence[Any]], schema: T.StructType) -> pa.Table:
    """Rows (tuples in the schema's field order) as an Arrow table of the schema's types."""
    arrow_schema = to_arrow_schema(schema)
    columns: list[list[Any]] = [[] for _ in arrow_schema]
    width = len(columns)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a row of {len(row)} values for {width} columns: {row!r}")
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return pa.Table.from_arrays(
        [
            pa.array(values, type=field.type)
            for values, field in zip(columns, arrow_schema, strict=True)
        ],
        schema=arrow_schema,
    )


def local_frame(
    spark: SparkSession, rows: Iterable[Sequence[Any]], schema: T.StructType | str
) -> DataFrame:
    """`rows` as a DataFrame of `schema` (a StructType or a DDL string such as
    "symbol string, date date") that Spark reads without a Python worker."""
    if isinstance(schema, str):
        parsed = T._parse_datatype_string(schema)
        assert isinstance(parsed, T.StructType), schema
        schema = parsed
    table = arrow_table(rows, schema)
    batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]
    jvm = spark._jvm
    assert jvm is not None
    # What pyspark's own createDataFrame(pandas) does with Arrow on (pandas/conversion.py).
    jiter = spark.sparkContext._serialize_to_jvm(
        batches,
        ArrowStreamSerializer(),
        jvm.PythonSQLUtils.readArrowStreamFromFile,
        jvm.ArrowIteratorServer,
    )
    jdf = jvm.PythonSQLUtils.toDataFrame(jiter, schema.json(), spark._jsparkSession)
    return DataFrame(jdf, spark)


def held(df: DataFrame) -> DataFrame:
    """`df`, kept by the first job that reads it, for the jobs after it to read as rows.

    A local checkpoint, filled lazily: the batch's first job (bronze's
    count) computes it once, and each job after it (a table's commit, the
    quarantine's) reads the kept rows through a plan of one node. A
    persisted frame keeps its whole plan: each later job rendered bronze's
    parser expressions for the SQL UI again and shipped them to every task
    (a JFR profile of bronze's count over its persisted routes: plan strings
    and Java (de)serialization of the task binaries, not counting). Free it
    with `release` once the batch is done.
    """
    return df.localCheckpoint(eager=False)


def release(df: DataFrame) -> None:
    """Free the rows a `held` frame keeps (their blocks, in memory or on disk)."""
    # The checkpointed frame's plan is one LogicalRDD over the kept RDD.
    df._jdf.queryExecution().logical().rdd().unpersist(False)
