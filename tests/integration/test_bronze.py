"""Bronze through real Kafka, Spark and Hudi: a real capture in, typed rows out, exactly once.

The BTCUSDT capture of 2024-08-08 (producer/replay/captures/) is published to
private topics the way the producer does (value as recorded, key = symbol,
headers), plus bad frames. The bronze query runs with availableNow twice: the
second time over the same frames published again, which must change nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from producer.replay.captures import Capture, read_capture
from producer.topics import ensure_topics
from streaming_jobs.bronze import tables
from streaming_jobs.bronze.job import start
from streaming_jobs.common import progress
from streaming_jobs.common.hudi import read_table
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings, stream_kind

CAPTURE = PROJECT_ROOT / "producer" / "replay" / "captures" / "spot_btcusdt_20240808.gz"
BAD = [
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","t":1', "trade", "not_json"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":42,'
     b'"p":"-5.00000000","q":"1.00000000","T":1723161255342,"m":true,"M":true}}', "trade",
     "negative_price"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":43,'
     b'"p":"5.00000000","q":"1.00000000","T":1,"m":true,"M":true}}', "trade", "implausible_time"),
    (b"\xff\xfe", "quarantine", "not_utf8"),
]  # fmt: skip


@pytest.fixture(scope="module")
def capture() -> Capture:
    return read_capture(CAPTURE)


@pytest.fixture
def bronze_settings(services: Settings, tmp_path: Path) -> Settings:
    conf = tmp_path / "conf"
    shutil.copytree(os.environ["LAKE_CONF_DIR"], conf)
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    prefix = f"br{uuid.uuid4().hex[:6]}"
    for spec in pipeline["kafka"]["topics"].values():
        spec["name"] = f"{prefix}.{spec['name']}"
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    settings = load_settings(conf, {**os.environ, "STATE_DIR": str(tmp_path / "state")})
    ensure_topics(settings)
    return settings


def publish(settings: Settings, capture: Capture) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    for frame in capture.frames:
        kind = stream_kind(frame.stream.split("@", 1)[1])
        headers = [("recv_ns", str(frame.recv_ns).encode()), ("connection", b"g0-1"),
                   ("stream", frame.stream.encode()), ("backfill", b"0")]  # fmt: skip
        producer.send(settings.topic(kind).name, key=b"BTCUSDT", value=frame.raw, headers=headers)
    for raw, kind, reason in BAD:
        headers = [("recv_ns", b"1723161254087896568"), ("backfill", b"0")]
        if kind == "quarantine":
            headers.append(("reason", reason.encode()))
        producer.send(settings.topic(kind).name, key=b"BTCUSDT", value=raw, headers=headers)
    producer.flush(timeout=60)
    producer.close()


def run_bronze(spark: Any, settings: Settings) -> None:
    query: Any = start(spark, settings, once=True)
    try:
        assert query.awaitTermination(600), "bronze did not finish in 600 s"
        assert query.exception() is None
    finally:
        query.stop()


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
    assert progress.lag(settings, "bronze") == 0
    assert progress.tables(settings) == sorted(
        [
            tables.TRADES.name,
            tables.BOOK_TICKER.name,
            tables.DEPTH_UPDATES.name,
            tables.QUARANTINE.name,
        ]
    )
    committed = progress.last_commit(settings, tables.TRADES.name)
    assert committed is not None
    assert abs((dt.datetime.now(dt.UTC) - committed).total_seconds()) < 600

    # The same frames again (a producer replay): nothing changes.
    publish(settings, capture)
    run_bronze(spark, settings)
    assert count(tables.TRADES.name) == 9757
    assert count(tables.BOOK_TICKER.name) == book
    assert count(tables.QUARANTINE.name) == 2 * len(BAD)  # keyed by Kafka coordinates
