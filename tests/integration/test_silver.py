"""Silver through real Spark and Hudi: the real XRPETH aggTrades in, Binance's own candles out.

The 12,477 aggTrades of XRPETH (2019-10-11 .. 13, tests/fixtures/xrpeth/) go
into bronze_agg_trades in three commits, the silver query running once after
each: the first part, the rest, then 40 aggTrades held back from the middle
of the first part, which arrive last (late, behind the watermark). The bars
must still equal all 3,560 candles Binance served for the period, trade-less
minutes included; longer intervals must equal an independent roll-up of the
1m bars; indicators must equal TA-Lib over each whole series.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pyspark.sql import functions as F

from producer.replay.captures import read_capture
from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common import progress
from streaming_jobs.common.columns import is_in
from streaming_jobs.common.hudi import read_table, table_exists, upsert_batch
from streaming_jobs.common.settings import INTERVAL_MS, PROJECT_ROOT, Settings, load_settings
from streaming_jobs.silver import indicators as ind, job as silver_job, tables
from streaming_jobs.silver.job import start
from tests.integration.test_bronze import run_bronze
from tests.integration.test_producer import Run, finished, make_run  # noqa: F401
from tests.support import await_true, talib_reference

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "xrpeth"
AGG_TRADES = FIXTURES / "XRPETH-aggTrades-2019-10-11T000011_2019-10-13T111928.csv.gz"
CANDLES = FIXTURES / "XRP_ETH-1m.json"
ORACLE = PROJECT_ROOT / "tests" / "tools" / "indicator_oracle.py"
SYMBOL = "XRPETH"
HELD = slice(3000, 3040)  # aggTrades that arrive last


def read_agg_trades() -> list[tuple[str, ...]]:
    with gzip.open(AGG_TRADES, "rt", newline="") as f:
        return [tuple(row) for row in csv.reader(f)]


def silver_settings(lake_env: dict[str, str], root: Path, **silver: Any) -> Settings:
    conf = root / "conf"
    shutil.copytree(Path(lake_env["LAKE_CONF_DIR"]), conf, dirs_exist_ok=True)
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    pipeline["streaming"]["silver"].update(silver)
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    return load_settings(conf, {**lake_env, "STATE_DIR": str(root)})


def write_bronze(spark: Any, settings: Settings, rows: list[tuple[str, ...]]) -> None:
    """aggTrades as bronze holds them: decimals from the exchange's strings, exchange times."""
    df = spark.createDataFrame(
        rows, "a string, p string, q string, f string, l string, T string, m string, M string"
    )
    typed = df.select(
        F.lit(SYMBOL).alias("symbol"),
        F.col("a").cast("long").alias("agg_trade_id"),
        F.col("p").cast("decimal(28,8)").alias("price"),
        F.col("q").cast("decimal(28,8)").alias("qty"),
        F.col("f").cast("long").alias("first_trade_id"),
        F.col("l").cast("long").alias("last_trade_id"),
        F.timestamp_millis(F.col("T").cast("long")).alias("trade_time"),
        F.timestamp_millis(F.col("T").cast("long")).alias("event_time"),
        (F.lower("m") == "true").alias("is_buyer_maker"),
        (F.col("T").cast("long") * 1_000_000).alias("recv_ns"),
        F.current_timestamp().alias("ingest_time"),
    ).withColumn("date", F.to_date("trade_time"))
    upsert_batch(typed, bronze.AGG_TRADES, settings.table_path(bronze.AGG_TRADES.name))


def run_silver(spark: Any, settings: Settings) -> None:
    query = start(spark, settings, once=True)
    query.awaitTermination()
    assert query.exception() is None


