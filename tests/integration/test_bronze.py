"""Bronze through real Kafka, Spark and Hudi: a real capture in, typed rows out, exactly once.

The BTCUSDT capture of 2024-08-08 (producer/replay/captures/) is published to
private topics the way the producer does (value as recorded, key = symbol,
headers), plus bad frames. The bronze query runs with availableNow twice: the
second time over the same frames published again, which must change nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer
from pyspark.sql import functions as F

from producer.replay.captures import Capture, merge_captures, read_capture
from producer.topics import ensure_topics
from streaming_jobs.bronze import tables
from streaming_jobs.bronze.job import start
from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.hudi import read_table, table_exists
from streaming_jobs.common.s3 import S3Client
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings, stream_kind
from tests.integration.test_producer import Run, finished, make_run  # noqa: F401
from tests.support import await_true, run_to_end

CAPTURE = PROJECT_ROOT / "producer" / "replay" / "captures" / "spot_btcusdt_20240808.gz"
BAD = [
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","t":1', "trade", "not_json"),
    (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":42,'
        b'"p":"-5.00000000","q":"1.00000000","T":1723161255342,"m":true,"M":true}}',
        "trade",
        "negative_price",
    ),
    (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":43,'
        b'"p":"5.00000000","q":"1.00000000","T":1,"m":true,"M":true}}',
        "trade",
        "implausible_time",
    ),
    (b"\xff\xfe", "quarantine", "not_utf8"),
]


@pytest.fixture(scope="module")
def capture() -> Capture:
    return read_capture(CAPTURE)


def private_settings(root: Path, prefix: str) -> Settings:
    """The test conf with topics of its own (created) and its state under `root`."""
    conf = root / "conf"
    shutil.copytree(os.environ["LAKE_CONF_DIR"], conf)
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    prefix = f"{prefix}{uuid.uuid4().hex[:6]}"
    for spec in pipeline["kafka"]["topics"].values():
        spec["name"] = f"{prefix}.{spec['name']}"
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    settings = load_settings(conf, {**os.environ, "STATE_DIR": str(root / "state")})
    ensure_topics(settings)
    return settings


@pytest.fixture
def bronze_settings(services: Settings, tmp_path: Path) -> Settings:
    return private_settings(tmp_path, "br")


def publish(settings: Settings, capture: Capture) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    for frame in capture.frames:
        kind = stream_kind(frame.stream.split("@", 1)[1])
        headers = [
            ("recv_ns", str(frame.recv_ns).encode()),
            ("connection", b"g0-1"),
            ("stream", frame.stream.encode()),
            ("backfill", b"0"),
        ]
        producer.send(settings.topic(kind).name, key=b"BTCUSDT", value=frame.raw, headers=headers)
    for raw, kind, reason in BAD:
        headers = [("recv_ns", b"1723161254087896568"), ("backfill", b"0")]
        if kind == "quarantine":
            headers.append(("reason", reason.encode()))
        producer.send(settings.topic(kind).name, key=b"BTCUSDT", value=raw, headers=headers)
    producer.flush(timeout=60)
    producer.close()


def run_bronze(spark: Any, settings: Settings) -> list[str]:
    """Run every bronze lane once to the end of its topics; the lanes' run ids."""
    return run_to_end(start(spark, settings, once=True))


def test_capture_lands_typed_exactly_once(
    spark: Any, bronze_settings: Settings, capture: Capture
) -> None:
    settings = bronze_settings
    publish(settings, capture)
    run_bronze(spark, settings)

    trades_frames = [
        json.loads(f.raw)["data"] for f in capture.frames if f.stream.endswith("@trade")
    ]
    trades = read_table(spark, settings.table_path(tables.TRADES.name))
    rows = {r.trade_id: r for r in trades.select("trade_id", "price", "qty", "symbol").collect()}
    ids = sorted(rows)
    assert len(ids) == len(trades_frames) == 9757
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # gap-free
    for data in trades_frames:
        row = rows[data["t"]]
        assert (row.price, row.qty) == (Decimal(data["p"]), Decimal(data["q"]))
    assert {r.symbol for r in rows.values()} == {"BTCUSDT"}

    def count(table: str) -> int:
        return int(read_table(spark, settings.table_path(table)).count())

    book = sum(1 for f in capture.frames if f.stream.endswith("@bookTicker"))
    depth = sum(1 for f in capture.frames if f.stream.endswith("@depth@100ms"))
    assert count(tables.BOOK_TICKER.name) == book
    assert count(tables.DEPTH_UPDATES.name) == depth
    quarantine = read_table(spark, settings.table_path(tables.QUARANTINE.name))
    assert sorted((bytes(r.raw), r.reason) for r in quarantine.collect()) == sorted(
        (raw, reason) for raw, _kind, reason in BAD
    )

    # What `make status` and `make demo ONCE=1` read, without Spark.
    assert progress.bronze_lag(settings) == 0
    assert lakefiles.tables(settings) == sorted(
        [
            tables.TRADES.name,
            tables.BOOK_TICKER.name,
            tables.DEPTH_UPDATES.name,
            tables.QUARANTINE.name,
        ]
    )
    committed = lakefiles.last_commit(settings, tables.TRADES.name)
    assert committed is not None
    assert abs((dt.datetime.now(dt.UTC) - committed).total_seconds()) < 600

    # The same frames again (a producer replay): nothing changes.
    publish(settings, capture)
    run_bronze(spark, settings)
    assert count(tables.TRADES.name) == 9757
    assert count(tables.BOOK_TICKER.name) == book
    assert count(tables.QUARANTINE.name) == 2 * len(BAD)  # keyed by Kafka coordinates


