"""Proof (b): a streaming query upserts Kafka records into a Hudi COPY_ON_WRITE table.

Run once per storage profile: on local disk, and on MinIO through s3a with
the streaming checkpoint on MinIO too. A key written twice ends as one row
carrying the larger ordering value, whatever the arrival order; a restart
from the checkpoint reads only new offsets; the table reads back through
`./spark-submit.sh sql` as a view.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry
from pyspark.sql import functions as F, types as T

from producer.topics import admin_client
from streaming_jobs.common import lakefiles
from streaming_jobs.common.hudi import (
    HudiTable,
    WritePath,
    clear_cut_short_creation,
    cluster_pending,
    pending_clustering,
    read_stream,
    read_table,
    stream_batch,
    stream_range,
    upsert_batch,
    write_batch,
)
from streaming_jobs.common.s3 import S3Client
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings
from streaming_jobs.common.upkeep import Upkeep

PROOF_SCHEMA = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("trade_id", T.LongType()),
        T.StructField("price", T.DecimalType(18, 8)),
        T.StructField("version", T.LongType()),
        T.StructField("day", T.StringType()),
    ]
)

# bronze's immutable write path (bronze/tables.py), clustered every 3 commits.
IMMUTABLE = WritePath(
    operation="bulk_insert",
    files_per_commit=1,
    small_file_mb=0,
    cluster_every=3,
    cluster_small_file_mb=8,
    sort_by=("symbol", "trade_id"),
)


def produce(settings: Settings, topic: str, records: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    for record in records:
        producer.send(topic, key=record["symbol"].encode(), value=json.dumps(record).encode())
    producer.flush(timeout=30)
    producer.close()


def upsert_once(spark: Any, settings: Settings, topic: str, table: HudiTable, name: str) -> int:
    """One availableNow run of Kafka -> parse -> foreachBatch upsert; returns rows read."""
    seen: list[int] = []

    def write(batch: Any, batch_id: int) -> None:
        seen.append(batch.count())
        upsert_batch(batch, table, settings.table_path(name))

    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .select(F.from_json(F.col("value").cast("string"), PROOF_SCHEMA).alias("r"))
        .select("r.*")
        .writeStream.foreachBatch(write)
        .option("checkpointLocation", settings.checkpoint_path(name))
        .trigger(availableNow=True)
        .start()
    )
    try:
        assert query.awaitTermination(240), "the availableNow query did not finish in 240 s"
        assert query.exception() is None
    finally:
        query.stop()
    return sum(seen)


@pytest.mark.parametrize("profile", ["local", "minio"])
def test_streaming_upsert_into_hudi(services: Settings, spark: Any, profile: str) -> None:
    settings = load_settings(environ={**os.environ, "STORAGE": profile})
    suffix = uuid.uuid4().hex[:8]
    name, topic = f"proof_{profile}_{suffix}", f"proof.hudi.{suffix}"
    table = HudiTable(name, ("symbol", "trade_id"), "version", ("symbol", "day"))
    admin = admin_client(settings)
    admin.create_topics([NewTopic(topic, 2, 1)], wait_for_metadata=True)
    admin.close()

    def rec(symbol: str, trade_id: int, price: str, version: int) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "trade_id": trade_id,
            "price": price,
            "version": version,
            "day": "2024-08-08",
        }

    # Same key twice in one batch: the larger version wins inside the batch.
    produce(
        settings,
        topic,
        [
            rec("BTCUSDT", 1, "61000.10000000", 1),
            rec("BTCUSDT", 1, "61000.20000000", 2),
            rec("ETHUSDT", 7, "2500.00000001", 1),
        ],
    )
    assert upsert_once(spark, settings, topic, table, name) == 3
    # Across batches: a newer version replaces, an older one (late replay) loses.
    produce(
        settings,
        topic,
        [
            rec("BTCUSDT", 1, "61000.30000000", 3),
            rec("ETHUSDT", 7, "1.00000000", 0),
            rec("BTCUSDT", 2, "61001.00000000", 1),
        ],
    )
    assert upsert_once(spark, settings, topic, table, name) == 3  # only the new offsets

    rows = read_table(spark, settings.table_path(name)).orderBy("symbol", "trade_id").collect()
    assert [(r.symbol, r.trade_id, str(r.price), r.version) for r in rows] == [
        ("BTCUSDT", 1, "61000.30000000", 3),
        ("BTCUSDT", 2, "61001.00000000", 1),
        ("ETHUSDT", 7, "2500.00000001", 1),
    ]
    assert {r._hoodie_partition_path for r in rows} == {
        "symbol=BTCUSDT/day=2024-08-08",
        "symbol=ETHUSDT/day=2024-08-08",
    }

    if profile == "minio":
        client = S3Client(settings.s3_endpoint, settings.s3_credentials())
        bucket = settings.pipeline.storage.s3_bucket
        assert any("/.hoodie/" in k for k in client.list_keys(bucket, f"tables/{name}/"))
        assert any("/offsets/" in k for k in client.list_keys(bucket, f"checkpoints/{name}/"))
    else:
        assert settings.table_path(name).startswith(settings.state_dir.as_uri())

    # The generic way into the lake: the table is a view under its own name.
    result = subprocess.run(
        [
            str(PROJECT_ROOT / "spark-submit.sh"),
            "sql",
            f"SELECT symbol, trade_id, price FROM {name} ORDER BY symbol, trade_id",
        ],
        env={**os.environ, "STORAGE": profile},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "symbol,trade_id,price",
        "BTCUSDT,1,61000.30000000",
        "BTCUSDT,2,61001.00000000",
        "ETHUSDT,7,2500.00000001",
    ]


def test_s3_keys_with_spaces_and_equals_signs(services: Settings) -> None:
    """Hive-style partitions like `window=1 hour` (gold_correlation) through our S3 client."""
    client = S3Client(services.s3_endpoint, services.s3_credentials())
    bucket = f"keys-{uuid.uuid4().hex[:8]}"
    assert client.ensure_bucket(bucket)
    key = "tables/t/window=1 hour/a+b%c.parquet"
    status, _body = client._request("PUT", f"/{bucket}/{key}")
    assert status == 200
    assert client.list_keys(bucket, "tables/t/window=1 hour/") == [key]
    assert client.get(bucket, key) == b""
    assert client.list_keys(f"{bucket}-none") == []  # no bucket yet: nothing there


@pytest.mark.parametrize("profile", ["local", "minio"])
def test_a_creation_cut_short_is_cleared_and_the_table_made_afresh(
    services: Settings, spark: Any, profile: str
) -> None:
    """A driver killed between Hudi's first folders and hoodie.properties must not crash-loop.

    Seen in CI's chaos round on MinIO: gold was killed while gold_quality created
    gold_data_quality, and every restart then failed on the properties file.
    """
    settings = load_settings(environ={**os.environ, "STORAGE": profile})
    name = f"cut_short_{profile}_{uuid.uuid4().hex[:8]}"
    path = settings.table_path(name)
    table = HudiTable(name, ("symbol", "trade_id"), "version", ("day",))
    rows = spark.createDataFrame(
        [("BTCUSDT", 1, Decimal("61000.10000000"), 1, "2024-08-08")], PROOF_SCHEMA
    )
    jvm = spark.sparkContext._jvm
    root = jvm.org.apache.hadoop.fs.Path(path)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    for folder in (".hoodie/timeline", ".hoodie/.temp", ".hoodie/.aux/.bootstrap/.partitions"):
        fs.mkdirs(root.suffix(f"/{folder}"))  # what Hudi makes before hoodie.properties
    with pytest.raises(Exception, match="Could not load Hoodie properties"):
        write_batch(rows, table, path)  # the trap itself, so the test proves the repair

    assert clear_cut_short_creation(spark, path)
    write_batch(rows, table, path)
    assert [(r.symbol, r.trade_id) for r in read_table(spark, path).collect()] == [("BTCUSDT", 1)]
    assert not clear_cut_short_creation(spark, path), "a table with a commit is never cleared"
    assert read_table(spark, path).count() == 1


@pytest.mark.parametrize("profile", ["local", "minio"])
def test_a_stream_batch_is_the_rows_hudis_stream_gives(
    services: Settings, spark: Any, profile: str
) -> None:
    """Silver reads a batch's bronze rows straight from the files of its commits
    (hudi.stream_batch): exactly the rows Hudi's own stream source gives the batch,
    across batches of several commits, one of them a clustering that rewrote them."""
    settings = load_settings(environ={**os.environ, "STORAGE": profile})
    name = f"stream_batch_{profile}_{uuid.uuid4().hex[:8]}"
    path, checkpoint = settings.table_path(name), settings.checkpoint_path(name)
    table = HudiTable(name, ("symbol", "trade_id"), "version", ("day",), IMMUTABLE)
    batches: list[tuple[list[tuple[str, int]], list[tuple[str, int]] | None]] = []

    def commit(first: int, count: int, day: str = "2024-08-08") -> None:
        rows = [
            (symbol, i, Decimal(f"{i}.5"), 1, day)
            for i in range(first, first + count)
            for symbol in ("BTCUSDT", "ETHUSDT")
        ]
        write_batch(spark.createDataFrame(rows, PROOF_SCHEMA), table, path)

    def keys(df: Any) -> list[tuple[str, int]]:
        return sorted((r.symbol, r.trade_id) for r in df.select("symbol", "trade_id").collect())

    def each(df: Any, batch_id: int) -> None:
        span = stream_range(spark, checkpoint, batch_id)
        assert span is not None, f"batch {batch_id}: no offsets read from {checkpoint}"
        mine = stream_batch(spark, path, span, ("symbol", "trade_id", "price"))
        batches.append((keys(df), None if mine is None else keys(mine)))

    def drain() -> None:
        query = (
            read_stream(spark, path)
            .writeStream.foreachBatch(each)
            .option("checkpointLocation", checkpoint)
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
        assert query.exception() is None

    commit(0, 5)
    commit(5, 5, day="2024-08-09")
    drain()
    for first in (10, 15, 20, 25):  # the third commit of the table plans a clustering
        commit(first, 5)
    assert cluster_pending(spark, table, path)  # as the layer's upkeep runs it
    drain()
    actions = {s.getPath().getName().rsplit(".", 1)[-1] for s in _timeline(spark, path)}
    assert "replacecommit" in actions, actions
    assert len(batches) == 2
    for theirs, mine in batches:
        assert mine is not None, "read from the commits' files, not the stream's"
        assert mine == theirs
    assert [len(theirs) for theirs, _ in batches] == [20, 40]


def _timeline(spark: Any, path: str) -> list[Any]:
    jvm = spark.sparkContext._jvm
    root = jvm.org.apache.hadoop.fs.Path(path + "/.hoodie/timeline")
    return list(root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listStatus(root))


def test_clustering_runs_apart_from_the_writer_and_loses_nothing(spark: Any) -> None:
    """The writer only plans the clustering (its commit returns without rewriting
    anything); the plan runs apart (common/upkeep.py) while the writer goes on
    committing beside it. Every row is there once, before, during and after; the
    packed files are gone from the table's current files, the new ones are not;
    hudi-rs reads the table with the plan pending as Spark does. A plan that
    cannot run is counted and logged, and the upkeep goes on."""
    name = f"clustered_{uuid.uuid4().hex[:8]}"
    settings = load_settings(environ={**os.environ, "STORAGE": "local"})
    path = settings.table_path(name)
    table = HudiTable(name, ("symbol", "trade_id"), "version", ("day",), IMMUTABLE)

    def commit(first: int) -> None:
        rows = [
            (symbol, i, Decimal(f"{i}.5"), 1, "2024-08-08")
            for i in range(first, first + 5)
            for symbol in ("BTCUSDT", "ETHUSDT")
        ]
        write_batch(spark.createDataFrame(rows, PROOF_SCHEMA), table, path)

    def keys() -> list[tuple[str, int]]:
        rows = read_table(spark, path).select("symbol", "trade_id").collect()
        return sorted((r.symbol, r.trade_id) for r in rows)

    def expected(upto: int) -> list[tuple[str, int]]:
        return sorted((s, i) for i in range(upto) for s in ("BTCUSDT", "ETHUSDT"))

    for first in (0, 5, 10):
        commit(first)
    planned = pending_clustering(spark, path)
    assert len(planned) == 1, planned  # planned by the third commit, not run
    files_before = set(lakefiles.current_files(settings, name))
    assert len(files_before) == 3
    assert keys() == expected(15)
    by_hudi_rs = lakefiles.latest_rows(settings, name, columns=["symbol", "trade_id"])
    assert sorted((r["symbol"], r["trade_id"]) for r in by_hudi_rs) == expected(15)

    ran: list[list[str]] = []
    apart = threading.Thread(target=lambda: ran.append(cluster_pending(spark, table, path)))
    apart.start()
    for first in (15, 20):  # the writer goes on while the plan runs
        commit(first)
    apart.join(timeout=300)
    assert not apart.is_alive()
    assert ran == [planned]
    assert pending_clustering(spark, path) == []
    assert keys() == expected(25)
    files_after = set(lakefiles.current_files(settings, name))
    assert not files_before & files_after  # the three packed into one
    assert len(files_after) == 3  # that one, and the two written beside the run

    # A plan that cannot be read: the run fails, is counted, and the upkeep goes on.
    broken = dataclasses.replace(table, name=f"{name}_broken")
    for first in (0, 5, 10):
        rows = [("BTCUSDT", i, Decimal("1.5"), 1, "2024-08-08") for i in range(first, first + 5)]
        write_batch(
            spark.createDataFrame(rows, PROOF_SCHEMA), broken, settings.table_path(broken.name)
        )
    (plan,) = pending_clustering(spark, settings.table_path(broken.name))
    timeline = Path(settings.table_path(broken.name).removeprefix("file://"), ".hoodie/timeline")
    (timeline / f"{plan}.clustering.requested").write_bytes(b"not a plan")
    registry = CollectorRegistry()
    upkeep = Upkeep(spark, settings, "test", [table, broken], registry)
    assert upkeep.run_once() == 0
    assert (
        registry.get_sample_value(
            "lakehouse_clustering_failures_total", {"layer": "test", "table": broken.name}
        )
        == 1
    )
    running = {"layer": "test", "table": broken.name}
    assert registry.get_sample_value("lakehouse_clustering_running", running) == 0
    commit(25)  # the third commit since the last clustering plans the next one
    commit(30)
    commit(35)
    assert upkeep.run_once() == 1
    assert (
        registry.get_sample_value(
            "lakehouse_clustering_runs_total", {"layer": "test", "table": name}
        )
        == 1
    )
    assert keys() == expected(40)
