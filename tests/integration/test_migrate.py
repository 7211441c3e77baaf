"""Tables of the layout before December 2026 are refused at start and rewritten by a command.

Two tables as the earlier version wrote them: bronze_trades partitioned by
symbol and date (real BTCUSDT trades of the shipped capture, parsed by
bronze), silver_ohlcv by symbol and interval (Binance's own BTCUSDT 1m
archive klines). A layer refuses to start on them, naming both and the
command; `./spark-submit.sh migrate` rewrites them into the declared layout
(silver gains its `period`), the rows compared with the originals.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, functions as F

from producer.replay.captures import read_capture
from streaming_jobs.bronze import tables as bronze, transform as tf
from streaming_jobs.common.hudi import (
    HudiTable,
    LayoutError,
    check_layouts,
    read_table,
    table_properties,
    upsert_batch,
)
from streaming_jobs.common.settings import PROJECT_ROOT, Settings
from streaming_jobs.silver import tables as silver
from tests.integration.test_bronze import CAPTURE, kafka_rows, private_settings
from tests.support import archive_rows

OLD_TRADES = HudiTable("bronze_trades", bronze.TRADES.record_key, "recv_ns", ("symbol", "date"))
OLD_BARS = HudiTable("silver_ohlcv", silver.OHLCV.record_key, "updated_ms", ("symbol", "interval"))


@pytest.fixture
def lake(services: Settings, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    settings = private_settings(tmp_path, "mg")
    env = {
        **os.environ,
        "LAKE_CONF_DIR": str(settings.conf_dir),
        "STATE_DIR": str(settings.state_dir),
    }
    return settings, env


def old_trades(spark: Any, settings: Settings) -> DataFrame:
    frames = [f for f in read_capture(CAPTURE).frames if f.stream.endswith("@trade")][:500]
    topics = {spec.name: kind for kind, spec in settings.pipeline.kafka.topics.items()}
    parsed = (
        kafka_rows(spark, settings, frames, 0)
        .transform(tf.with_envelope(topics))
        .transform(tf.parse_trades)
    )
    assert parsed.filter(F.col("reason").isNotNull()).count() == 0
    return parsed.select(
        "symbol", "date", "trade_id", "price", "qty", "trade_time", "recv_ns", *tf.LINEAGE
    )


def old_bars(spark: Any) -> DataFrame:
    rows = [(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in archive_rows()[:300]]
    return spark.createDataFrame(
        rows, "open_ms long, o string, h string, l string, c string, v string"
    ).select(
        F.lit("BTCUSDT").alias("symbol"),
        F.lit("1m").alias("interval"),
        F.timestamp_millis("open_ms").alias("open_time"),
        *[
            F.col(c).cast("decimal(28,8)").alias(n)
            for c, n in zip("ohlc", ("open", "high", "low", "close"), strict=True)
        ],
        F.col("v").cast("decimal(38,8)").alias("volume"),
        F.lit(True).alias("is_final"),
        F.col("open_ms").alias("updated_ms"),
    )


def rows(spark: Any, path: str, columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in read_table(spark, path).select(*columns).collect())


def submit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_old_layout_is_refused_then_migrated_row_for_row(
    spark: Any, lake: tuple[Settings, dict[str, str]]
) -> None:
    settings, env = lake
    trades_path = settings.table_path(bronze.TRADES.name)
    bars_path = settings.table_path(silver.OHLCV.name)
    trades = old_trades(spark, settings)
    upsert_batch(trades.filter(F.col("trade_id") % 2 == 0), OLD_TRADES, trades_path)
    upsert_batch(trades.filter(F.col("trade_id") % 2 == 1), OLD_TRADES, trades_path)
    upsert_batch(old_bars(spark), OLD_BARS, bars_path)
    trade_columns = list(trades.columns)
    bar_columns = list(old_bars(spark).columns)
    before = (rows(spark, trades_path, trade_columns), rows(spark, bars_path, bar_columns))
    assert len(before[0]) == 500 and len(before[1]) == 300

    declared = {trades_path: bronze.TRADES, bars_path: silver.OHLCV}
    with pytest.raises(LayoutError) as refused:
        check_layouts(spark, declared)
    message = str(refused.value)
    assert "bronze_trades" in message and "partitioned by symbol,date, not date" in message
    assert "silver_ohlcv" in message and "./spark-submit.sh migrate" in message

    # What an operator sees: the layer exits 78 (not restarted), the check lists both.
    started = submit(env, "bronze", "--once")
    assert started.returncode == 78, started.stdout[-2000:] + started.stderr[-2000:]
    assert "./spark-submit.sh migrate" in started.stdout + started.stderr
    check = submit(env, "migrate", "--check")
    assert check.returncode == 1, check.stderr[-2000:]
    assert {line.split(":")[0] for line in check.stdout.splitlines()} == {
        "bronze_trades",
        "silver_ohlcv",
    }

    done = submit(env, "migrate")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    check_layouts(spark, declared)  # no longer raises
    assert (rows(spark, trades_path, trade_columns), rows(spark, bars_path, bar_columns)) == before
    periods = {
        (r.interval, r.period, r.open_time.strftime("%Y-%m-%d"))
        for r in read_table(spark, bars_path).select("interval", "period", "open_time").collect()
    }
    assert {(i, p) for i, p, _ in periods} == {("1m", day) for _, _, day in periods}
    partitions = {
        r._hoodie_partition_path
        for r in read_table(spark, trades_path).select("_hoodie_partition_path").collect()
    }
    assert partitions and all(p.startswith("date=") and "/" not in p for p in partitions)
    properties = table_properties(spark, bars_path)
    assert properties is not None
    assert properties["hoodie.table.partition.fields"] == "interval,period"
    originals = [
        p
        for p in Path(settings.table_path("").removeprefix("file://")).iterdir()
        if ".pre-" in p.name
    ]
    assert sorted(p.name.split(".pre-")[0] for p in originals) == ["bronze_trades", "silver_ohlcv"]
    assert "rewritten and verified" in done.stdout

    # The layers upsert into the copy: a bar written again replaces its row. (A copy
    # whose keys were rendered another way, a timestamp as text instead of
    # microseconds, kept both rows.)
    stored = read_table(spark, bars_path)
    bar = (
        stored.orderBy("open_time")
        .limit(1)
        .select(*[c for c in stored.columns if not c.startswith("_hoodie_")])
    )
    again = bar.withColumn(
        "close", (F.col("close") + 1).cast(bar.schema["close"].dataType)
    ).withColumn("updated_ms", F.col("updated_ms") + 1)
    upsert_batch(again, silver.OHLCV, bars_path)
    after = rows(spark, bars_path, bar_columns)
    assert len(after) == 300
    changed = set(after) - set(before[1])
    assert [(r[2], r[6]) for r in changed] == [(before[1][0][2], before[1][0][6] + 1)]