def settings_for(
    base: Settings, tmp: Path, profile: str, bucket: str
) -> tuple[Settings, dict[str, str]]:
    env = {
        **os.environ,
        "LAKE_CONF_DIR": str(base.conf_dir),
        "STATE_DIR": str(tmp),
        "STORAGE": profile,
        "S3_BUCKET": bucket,
    }
    return load_settings(base.conf_dir, env), env


def snapshot(spark: Any, settings: Settings) -> dict[str, Any]:
    """What the comparison looks at: every trade row's values, counts of the rest."""
    trades = read_table(spark, settings.table_path(tables.TRADES.name))
    values = trades.select("trade_id", "price", "qty", "trade_time", "is_buyer_maker", "date")
    return {
        "trades": sorted(tuple(r) for r in values.collect()),
        **{
            t.name: read_table(spark, settings.table_path(t.name)).count()
            for t in (tables.BOOK_TICKER, tables.DEPTH_UPDATES, tables.QUARANTINE)
        },
    }


def stage_pools(spark: Any) -> dict[int, str]:
    """Stage id -> the FAIR scheduler pool it ran in, for every stage that ran."""
    sc = spark.sparkContext
    jvm = sc._jvm
    no_quantiles = sc._gateway.new_array(jvm.double, 0)
    # AppStatusStore.stageList(statuses, details, withSummaries, quantiles, taskStatus)
    stages = sc._jsc.sc().statusStore().stageList(None, False, False, no_quantiles, None)
    listed = jvm.scala.collection.JavaConverters.seqAsJavaList(stages)
    # A skipped stage (its output already computed) never enters a pool.
    ran = [s for s in listed if str(s.status()) != "SKIPPED"]
    return {int(s.stageId()): str(s.schedulingPool()) for s in ran}


def test_each_lane_runs_in_its_own_fair_pool(
    spark: Any, bronze_settings: Settings, capture: Capture
) -> None:
    """bronze_fast gets a core while a bulk batch runs (conf/fairscheduler.xml)."""
    sc = spark.sparkContext
    assert sc.getConf().get("spark.scheduler.mode") == "FAIR"
    fast = sc._jsc.sc().getPoolForName("bronze_fast").get()
    assert (fast.minShare(), fast.weight()) == (1, 4)
    before = set(stage_pools(spark))
    publish(bronze_settings, capture)
    run_bronze(spark, bronze_settings)
    pools = {pool for stage, pool in stage_pools(spark).items() if stage not in before}
    assert pools == {"bronze", "bronze_fast"}
    # The caller's thread is back in the default pool.
    assert sc.getLocalProperty("spark.scheduler.pool") is None


def with_fast_lane(settings: Settings, min_records: int, max_delay: str) -> Settings:
    """`settings` (of private_settings) with the fast lane's batching changed."""
    conf = settings.conf_dir
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    pipeline["streaming"]["bronze"].update(fast_min_records=min_records, fast_max_delay=max_delay)
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    return load_settings(conf, {**os.environ, "STATE_DIR": str(settings.state_dir)})


def publish_trades(settings: Settings, capture: Capture, first: int, count: int) -> None:
    trades = [f for f in capture.frames if f.stream.endswith("@trade")][first : first + count]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    topic = settings.topic("trade").name
    for frame in trades:
        headers = [("recv_ns", str(frame.recv_ns).encode()), ("backfill", b"0")]
        producer.send(topic, key=b"BTCUSDT", value=frame.raw, headers=headers)
    producer.flush(timeout=60)
    producer.close()


