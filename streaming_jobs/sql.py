"""`./spark-submit.sh sql "<SQL>"`: query the lake, result as CSV on stdout.

Registers every Hudi table under the storage profile's tables root as a
temporary view named after its folder (bronze_trades, silver_ohlcv, ...),
runs the query and writes a header row and the rows as CSV. Logs go to
stderr, so stdout can be piped or compared by tests and operators.

    ./spark-submit.sh sql "SELECT symbol, count(*) FROM bronze_trades GROUP BY symbol"
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TextIO

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession, types as T

from streaming_jobs.common.hudi import list_tables, read_table
from streaming_jobs.common.settings import load_settings


def csv_value(value: Any, scale: int | None = None) -> str:
    """One cell as text: decimals at their column's scale, ISO-8601 UTC times, true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        # The JVM hands over e.g. 1.0E-8 for 0.00000001 at scale 8: pin the scale.
        return format(
            value.quantize(Decimal(1).scaleb(-scale)) if scale is not None else value, "f"
        )
    if isinstance(value, dt.datetime):
        # Spark hands the driver naive datetimes in the process zone, which
        # launch.py pins to UTC.
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def write_csv(schema: T.StructType, rows: Iterable[Iterable[Any]], out: TextIO) -> None:
    scales = [f.dataType.scale if isinstance(f.dataType, T.DecimalType) else None for f in schema]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(schema.names)
    for row in rows:
        writer.writerow([csv_value(v, scale) for v, scale in zip(row, scales, strict=True)])


def register_lake_views(spark: SparkSession, tables_root: str) -> list[str]:
    tables = list_tables(spark, tables_root)
    for name, path in tables.items():
        read_table(spark, path).createOrReplaceTempView(name)
    return list(tables)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./spark-submit.sh sql")
    parser.add_argument("query", help="Spark SQL; every lake table is a view under its name")
    parser.add_argument("--output", help="write the CSV here instead of stdout")
    args = parser.parse_args(argv)
    settings = load_settings()
    spark = SparkSession.builder.getOrCreate()
    try:
        views = register_lake_views(spark, settings.table_path("").rstrip("/"))
        print(
            f"sql: {len(views)} lake table(s) as views: {', '.join(views) or '-'}", file=sys.stderr
        )
        try:
            result = spark.sql(args.query)
        except AnalysisException as err:
            print(f"sql: {err}", file=sys.stderr)
            return 1
        rows = result.toLocalIterator()
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                write_csv(result.schema, rows, out)
        else:
            write_csv(result.schema, rows, sys.stdout)
    finally:
        spark.stop()
    return 0
