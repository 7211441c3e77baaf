"""`./spark-submit.sh migrate`: rewrite tables of an older layout into this version's.

    ./spark-submit.sh migrate --check        list the tables whose layout differs; exit 1 if any
    ./spark-submit.sh migrate                rewrite each of them, verified row for row

The layers refuse to start on a table laid out otherwise than its
declaration (streaming_jobs/catalog.py; common/hudi.check_layouts), since
writing a new layout over an old one would mix them. Kafka keeps only days,
so a table is rewritten from itself: its current rows (a snapshot read)
with the columns the new layout adds (silver's and gold's `period`), into
`<table>.migrating` with the new declaration, in one bulk-insert commit
that carries the old table's last batch stamp (so a replayed streaming
batch is still skipped). The copy is compared with the original row for
row (every column but Hudi's own), then the original moves to
`<table>.pre-<layout version>-<UTC time>` and the copy takes its place. The
original stays there until you delete it.

Stop the jobs first (`make down`): a table with a write in flight is not
touched. Downstream queries read the rewritten table from its first commit
again, which is newer than their checkpoints: silver and gold recompute
what they read, by key, so their tables end up the same.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from streaming_jobs.catalog import declared
from streaming_jobs.common import lakefiles
from streaming_jobs.common.hudi import (
    BATCH_KEY,
    HUDI_FORMAT,
    HudiTable,
    batch_stamps,
    layout_differences,
    read_table,
    table_properties,
    write_options,
)
from streaming_jobs.common.settings import Settings, load_settings
from streaming_jobs.silver import tables as silver

log = logging.getLogger("migrate")

EX_DATAERR = 65


class MigrationError(RuntimeError):
    pass


def stale(spark: SparkSession, settings: Settings) -> dict[str, list[str]]:
    """Table name -> how its stored layout differs from its declaration (only those that do)."""
    out = {}
    for name, table in declared().items():
        properties = table_properties(spark, settings.table_path(name))
        if properties is not None:
            differences = layout_differences(table, properties)
            if differences:
                out[name] = differences
    return out


def new_columns(table: HudiTable, rows: DataFrame) -> DataFrame:
    """The stored rows with what the declared layout partitions by and they lack."""
    if "period" in table.partition_by and "period" not in rows.columns:
        rows = rows.transform(silver.with_period)
    missing = [c for c in table.partition_by if c not in rows.columns]
    if missing:
        raise MigrationError(f"{table.name}: cannot derive the partition columns {missing}")
    return rows


def data_columns(df: DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("_hoodie_")]


def migrate_table(spark: SparkSession, settings: Settings, table: HudiTable) -> dict[str, Any]:
    path = settings.table_path(table.name)
    if lakefiles.pending_instants(settings, table.name):
        raise MigrationError(f"{table.name} has a write in flight: stop the jobs (make down) first")
    fs_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path  # type: ignore[union-attr]
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = fs_path(path).getFileSystem(hadoop_conf)
    copy_path = f"{path}.migrating"
    fs.delete(fs_path(copy_path), True)  # what a failed attempt left

    old = read_table(spark, path)
    rows = new_columns(table, old.select(*data_columns(old)))
    options = write_options(table, bulk=True)
    stamp = next(batch_stamps(spark, path), None)
    if stamp is not None:
        options[BATCH_KEY] = stamp
    rows.write.format(HUDI_FORMAT).options(**options).mode("overwrite").save(copy_path)

    copy = read_table(spark, copy_path)
    columns = data_columns(rows)
    before, after = rows.select(*columns), copy.select(*columns)
    counts = (before.count(), after.count())
    missing = before.exceptAll(after).limit(5).collect()
    extra = after.exceptAll(before).limit(5).collect()
    if counts[0] != counts[1] or missing or extra:
        raise MigrationError(
            f"{table.name}: the copy differs ({counts[0]} rows before, {counts[1]} after; "
            f"missing {missing}, extra {extra}); the original is untouched, the copy is at "
            f"{copy_path}"
        )
    stamp_time = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{path}.pre-{stamp_time}"
    if not fs.rename(fs_path(path), fs_path(aside)):
        raise MigrationError(f"{table.name}: could not move {path} to {aside}")
    if not fs.rename(fs_path(copy_path), fs_path(path)):
        fs.rename(fs_path(aside), fs_path(path))
        raise MigrationError(f"{table.name}: could not move the copy into place; restored")
    return {"table": table.name, "rows": counts[0], "original": aside}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./spark-submit.sh migrate")
    parser.add_argument("--check", action="store_true", help="only list what differs")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s"
    )
    settings = load_settings()
    spark = SparkSession.builder.getOrCreate()
    try:
        differ = stale(spark, settings)
        for name, differences in differ.items():
            print(f"{name}: " + "; ".join(differences))
        if not differ:
            print("every table is in this version's layout")
            return 0
        if args.check:
            return 1
        tables = declared()
        for name in differ:
            try:
                done = migrate_table(spark, settings, tables[name])
            except MigrationError as err:
                print(f"migrate: {err}", file=sys.stderr)
                return EX_DATAERR
            print(
                f"{name}: {done['rows']:,} rows rewritten and verified; the original is at "
                f"{done['original']} (delete it when you no longer need it)"
            )
        return 0
    finally:
        spark.stop()