def test_a_quiet_fast_lane_commits_by_count_or_delay(
    spark: Any, bronze_settings: Settings, capture: Capture
) -> None:
    """Fewer trades than fast_min_records wait (up to fast_max_delay); as many go at once."""

    def run(settings: Settings, feed: Callable[[], None]) -> list[int]:
        """The rows of each batch of the fast lane while `feed` publishes."""
        queries = start(spark, settings)
        fast = next(q for q in queries if q.name == "bronze_fast")
        try:
            # Its first trigger has looked at the (empty) topic: what comes next counts.
            await_true(
                "the fast lane's first look at its topics",
                lambda: fast.exception() or fast.status["message"] == "Waiting for data to arrive",
                120,
            )
            assert fast.exception() is None
            feed()
            assert fast.exception() is None
            return [p["numInputRows"] for p in fast.recentProgress if p["numInputRows"]]
        finally:
            for query in queries:
                query.stop()

    def rows() -> int:
        path = settings.table_path(tables.TRADES.name)
        return read_table(spark, path).count() if table_exists(spark, path) else 0

    # A delay no test reaches: only the count starts a batch.
    settings = with_fast_lane(bronze_settings, 100, "1 hour")

    def by_count() -> None:
        publish_trades(settings, capture, 0, 60)
        time.sleep(4)  # four 1 s triggers see 60 < 100 new records
        publish_trades(settings, capture, 60, 40)
        await_true("the 100 trades in bronze", lambda: rows() == 100, 120)

    assert run(settings, by_count) == [100]  # one batch; without a minimum, [60, 40]

    # A short delay: a trickle below the count still lands, on its own.
    settings = with_fast_lane(settings, 100, "2 seconds")

    def by_delay() -> None:
        publish_trades(settings, capture, 100, 5)
        await_true("the trickle in bronze", lambda: rows() == 105, 120)

    assert run(settings, by_delay) == [5]