@pytest.fixture(scope="module")
def xrpeth(spark: Any, lake_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("silver-xrpeth")
    settings = silver_settings(lake_env, root, bars_from="agg_trades", watermark="10 seconds")
    rows = read_agg_trades()
    first, rest, held = rows[:6000], rows[6000:], rows[HELD]
    first = [r for r in first if r not in held]
    for part in (first, rest, held):
        write_bronze(spark, settings, part)
        run_silver(spark, settings)
    yield settings


def silver_rows(spark: Any, settings: Settings, interval: str) -> list[Any]:
    return (
        read_table(spark, settings.table_path(tables.OHLCV.name))
        .filter(F.col("interval") == interval)
        .withColumn("open_ms", F.unix_millis("open_time"))
        .orderBy("open_ms")
        .collect()
    )


def test_every_1m_bar_equals_binances_candle(spark: Any, xrpeth: Settings) -> None:
    candles = json.loads(CANDLES.read_text())
    bars = silver_rows(spark, xrpeth, "1m")
    assert len(bars) == len(candles) == 3560
    mismatches = []
    for bar, (open_ms, *ohlcv) in zip(bars, candles, strict=True):
        ours = (bar.open_ms, bar.open, bar.high, bar.low, bar.close, bar.volume)
        theirs = (open_ms, *(Decimal(repr(x)) for x in ohlcv))
        if ours != theirs:
            mismatches.append((ours, theirs))
    assert mismatches == []
    assert sum(b.is_filled for b in bars) == 1091
    assert all(b.trade_count == 0 and b.volume == 0 for b in bars if b.is_filled)
    # aggTrades count their trades: 14,672 in all, ids gap-free.
    assert sum(b.trade_count for b in bars) == 14672


def roll_up(minutes: list[Any], interval_ms: int) -> dict[int, tuple[Any, ...]]:
    """An independent roll-up in Python: prices from the minutes that traded."""
    buckets: dict[int, list[Any]] = {}
    for m in minutes:
        buckets.setdefault(m.open_ms - m.open_ms % interval_ms, []).append(m)
    out = {}
    for first, group in buckets.items():
        real = [m for m in group if not m.is_filled] or None
        prices = real or group
        out[first] = (
            prices[0].open if real else group[-1].close,
            max(m.high for m in prices),
            min(m.low for m in prices),
            prices[-1].close,
            sum(m.volume for m in group),
            sum(m.quote_volume for m in group),
            sum(m.trade_count for m in group),
            sum(m.taker_buy_base for m in group),
            sum(m.taker_buy_quote for m in group),
            real is None,
        )
    return out


@pytest.mark.parametrize("interval", ["5m", "15m", "1h", "4h", "1d"])
def test_longer_bars_equal_the_roll_up_of_1m(spark: Any, xrpeth: Settings, interval: str) -> None:
    expected = roll_up(silver_rows(spark, xrpeth, "1m"), INTERVAL_MS[interval])
    got = {
        b.open_ms: (
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume,
            b.quote_volume,
            b.trade_count,
            b.taker_buy_base,
            b.taker_buy_quote,
            b.is_filled,
        )
        for b in silver_rows(spark, xrpeth, interval)
    }
    assert got == expected


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h", "4h", "1d"])
def test_indicators_equal_talib_over_the_whole_series(
    spark: Any, xrpeth: Settings, interval: str
) -> None:
    bars = silver_rows(spark, xrpeth, interval)
    closes = np.array([float(b.close) for b in bars])
    reference = talib_reference(closes)
    assert [b.bar_index for b in bars] == list(range(len(bars)))
    for name in ind.OUTPUTS:
        ours = np.array([math.nan if b[name] is None else b[name] for b in bars], dtype=float)
        theirs = reference[name]
        assert np.array_equal(np.isnan(ours), np.isnan(theirs)), name
        ok = ~np.isnan(theirs)
        scale = np.maximum(np.abs(theirs[ok]), np.abs(closes[ok]))
        worst = float(np.max(np.abs(ours[ok] - theirs[ok]) / scale)) if ok.any() else 0.0
        assert worst <= 1e-9, (name, worst)


def test_the_oracle_agrees(spark: Any, xrpeth: Settings, tmp_path: Path) -> None:
    """The team's TA-Lib oracle, fed the same filled 1m series, finds no difference."""
    bars = silver_rows(spark, xrpeth, "1m")
    with (tmp_path / "bars.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["symbol", "open_time", "close"])
        w.writerows((SYMBOL, b.open_ms, b.close) for b in bars)
    with (tmp_path / "ours.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["symbol", "open_time", *ind.OUTPUTS])
        w.writerows(
            (SYMBOL, b.open_ms, *("" if b[c] is None else repr(b[c]) for c in ind.OUTPUTS))
            for b in bars
        )
    result = subprocess.run(
        [
            sys.executable,
            str(ORACLE),
            str(tmp_path / "bars.csv"),
            "--compare",
            str(tmp_path / "ours.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bars_are_final_once_a_later_trade_shows_them_complete(
    spark: Any, xrpeth: Settings
) -> None:
    """Finality from the exchange's sequence: every minute that ended before the last trade
    (no id missing below it once the held trades came) is final, the last trade's is not."""
    last_trade_ms = max(int(r[5]) for r in read_agg_trades())
    for interval, step in (("1m", 60_000), ("1h", 3_600_000)):
        bars = silver_rows(spark, xrpeth, interval)
        assert all(b.is_final == (b.open_ms + step - 1 < last_trade_ms) for b in bars), interval
        assert not bars[-1].is_final


def test_xrpeth_through_the_whole_stack(
    make_run: Callable[..., tuple[Run, Any]],  # noqa: F811 - the fixture imported above
    spark: Any,
) -> None:
    """Replay exchange -> producer -> Kafka -> bronze -> silver: the candles, exactly.

    59 hours of aggTrades play at 10,000x; the producer reads the replay's
    clock every second, so exchange times stay plausible against it.
    """
    run, replay = make_run(
        capture=read_capture(AGG_TRADES),
        speed=10_000,
        producer={"clock_sync_s": 1},
        symbols=[{"name": SYMBOL, "tier": 1, "streams": ["aggTrade"]}],
    )
    run.start()
    await_true("the recording to be played and published", finished(run, replay), 600)
    assert run.stop() == 0
    settings = silver_settings(
        {**os.environ, "LAKE_CONF_DIR": str(run.settings.conf_dir)},
        Path(str(run.settings.state_dir)),
        bars_from="agg_trades",
    )
    run_bronze(spark, settings)
    quarantined = (
        read_table(spark, settings.table_path(bronze.QUARANTINE.name))
        if table_exists(spark, settings.table_path(bronze.QUARANTINE.name))
        else None
    )
    assert quarantined is None or quarantined.count() == 0
    run_silver(spark, settings)
    candles = json.loads(CANDLES.read_text())
    bars = silver_rows(spark, settings, "1m")
    assert [(b.open_ms, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
        (open_ms, *(Decimal(repr(x)) for x in ohlcv)) for open_ms, *ohlcv in candles
    ]


def comparable(spark: Any, settings: Settings) -> list[tuple[Any, ...]]:
    """Every row of silver_ohlcv but its write times."""
    table = read_table(spark, settings.table_path(tables.OHLCV.name))
    columns = [c for c in table.columns if not c.startswith("_hoodie") and "updated" not in c]
    return sorted(tuple(r) for r in table.select(*columns).collect())


def test_sigkill_mid_batch_then_restart_gives_the_uninterrupted_output(
    spark: Any, lake_env: dict[str, str], xrpeth: Settings, tmp_path: Path
) -> None:
    """The real spark-submit, killed during a batch, restarted: the same table as one clean run."""
    settings = silver_settings(
        lake_env, tmp_path, bars_from="agg_trades", watermark="10 seconds", trigger="1 second"
    )
    env = {**lake_env, "LAKE_CONF_DIR": str(tmp_path / "conf"), "STATE_DIR": str(tmp_path)}
    rows = read_agg_trades()
    chunks = [rows[i : i + 2500] for i in range(0, len(rows), 2500)]
    write_bronze(spark, settings, chunks[0])
    log = (tmp_path / "silver.log").open("wb")
    driver = subprocess.Popen(
        [str(PROJECT_ROOT / "spark-submit.sh"), "silver"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own process group: the driver's Python outlives a killed JVM
        # (and holds the metrics port), so the whole group is killed.
        start_new_session=True,
    )

    def batches_or_fail() -> tuple[list[int], list[int]]:
        assert driver.poll() is None, (tmp_path / "silver.log").read_text()[-3000:]
        return progress.batches(settings, "silver")

    try:
        await_true("silver's first batch", lambda: bool(batches_or_fail()[1]), 300)
        write_bronze(spark, settings, chunks[1])

        def writing() -> bool:
            planned, committed = batches_or_fail()
            return planned[-1] > committed[-1]  # batch planned[-1] is being written

        await_true("silver's second batch", writing, 300)
        time.sleep(2.0)  # inside the batch
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    for chunk in chunks[2:]:
        write_bronze(spark, settings, chunk)
    restarted = subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "silver", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert progress.commits_behind(settings, "silver", "bronze_agg_trades") == 0
    assert comparable(spark, settings) == comparable(spark, xrpeth)


def test_a_batch_touching_the_whole_market_reads_its_spans(spark: Any) -> None:
    """5,000 symbols' span conditions in one filter: the right rows, no stack overflow.

    The chained OR this replaces failed with StackOverflowError at 2,000
    symbols (make bench's whole-market run).
    """
    n = 5_000
    rows = [(f"S{i:05d}USDT", i) for i in range(n)] + [("OTHERUSDT", 0)]
    df = spark.createDataFrame(rows, "symbol string, trade_id long")
    wanted = [(F.col("symbol") == f"S{i:05d}USDT") & (F.col("trade_id") == i) for i in range(n)]
    # Every other symbol's condition asks for an id it does not have.
    wanted[1::2] = [
        (F.col("symbol") == f"S{i:05d}USDT") & (F.col("trade_id") < 0) for i in range(1, n, 2)
    ]
    got = {r.trade_id for r in df.filter(silver_job.any_of(wanted)).collect()}
    assert got == set(range(0, n, 2))
    with pytest.raises(ValueError, match="at least one"):
        silver_job.any_of([])


def test_is_in_selects_the_rows_column_isin_selects(spark: Any) -> None:
    """The one-call IN predicate over the whole market's symbols, quotes and backslashes
    included, selects what Column.isin does (and plans an In filter Hudi can prune on)."""
    names = [f"S{i:04d}USDT" for i in range(2_000)] + ["O'BRIEN", "BACK\\SLASH", ""]
    rows = [(name,) for name in [*names, "OTHERUSDT", "O'BRIE", "BACK"]]
    df = spark.createDataFrame(rows, "symbol string")
    wanted = [*names[::3], "O'BRIEN", "BACK\\SLASH", ""]
    got = {r.symbol for r in df.filter(is_in("symbol", wanted)).collect()}
    assert got == {r.symbol for r in df.filter(F.col("symbol").isin(wanted)).collect()}
    assert got == set(wanted)
    assert df.filter(is_in("symbol", [])).count() == 0
