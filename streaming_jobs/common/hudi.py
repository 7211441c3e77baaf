"""Hudi tables: each table's key, ordering and partitioning declared once, and the I/O.

A `HudiTable` is the single declaration of a table (record key, ordering
field, partition columns, table type). Every write goes through
`write_options()`, so the options that decide correctness (upsert by key,
the ordering field that makes a replayed or late record resolve
deterministically, hive-style partition paths) cannot drift between jobs.

Traps this module exists to avoid (see ../shared/docs/stack.md):
- The Hudi streaming sink turns every output mode but `append` into an
  overwrite that deletes the table: jobs write through `foreachBatch` with
  `upsert_batch`, which is idempotent by record key.
- The ordering field is `hoodie.table.ordering.fields` from Hudi 1.1 on; the
  record with the larger ordering value wins whatever the arrival order.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from pyspark.sql import DataFrame, SparkSession

HUDI_FORMAT = "hudi"
log = logging.getLogger("hudi")


@dataclass(frozen=True)
class HudiTable:
    name: str
    record_key: tuple[str, ...]
    # The column that decides which version of a key wins (larger wins).
    ordering: str
    partition_by: tuple[str, ...] = ()
    table_type: Literal["COPY_ON_WRITE", "MERGE_ON_READ"] = "COPY_ON_WRITE"

    def __post_init__(self) -> None:
        if not self.record_key:
            raise ValueError(f"table {self.name}: record_key must name at least one column")


def write_options(table: HudiTable, operation: str = "upsert") -> dict[str, str]:
    """The Hudi writer options for one table; the only place they are assembled."""
    partitioned = bool(table.partition_by)
    key_generator = (
        "org.apache.hudi.keygen.ComplexKeyGenerator"
        if partitioned
        else "org.apache.hudi.keygen.NonpartitionedKeyGenerator"
    )
    return {
        "hoodie.table.name": table.name,
        "hoodie.datasource.write.table.type": table.table_type,
        "hoodie.datasource.write.operation": operation,
        "hoodie.datasource.write.recordkey.field": ",".join(table.record_key),
        "hoodie.table.ordering.fields": table.ordering,
        "hoodie.datasource.write.partitionpath.field": ",".join(table.partition_by),
        "hoodie.datasource.write.hive_style_partitioning": "true",
        "hoodie.datasource.write.keygenerator.class": key_generator,
        # A failed batch must fail the query (and be retried from the
        # checkpoint), never be skipped.
        "hoodie.datasource.write.streaming.ignore.failed.batch": "false",
        # Keep enough commits for downstream streaming readers (hudi#7778).
        "hoodie.clean.commits.retained": "50",
        "hoodie.keep.min.commits": "60",
        "hoodie.keep.max.commits": "80",
        # The metadata table is the stack's documented fallback to turn off
        # (../shared/docs/stack.md): it costs a second commit per write,
        # 2.5 s -> 1.1 s per upsert of 10k rows on 2 cores (docs/BENCHMARKS.md),
        # and the tables here are few partitions (symbol x day) to list.
        "hoodie.metadata.enable": "false",
        # Each datasource write otherwise starts (and stops) an embedded
        # timeline server for its markers and file views: a fixed cost that
        # dominates a small streaming commit. Without it an upsert of 500
        # trades took 0.61 s instead of 0.84 s (median of 22, local[2];
        # docs/BENCHMARKS.md, "Where the time goes"). Markers are then files
        # beside the data, a few per commit.
        "hoodie.embed.timeline.server": "false",
        "hoodie.write.markers.type": "DIRECT",
        # Every base file carries a bloom filter of its keys in its footer,
        # sized up front for num_entries keys: Hudi's 60,000 made a 2-row
        # file 440 KB, 431 KB of it the filter (make bench's 2,000-symbol
        # market: 2,000 such files per commit). The dynamic filter grows as
        # keys come (up to hoodie.bloom.index.filter.dynamic.max.entries),
        # so it starts at the size of a symbol-day's first batch.
        "hoodie.index.bloom.num_entries": "1000",
    }


def upsert_batch(df: DataFrame, table: HudiTable, path: str) -> None:
    """Upsert a (micro-)batch by record key; replaying it changes nothing."""
    (df.write.format(HUDI_FORMAT).options(**write_options(table)).mode("append").save(path))


def read_table(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format(HUDI_FORMAT).load(path)


def _fs_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise RuntimeError("needs a SparkSession with a live JVM")
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


_COMPLETED = re.compile(r"^[0-9]{17}_[0-9]{17}\.(commit|deltacommit|replacecommit)$")


def table_exists(spark: SparkSession, path: str) -> bool:
    """Whether a Hudi table at `path` has a completed commit (so its schema can be read).

    .hoodie appears when the first commit starts; readers must wait for it to complete.
    """
    fs, root = _fs_path(spark, path)
    timeline = root.suffix("/.hoodie/timeline")
    if not fs.exists(timeline):
        return False
    return any(_COMPLETED.match(s.getPath().getName()) for s in fs.listStatus(timeline))


def list_tables(spark: SparkSession, tables_root: str) -> dict[str, str]:
    """Name -> path of every Hudi table (a folder holding .hoodie) under tables_root."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise RuntimeError("list_tables needs a SparkSession with a live JVM")
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    root = jvm.org.apache.hadoop.fs.Path(tables_root)
    fs = root.getFileSystem(hadoop_conf)
    if not fs.exists(root):
        return {}
    tables = {}
    for status in fs.listStatus(root):
        path = status.getPath()
        if status.isDirectory() and fs.exists(jvm.org.apache.hadoop.fs.Path(path, ".hoodie")):
            tables[path.getName()] = path.toString()
    return dict(sorted(tables.items()))


def read_stream(spark: SparkSession, path: str) -> DataFrame:
    """A Hudi table as a streaming source: each micro-batch is the rows of new commits."""
    return (
        spark.readStream.format(HUDI_FORMAT)
        # Behind by more commits than the table retains (a long outage), read
        # it whole rather than fail (hudi#7778); the batch is then large but
        # correct, since the reading jobs recompute whatever a batch touches.
        .option("hoodie.datasource.read.incr.fallback.fulltablescan.enable", "true")
        .load(path)
    )


def await_table(spark: SparkSession, path: str, writer: str, poll_s: float = 5.0) -> None:
    """Block until `path` has a completed commit (its writer creates it with the first)."""
    waited = 0.0
    while not table_exists(spark, path):
        if waited % 60 == 0:
            log.info("waiting for %s (%s has not written it yet)", path, writer)
        time.sleep(poll_s)
        waited += poll_s