@pytest.mark.parametrize("profile", ["local", "minio"])
def test_sigkill_mid_batch_then_restart_changes_nothing(
    spark: Any, bronze_settings: Settings, capture: Capture, tmp_path: Path, profile: str
) -> None:
    conf = bronze_settings.conf_dir
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    pipeline["streaming"]["bronze"]["max_offsets_per_trigger"] = 15_000  # several batches
    pipeline["streaming"]["bronze"]["trigger"] = "1 second"
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    bucket = f"kill-{uuid.uuid4().hex[:8]}"
    reference, _ = settings_for(bronze_settings, tmp_path / "ref", profile, f"{bucket}-ref")
    subject, env = settings_for(bronze_settings, tmp_path / "subject", profile, bucket)
    if profile == "minio":
        s3 = S3Client(subject.s3_endpoint, subject.s3_credentials())
        s3.ensure_bucket(f"{bucket}-ref")
        # The subject's bucket is made by the driver itself (found by the chaos
        # suite: a lake configured after MinIO started had none, and every
        # batch failed until MinIO was restarted).
        assert not s3.bucket_exists(bucket)
    assert reference.table_path("x") != subject.table_path("x")
    publish(subject, capture)

    # The subject: the real spark-submit, killed while a batch is being written.
    log = (tmp_path / "bronze.log").open("wb")
    driver = subprocess.Popen(
        [str(PROJECT_ROOT / "spark-submit.sh"), "bronze"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own process group: the driver's Python outlives a killed JVM
        # (and holds the metrics port), so the whole group is killed.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            planned, committed = progress.batches(subject, "bronze")
            if planned and committed and planned[-1] > committed[-1]:
                break  # batch planned[-1] is being written
            assert driver.poll() is None, (tmp_path / "bronze.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "bronze never reached a second batch"
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the batch: its Hudi commits are under way
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    restarted = subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "bronze", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert progress.bronze_lag(subject) == 0

    # The reference: the same records, one uninterrupted run, its own tables.
    run_bronze(spark, reference)
    expected = snapshot(spark, reference)
    assert len(expected["trades"]) == 9757
    assert snapshot(spark, subject) == expected


FULL_RECORDING = [
    PROJECT_ROOT / "producer" / "replay" / "captures" / f"spot_{s}_{d}.gz"
    for s in ("btcusdt", "ethusdt")
    for d in ("20240808", "20240809")
]
INJECTED = [
    (b'{"stream":"btcusdt@trade","data":{"e":"trade"', "not_json"),
    (b'{"stream":"ethusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1}}', "symbol_mismatch"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":"x"}}', "bad_id_t"),
]


def test_the_whole_recording_through_producer_and_bronze(
    make_run: Callable[..., tuple[Run, Any]],  # noqa: F811 - the fixture imported above
    spark: Any,
) -> None:
    recording = merge_captures(FULL_RECORDING)
    run, replay = make_run(
        capture=recording,
        symbols=[{"name": "BTCUSDT", "tier": 1}, {"name": "ETHUSDT", "tier": 1}],
        exchange={"start_on_connect": False},
    )
    run.start()
    await_true("a live connection", lambda: run.health()["live"], 60)
    for raw, _reason in INJECTED:
        replay.control("inject", frame_hex=raw.hex())
    replay.control("start")
    await_true("the recording to be played and published", finished(run, replay), 600)
    assert run.stop() == 0
    run_bronze(spark, run.settings)

    trades = read_table(spark, run.settings.table_path(tables.TRADES.name))
    by_symbol = {
        r.symbol: (r.n, r.first, r.last)
        for r in trades.groupBy("symbol")
        .agg(
            F.count("*").alias("n"),
            F.min("trade_id").alias("first"),
            F.max("trade_id").alias("last"),
        )
        .collect()
    }
    assert {s: n for s, (n, _f, _l) in by_symbol.items()} == {"BTCUSDT": 19_904, "ETHUSDT": 14_515}
    assert all(last - first + 1 == n for n, first, last in by_symbol.values())  # gap-free
    frames = {
        (f.stream.split("@")[0].upper(), json.loads(f.raw)["data"]["t"]): json.loads(f.raw)["data"]
        for f in recording.frames
        if f.stream.endswith("@trade")
    }
    for r in trades.select("symbol", "trade_id", "price", "qty").collect():
        data = frames[(r.symbol, r.trade_id)]
        assert (r.price, r.qty) == (Decimal(data["p"]), Decimal(data["q"]))
    quarantine = read_table(spark, run.settings.table_path(tables.QUARANTINE.name)).collect()
    assert sorted((bytes(r.raw), r.reason) for r in quarantine) == sorted(INJECTED)


KAFKA_ROWS = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
    "timestampType int, headers array<struct<key:string,value:binary>>"
)


def kafka_rows(spark: Any, settings: Settings, frames: list[Any], first_offset: int) -> Any:
    """Trade frames as the Kafka source hands them to a batch (one partition, offsets on)."""
    topic = settings.topic("trade").name
    rows = [
        (
            b"BTCUSDT",
            frame.raw,
            topic,
            0,
            first_offset + i,
            dt.datetime(2024, 8, 9),
            0,
            [("recv_ns", str(frame.recv_ns).encode()), ("stream", frame.stream.encode())],
        )
        for i, frame in enumerate(frames)
    ]
    return spark.createDataFrame(rows, KAFKA_ROWS)


def test_replays_republished_trades_and_backfilled_gaps_land_once(
    spark: Any, bronze_settings: Settings, capture: Capture
) -> None:
    """The insert path's exactly-once: the batch stamp, the sequence guard, in-batch repeats."""
    from streaming_jobs.bronze.job import BronzeBatch, lanes

    settings = bronze_settings
    trades = [f for f in capture.frames if f.stream.endswith("@trade")][:300]
    ids = [json.loads(f.raw)["data"]["t"] for f in trades]
    lane = next(lane for lane in lanes(settings) if lane.query == "bronze_fast")
    batch = BronzeBatch(settings, lane)
    path = settings.table_path(tables.TRADES.name)
    sc = spark.sparkContext
    sc.setLocalProperty("sql.streaming.queryId", str(uuid.uuid4()))

    def stored() -> list[int]:
        return sorted(r.trade_id for r in read_table(spark, path).select("trade_id").collect())

    try:
        first = trades[:100] + trades[150:200]  # ids 100..149 missing: a gap
        batch(kafka_rows(spark, settings, first, 0), 0)
        assert stored() == ids[:100] + ids[150:200]
        commits = lakefiles.instants(settings, tables.TRADES.name)
        # The same batch again (a restart before the checkpoint's commit): skipped whole.
        batch(kafka_rows(spark, settings, first, 0), 0)
        assert lakefiles.instants(settings, tables.TRADES.name) == commits
        # A producer that died before saving its state publishes 180..199 again, the
        # backfill brings the gap, and 200..209 come twice within the batch.
        second = trades[180:200] + trades[100:150] + trades[200:210] + trades[200:210]
        batch(kafka_rows(spark, settings, second, 1000), 1)
        assert stored() == ids[:210]
        # A new driver (its guard read from the table) after the same republishing.
        again = BronzeBatch(settings, lane)
        again(kafka_rows(spark, settings, trades[:10] + trades[210:300], 2000), 2)
        assert stored() == ids[:300]
    finally:
        sc.setLocalProperty("sql.streaming.queryId", None)  # type: ignore[arg-type]
