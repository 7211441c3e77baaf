"""Hudi tables: each table's key, ordering, partitioning and write path declared once, and the I/O.

A `HudiTable` is the single declaration of a table (record key, ordering
field, partition columns, and the `WritePath` its commits take). Every
write goes through `write_batch()` and `write_options()`, so the options
that decide correctness (the key, the ordering field that makes a
replayed or late record resolve deterministically, the partition path)
cannot drift between jobs.

Exactly once: a streaming batch may be replayed after a crash (foreachBatch
has none of the Hudi sink's batch-id skip). `write_batch` stamps each
commit with the query and batch it came from (commit metadata, key
BATCH_KEY), and `BatchLedger` skips a batch a table has already
committed; on top of that an upsert is idempotent by key, and an insert
drops duplicates within the batch.

Traps this module exists to avoid (see ../shared/docs/stack.md):
- The Hudi streaming sink turns every output mode but `append` into an
  overwrite that deletes the table: jobs write through `foreachBatch`.
- The ordering field is `hoodie.table.ordering.fields` from Hudi 1.1 on; the
  record with the larger ordering value wins whatever the arrival order.
- Spark's default index is SIMPLE (a join with the keys of every base file
  of the partitions a batch touches), whatever bloom options are set.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pyspark.sql import DataFrame, SparkSession, functions as F

HUDI_FORMAT = "hudi"
# Commit metadata naming the streaming batch a commit holds: {"query", "run", "batch"}.
# Hudi copies write options that start with "_" into the commit's metadata.
BATCH_KEY = "_lakehouse_batch"
log = logging.getLogger("hudi")

_MB = 1024 * 1024


@dataclass(frozen=True)
class WritePath:
    """How a table's commits are written: chosen per table by measurement (make bench-write).

    - operation: `bulk_insert` for rows that never change once published
      (Spark's row writer straight to new files: no index lookup, no Avro
      records, no rewrite of a file that holds older rows), `upsert` for
      rows that do;
    - index: how an upsert finds a key's file group (SIMPLE: join with the
      partition's keys; BLOOM: bloom filters and key ranges in the files'
      footers; BUCKET: a hash of the key);
    - small_file_mb: base files under this size take a commit's new rows
      (rewritten whole on copy-on-write); 0: every commit writes new files;
    - cluster_every / sort_by: every N commits, rewrite the small files of
      the table into large ones sorted by these columns, so readers skip by
      the files' column statistics. The writer only plans it (a listing and
      a plan file); `cluster_pending` runs the plan apart from the batches
      (common/upkeep.py: a thread of the layer's driver), so a batch never
      waits for the rewrite;
    - combine: an upsert first merges the copies of a key within the commit
      (a shuffle of Hudi's records); False only where the writer makes one row
      per key itself.
    """

    operation: Literal["bulk_insert", "insert", "upsert"] = "upsert"
    table_type: Literal["COPY_ON_WRITE", "MERGE_ON_READ"] = "COPY_ON_WRITE"
    index: Literal["SIMPLE", "BLOOM", "BUCKET"] = "SIMPLE"
    buckets: int = 0
    small_file_mb: int = 100
    max_file_mb: int = 120
    cluster_every: int = 0
    cluster_small_file_mb: int = 64
    sort_by: tuple[str, ...] = ()
    compact_every: int = 0
    parallelism: int = 0
    # bulk_insert writes a file per input partition and date: one file a commit.
    files_per_commit: int = 0
    combine: bool = True

    def __post_init__(self) -> None:
        if (self.index == "BUCKET") != (self.buckets > 0):
            raise ValueError("a BUCKET index needs buckets > 0, and only it")
        if (self.compact_every > 0) != (self.table_type == "MERGE_ON_READ"):
            raise ValueError("compact_every applies to (and is needed by) MERGE_ON_READ")
        if self.cluster_every and not self.sort_by:
            raise ValueError("clustering needs the columns to sort by")

    def options(self, bulk: bool = False) -> dict[str, str]:
        """The write path's Hudi options; `bulk`: for a load of rows unique by key into a
        table without commits (a migration's copy), a bulk_insert."""
        operation = "bulk_insert" if bulk else self.operation
        out = {
            "hoodie.datasource.write.table.type": self.table_type,
            "hoodie.datasource.write.operation": operation,
            "hoodie.index.type": self.index,
            "hoodie.parquet.small.file.limit": str(self.small_file_mb * _MB),
            "hoodie.parquet.max.file.size": str(self.max_file_mb * _MB),
        }
        # An insert does not combine two copies of a key within a batch (Hudi's combine is a
        # shuffle of every record, +0.5 s a commit in make bench-write): the writers drop
        # repeats themselves, when their counts show any.
        if operation == "bulk_insert":
            out["hoodie.bulkinsert.sort.mode"] = "NONE"
        if operation != self.operation:
            # Keys as the table's upserts make them. Spark's row writer renders a
            # timestamp in a key as text ("open_time:2019-10-12 00:14:00.0"), the
            # upserts' Avro records as microseconds ("open_time:1570839240000000"):
            # an upsert would not find the key, and a reader would see both.
            out["hoodie.datasource.write.row.writer.enable"] = "false"
        if operation == "upsert" and not self.combine:
            out["hoodie.combine.before.upsert"] = "false"
        if self.index == "BUCKET":
            out["hoodie.bucket.index.num.buckets"] = str(self.buckets)
        if self.table_type == "MERGE_ON_READ":
            out["hoodie.compact.inline"] = "true"
            out["hoodie.compact.inline.max.delta.commits"] = str(self.compact_every)
        if self.cluster_every:
            out.update(
                {
                    # Inline, the batch that reached N commits rewrote the day's small
                    # files before it returned: bronze_fast's batch took 11-38 s
                    # instead of 1-2 (make bench-live, 2026-12-07), the tail of every
                    # trade's latency. Planned inline, run by the upkeep thread.
                    "hoodie.clustering.inline": "false",
                    "hoodie.clustering.schedule.inline": "true",
                    "hoodie.clustering.async.max.commits": str(self.cluster_every),
                    # The writer and the upkeep thread are two write clients of one
                    # table in one JVM: Hudi's single writer with async table
                    # services (its eager rollback of failed writes leaves a pending
                    # clustering alone), their commits guarded by the JVM's lock.
                    "hoodie.write.lock.provider": _IN_PROCESS_LOCK,
                    "hoodie.clustering.plan.strategy.small.file.limit": str(
                        self.cluster_small_file_mb * _MB
                    ),
                    "hoodie.clustering.plan.strategy.target.file.max.bytes": str(
                        self.max_file_mb * _MB
                    ),
                    "hoodie.clustering.plan.strategy.sort.columns": ",".join(self.sort_by),
                }
            )
        if self.parallelism:
            for key in _PARALLELISM_KEYS:
                out[key] = str(self.parallelism)
        return out


_IN_PROCESS_LOCK = "org.apache.hudi.client.transaction.lock.InProcessLockProvider"

# Rows that change, each key looked up in the bloom filters of the files of the
# partitions a commit touches, and those files rewritten (copy-on-write).
UPSERT_BLOOM = WritePath(operation="upsert", index="BLOOM")


# Sized for clusters by default (finalize 200, markers 100, clean 200): a task per
# unit on 2 cores is overhead. 0 for the shuffles means "the input's partitions".
_PARALLELISM_KEYS = (
    "hoodie.upsert.shuffle.parallelism",
    "hoodie.insert.shuffle.parallelism",
    "hoodie.finalize.write.parallelism",
    "hoodie.markers.delete.parallelism",
    "hoodie.bloom.index.parallelism",
    "hoodie.simple.index.parallelism",
    "hoodie.clean.parallelism",
    "hoodie.archive.delete.parallelism",
)


@dataclass(frozen=True)
class HudiTable:
    name: str
    record_key: tuple[str, ...]
    # The column that decides which version of a key wins (larger wins).
    ordering: str
    partition_by: tuple[str, ...] = ()
    write: WritePath = field(default_factory=WritePath)

    def __post_init__(self) -> None:
        if not self.record_key:
            raise ValueError(f"table {self.name}: record_key must name at least one column")

    @property
    def table_type(self) -> str:
        return self.write.table_type


@dataclass(frozen=True)
class Batch:
    """The streaming batch a write holds: its query, the query's run of checkpoints, its id.

    `run` is the query's id, kept in its checkpoint across restarts: a new
    checkpoint numbers its batches from 0 again, and must not be skipped
    for batch ids an older checkpoint committed.
    """

    query: str
    run: str
    batch_id: int

    def stamp(self) -> str:
        return json.dumps({"query": self.query, "run": self.run, "batch": self.batch_id})


def current_batch(spark: SparkSession, query: str, batch_id: int) -> Batch:
    """The Batch of a foreachBatch call (its thread carries the query's id)."""
    run = spark.sparkContext.getLocalProperty("sql.streaming.queryId") or ""
    return Batch(query, run, batch_id)


def write_options(
    table: HudiTable, batch: Batch | None = None, bulk: bool = False
) -> dict[str, str]:
    """The Hudi writer options for one table (`bulk`: WritePath.options); the only place
    they are assembled."""
    partitioned = bool(table.partition_by)
    key_generator = (
        "org.apache.hudi.keygen.ComplexKeyGenerator"
        if partitioned
        else "org.apache.hudi.keygen.NonpartitionedKeyGenerator"
    )
    options = {
        "hoodie.table.name": table.name,
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
        # Plan a clean every 10 commits, not after each: planning reads the timeline and
        # lists the partitions a commit touched, a fixed cost of every small streaming
        # commit (a clean job per commit in each driver's Spark UI, make bench-cpu).
        # Files of up to 60 commits are kept instead of 50, never fewer.
        "hoodie.clean.trigger.max.commits": "10",
        # The metadata table is the stack's documented fallback to turn off
        # (../shared/docs/stack.md): it costs a second commit per write
        # (make bench-write, `metadata`), and the tables here are few
        # partitions (a date, or an interval and a period) to list.
        "hoodie.metadata.enable": "false",
        # Each datasource write otherwise starts (and stops) an embedded
        # timeline server for its markers and file views: a fixed cost that
        # dominates a small streaming commit (0.84 s -> 0.61 s for 500
        # trades, median of 22, local[2], 2026-11-27). Markers are then
        # files beside the data, a few per commit.
        "hoodie.embed.timeline.server": "false",
        "hoodie.write.markers.type": "DIRECT",
        # Every base file carries a bloom filter of its keys in its footer,
        # sized up front for num_entries keys: Hudi's 60,000 made a 2-row
        # file 440 KB, 431 KB of it the filter. The dynamic filter grows as
        # keys come (up to hoodie.bloom.index.filter.dynamic.max.entries).
        "hoodie.index.bloom.num_entries": "1000",
        **table.write.options(bulk),
    }
    if batch is not None:
        options[BATCH_KEY] = batch.stamp()
    return options


def write_batch(df: DataFrame, table: HudiTable, path: str, batch: Batch | None = None) -> None:
    """One commit of `df` into the table, by its write path, stamped with its batch."""
    if table.write.files_per_commit:
        df = df.coalesce(table.write.files_per_commit)
    (df.write.format(HUDI_FORMAT).options(**write_options(table, batch)).mode("append").save(path))


def upsert_batch(df: DataFrame, table: HudiTable, path: str) -> None:
    """A write outside any streaming batch (tests, backfills): by the table's write path."""
    write_batch(df, table, path)


class BatchLedger:
    """The last batch each table committed for a query run: read once from its timeline.

    A table has one writer, so after the first read the ledger follows
    the writes it is told of; a restarted driver reads the timelines again.
    """

    def __init__(self, spark: SparkSession):
        self._spark = spark
        self._last: dict[tuple[str, str, str], int] = {}

    def committed(self, path: str, batch: Batch) -> bool:
        """Whether the table at `path` already holds this batch (or a later one) of its run."""
        key = (path, batch.query, batch.run)
        if key not in self._last:
            self._last[key] = last_committed_batch(self._spark, path, batch.query, batch.run)
        return self._last[key] >= batch.batch_id

    def record(self, path: str, batch: Batch) -> None:
        key = (path, batch.query, batch.run)
        self._last[key] = max(self._last.get(key, -1), batch.batch_id)


def meta_client(spark: SparkSession, path: str) -> Any:
    """Hudi's HoodieTableMetaClient of the table at `path` (a JVM object)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = jvm.org.apache.hudi.storage.hadoop.HadoopStorageConfiguration(
        spark.sparkContext._jsc.hadoopConfiguration()
    )
    return (
        jvm.org.apache.hudi.common.table.HoodieTableMetaClient.builder()
        .setConf(conf)
        .setBasePath(path)
        .build()
    )


def batch_stamps(spark: SparkSession, path: str) -> Iterator[str]:
    """The batch stamps of the table's completed commits, newest first."""
    meta = meta_client(spark, path)
    timeline = meta.getActiveTimeline().getCommitsTimeline().filterCompletedInstants()
    instants = timeline.getReverseOrderedInstants().iterator()
    while instants.hasNext():
        instant = instants.next()
        if str(instant.getAction()) not in ("commit", "deltacommit"):
            continue  # clustering (replacecommit) carries no batch
        stamp = timeline.readCommitMetadata(instant).getMetadata(BATCH_KEY)
        if stamp:
            yield str(stamp)


def last_committed_batch(spark: SparkSession, path: str, query: str, run: str) -> int:
    """The newest batch of (query, run) a completed commit of the table holds; -1 if none."""
    if not table_exists(spark, path):
        return -1
    for stamp in batch_stamps(spark, path):
        written = json.loads(stamp)
        if written.get("query") == query and written.get("run") == run:
            return int(written["batch"])
    return -1


# -- layout -----------------------------------------------------------------------------


class LayoutError(RuntimeError):
    """A table on disk is laid out otherwise than this version declares it."""


def table_properties(spark: SparkSession, path: str) -> dict[str, str] | None:
    """The table's .hoodie/hoodie.properties, or None where no table is."""
    fs, root = _fs_path(spark, path)
    props = root.suffix("/.hoodie/hoodie.properties")
    if not fs.exists(props):
        return None
    stream = fs.open(props)
    try:
        reader = spark.sparkContext._jvm.java.util.Properties()  # type: ignore[union-attr]
        reader.load(stream)
    finally:
        stream.close()
    return {str(k): str(reader.getProperty(k)) for k in reader.stringPropertyNames()}


def layout_differences(table: HudiTable, properties: dict[str, str]) -> list[str]:
    """What of the declared layout the stored table does not have (empty: the same)."""
    stored_partitions = tuple(
        p.split(":", 1)[0]
        for p in properties.get("hoodie.table.partition.fields", "").split(",")
        if p
    )
    checks = (
        ("partitioned by", stored_partitions, table.partition_by),
        (
            "keyed by",
            tuple(properties.get("hoodie.table.recordkey.fields", "").split(",")),
            table.record_key,
        ),
        ("of type", (properties.get("hoodie.table.type", ""),), (table.table_type,)),
    )
    return [
        f"{what} {','.join(stored) or '(nothing)'}, not {','.join(declared) or '(nothing)'}"
        for what, stored, declared in checks
        if stored != declared
    ]


def check_layouts(spark: SparkSession, tables: dict[str, HudiTable]) -> None:
    """Raise LayoutError naming every table (path -> declaration) stored in another layout."""
    problems = []
    for path, table in tables.items():
        properties = table_properties(spark, path)
        if properties is None:
            continue
        differences = layout_differences(table, properties)
        if differences:
            problems.append(f"{table.name} ({path}) is " + "; ".join(differences))
    if problems:
        raise LayoutError(
            "tables written by an older layout:\n  "
            + "\n  ".join(problems)
            + "\nrewrite them with `./spark-submit.sh migrate` (docs/OPERATIONS.md, "
            '"Migrating the lake"), then start again'
        )


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
    return any(map(_COMPLETED.match, _timeline_names(spark, path)))


def _timeline_names(spark: SparkSession, path: str) -> list[str]:
    """The file names in the table's timeline folder, one listing (none where no table is)."""
    fs, root = _fs_path(spark, path)
    timeline = root.suffix("/.hoodie/timeline")
    if not fs.exists(timeline):
        return []
    return [s.getPath().getName() for s in fs.listStatus(timeline)]


_PLANNED = re.compile(r"^([0-9]{17})\.clustering\.requested$")
_REPLACED = re.compile(r"^([0-9]{17})_[0-9]{17}\.replacecommit$")


def pending_clustering(spark: SparkSession, path: str) -> list[str]:
    """The instants of the table's clustering plans not yet completed, oldest first."""
    names = _timeline_names(spark, path)
    planned = {m.group(1) for m in map(_PLANNED.match, names) if m}
    done = {m.group(1) for m in map(_REPLACED.match, names) if m}
    return sorted(planned - done)


def cluster_pending(
    spark: SparkSession, table: HudiTable, path: str, pending: list[str] | None = None
) -> list[str]:
    """Run the clustering plans the table's writer left pending (or those of
    `pending`, as pending_clustering listed them); the instants run.

    With the table's own write options (cleaning, archiving, markers, the lock
    shared with its writer), so this client keeps what the writer keeps. A plan
    left in flight by a killed driver is rolled back and run again.
    """
    if pending is None:
        pending = pending_clustering(spark, path)
    if not pending:
        return []
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    meta = meta_client(spark, path)
    schema = jvm.org.apache.hudi.common.table.TableSchemaResolver(meta).getTableAvroSchema(False)
    client = jvm.org.apache.hudi.DataSourceUtils.createHoodieClient(
        spark.sparkContext._jsc, schema.toString(), path, table.name, write_options(table)
    )
    try:
        for instant in pending:
            client.cluster(instant, True)
    finally:
        client.close()
    return pending


# Hudi writes hoodie.properties after its folders, before any commit; while it
# rewrites the file it keeps this copy, from which it recovers.
_PROPERTIES = ("hoodie.properties", "hoodie.properties.backup")


def clear_cut_short_creation(spark: SparkSession, path: str) -> bool:
    """Remove the .hoodie of a table whose creation was cut short; True if there was one.

    Hudi makes a table's folders (.hoodie, its timeline, .temp, .aux) before it
    writes hoodie.properties; a driver killed in between leaves a .hoodie that
    every later write of the table fails on ("Could not load Hoodie
    properties"), so the driver would crash at each restart. Such a .hoodie holds
    no commit (none starts before the properties exist): the next write creates
    the table afresh. A .hoodie with a completed commit is never touched.
    """
    fs, root = _fs_path(spark, path)
    meta = root.suffix("/.hoodie")
    if not fs.exists(meta):
        return False
    if any(fs.exists(meta.suffix(f"/{name}")) for name in _PROPERTIES):
        return False
    if table_exists(spark, path):
        return False  # not a creation: Hudi's own error says what is missing
    fs.delete(meta, True)
    return True


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


class StreamRange(NamedTuple):
    """The commits a micro-batch of a Hudi stream covers: completed in (start, end]."""

    start: str
    end: str


def stream_range(spark: SparkSession, checkpoint: str, batch_id: int) -> StreamRange | None:
    """The completion times bounding `batch_id` of the query checkpointed at `checkpoint`
    (its one source a Hudi table), from Spark's offset log; None if it cannot be read.

    Spark writes a batch's end offsets (`offsets/<id>`) before it runs the batch; its
    start is the previous batch's end, or the source's initial offset (`sources/0/0`).
    """
    fs, root = _fs_path(spark, checkpoint)
    jvm = spark.sparkContext._jvm
    assert jvm is not None

    def offset(relative: str) -> str | None:
        file = root.suffix(f"/{relative}")
        if not fs.exists(file):
            return None
        stream = fs.open(file)
        try:
            text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        try:
            value = json.loads(str(text).strip().splitlines()[-1]).get("offsetCommitTime")
        except (ValueError, IndexError, AttributeError):
            return None
        return value if isinstance(value, str) and value.isdigit() else None

    end = offset(f"offsets/{batch_id}")
    start = offset(f"offsets/{batch_id - 1}" if batch_id > 0 else "sources/0/0")
    if end is None or start is None:
        return None
    return StreamRange(start, end)


def stream_batch(
    spark: SparkSession, path: str, span: StreamRange, columns: tuple[str, ...]
) -> DataFrame | None:
    """The rows of the commits (not clustering) completed in `span`, read straight from
    the files they wrote: only `columns` (and `_hoodie_commit_time`), by Spark's
    vectorized Parquet reader. None when that cannot be exact: a commit in the span may
    be archived, or a file it wrote is gone (the caller reads the stream's own rows).

    The stream's own rows come from Hudi's incremental relation, which reads every
    column of every row (14 for bronze_trades) through Parquet's row-by-row reader:
    in make bench-silver's backfill the job over them took about twice as long as
    over these. Each call costs the commits' metadata, a footer and a check per file:
    at a trickle (make bench-cpu) that fixed cost is most of a batch.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    meta = meta_client(spark, path)
    from_first = span.start.strip("0") == ""  # the source's initial offset
    if from_first and not meta.getArchivedTimeline().empty():
        log.info("%s: a stream from its first commit, some archived: the stream's rows", path)
        return None
    timeline = meta.getActiveTimeline().getCommitsTimeline().filterCompletedInstants()
    instants = list(timeline.getInstants())
    first = min((str(i.getCompletionTime()) for i in instants), default=None)
    if not from_first and (first is None or first > span.start):
        log.info("%s: commits after %s may be archived: the stream's rows", path, span.start)
        return None
    commit_times: list[str] = []
    files: list[str] = []
    for instant in instants:
        completed = str(instant.getCompletionTime())
        if not span.start < completed <= span.end:
            continue
        if str(instant.getAction()) not in ("commit", "deltacommit"):
            continue  # clustering rewrites rows that earlier commits brought
        commit_times.append(str(instant.requestedTime()))
        written = timeline.readCommitMetadata(instant).getFileIdAndRelativePaths()
        files.extend(f"{path}/{relative}" for relative in written.values() if relative)
    if not files:
        return None  # nothing but clustering: the stream's own (empty) rows
    fs, _ = _fs_path(spark, path)
    if not all(fs.exists(jvm.org.apache.hadoop.fs.Path(f)) for f in files):
        log.info("%s: a file of a commit in %s is gone (clustered): the stream's rows", path, span)
        return None
    return (
        spark.read.parquet(*sorted(set(files)))
        .select("_hoodie_commit_time", *columns)
        .filter(F.col("_hoodie_commit_time").isin(commit_times))
    )


def await_table(spark: SparkSession, path: str, writer: str, poll_s: float = 5.0) -> None:
    """Block until `path` has a completed commit (its writer creates it with the first)."""
    waited = 0.0
    while not table_exists(spark, path):
        if waited % 60 == 0:
            log.info("waiting for %s (%s has not written it yet)", path, writer)
        time.sleep(poll_s)
        waited += poll_s
