"""Gold through real Spark and Hudi, checked against independent pandas/numpy and TA-Lib.

Two real inputs:
- Binance's official BTCUSDT 1m klines of 2020-01-01..03 (tests/fixtures/klines)
  written as silver bars (indicators by silver's own code, equal to TA-Lib)
  in two commits, the gold query running once after each (a restart
  mid-stream); a reference lake gets them in one commit and one run.
- The BTCUSDT and ETHUSDT captures of 2024-08-08/09 (producer/replay/captures)
  through Kafka, bronze and silver, for correlations, the portfolio and
  data quality.
The expected values are computed here from silver's rows, not by gold's code.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, Window, functions as F

from producer.replay.captures import merge_captures
from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common import lakefiles
from streaming_jobs.common.hudi import read_table, upsert_batch
from streaming_jobs.common.settings import PROJECT_ROOT, Settings
from streaming_jobs.gold import tables
from streaming_jobs.gold.job import QualityBatch, start
from streaming_jobs.silver import indicators as ind, tables as silver
from tests.integration.test_bronze import private_settings, publish, run_bronze
from tests.integration.test_silver import run_silver, silver_settings
from tests.support import archive_rows, run_to_end, talib_reference
from tests.unit.test_gold_analytics import talib_crossings

# About 11 minutes across midnight: 2024-08-08 23:54 .. 2024-08-09 00:05 UTC.
CAPTURES = [
    PROJECT_ROOT / "producer" / "replay" / "captures" / f"spot_{s}_{d}.gz"
    for s in ("btcusdt", "ethusdt")
    for d in ("20240808", "20240809")
]
MIN = 60_000
GOLD = (tables.MARKET_SUMMARY, tables.CORRELATION, tables.RISK, tables.SIGNALS)


def archive_bars() -> pd.DataFrame:
    rows = archive_rows()
    columns = {"open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "quote_volume": 7}
    return pd.DataFrame(
        {
            "open_ms": [int(r[0]) for r in rows],
            **{name: [r[i] for r in rows] for name, i in columns.items()},
        }
    )


def write_silver(
    spark: Any, settings: Settings, bars: pd.DataFrame, values: dict[str, Any]
) -> None:
    """Bars as silver holds them: final, decimals from the archive's strings, indicators."""
    frame = bars.assign(**{c: values[c] for c in ind.OUTPUTS}).astype(object)
    frame = frame.where(pd.notna(frame), None)
    df = spark.createDataFrame(frame.values.tolist(), list(frame.columns))
    upsert_batch(
        df.select(
            F.lit("BTCUSDT").alias("symbol"),
            F.lit("1m").alias("interval"),
            F.timestamp_millis("open_ms").alias("open_time"),
            F.timestamp_millis(F.col("open_ms") + MIN - 1).alias("close_time"),
            *[F.col(c).cast("decimal(28,8)").alias(c) for c in ("open", "high", "low", "close")],
            *[F.col(c).cast("decimal(38,8)").alias(c) for c in ("volume", "quote_volume")],
            (F.col("volume").cast("decimal(38,8)") == 0).alias("is_filled"),
            F.lit(True).alias("is_final"),
            *[F.col(c).cast("double") for c in ind.OUTPUTS],
            F.unix_millis(F.current_timestamp()).alias("updated_ms"),
        ).transform(silver.with_period),
        silver.OHLCV,
        settings.table_path(silver.OHLCV.name),
    )


def run_gold(spark: Any, settings: Settings) -> None:
    """Run both gold queries once to the end of silver's commits."""
    run_to_end(start(spark, settings, once=True))


def table(spark: Any, settings: Settings, name: str) -> DataFrame:
    return read_table(spark, settings.table_path(name))


def content(spark: Any, settings: Settings, name: str) -> set[tuple[Any, ...]]:
    df = table(spark, settings, name)
    columns = sorted(c for c in df.columns if not c.startswith("_hoodie") and "updated" not in c)
    return {tuple(r) for r in df.select(*columns).collect()}


@pytest.fixture(scope="module")
def archive(spark: Any, lake_env: dict[str, str], tmp_path_factory: Any) -> tuple[Settings, Any]:
    bars = archive_bars()
    values = talib_reference(bars["close"].astype(float).to_numpy())
    computed = ind.compute(bars["close"].astype(float).to_numpy())
    for c in ind.OUTPUTS:  # silver's indicators are TA-Lib's (tested in test_silver)
        assert np.allclose(computed[c], values[c], rtol=1e-9, atol=0, equal_nan=True)
    subject = silver_settings(lake_env, tmp_path_factory.mktemp("gold-archive"))
    reference = silver_settings(lake_env, tmp_path_factory.mktemp("gold-archive-ref"))
    first = {c: computed[c][:1440] for c in ind.OUTPUTS}
    rest = {c: computed[c][1440:] for c in ind.OUTPUTS}
    write_silver(spark, subject, bars.iloc[:1440], first)
    run_gold(spark, subject)  # stops: the next run resumes from its checkpoint
    write_silver(spark, subject, bars.iloc[1440:].reset_index(drop=True), rest)
    run_gold(spark, subject)
    write_silver(spark, reference, bars, computed)
    run_gold(spark, reference)
    return subject, reference


def test_restarted_gold_equals_one_uninterrupted_run(spark: Any, archive: Any) -> None:
    subject, reference = archive
    for name in GOLD:
        assert content(spark, subject, name.name) == content(spark, reference, name.name), name


def test_market_summary_equals_pandas_over_the_archive_days(spark: Any, archive: Any) -> None:
    subject, _ = archive
    bars = archive_bars()
    closes = bars["close"].astype(float)
    log_ret = np.log(closes / closes.shift(1))
    vol = log_ret.rolling(30).std() * math.sqrt(365 * 24 * 60)
    rows = (
        table(spark, subject, tables.MARKET_SUMMARY.name)
        .filter(F.col("interval") == "1m")
        .orderBy("open_time")
        .collect()
    )
    assert len(rows) == len(bars) == 4320
    volumes = [Decimal(v) for v in bars["volume"]]
    for i, row in enumerate(rows):
        if i == 0:
            assert row.log_return is None and "no previous bar" in row.null_reason
            continue
        assert math.isclose(row.log_return, log_ret[i], rel_tol=1e-12)
        if i >= 30:
            assert math.isclose(row.realized_vol, vol[i], rel_tol=1e-9)
        else:
            assert row.realized_vol is None
        first = max(0, i - 1439)
        assert row.volume_24h == sum(volumes[first : i + 1], Decimal(0))
        assert row.bars_24h == i - first + 1
        assert math.isclose(
            row.change_24h_pct, (closes[i] / float(bars["open"][first]) - 1) * 100, rel_tol=1e-12
        )


def test_signals_equal_the_crossings_of_talib_values(spark: Any, archive: Any) -> None:
    subject, _ = archive
    bars = archive_bars()
    closes = bars["close"].astype(float).to_numpy()
    values = talib_reference(closes)
    expected = {
        (int(bars["open_ms"][i]), name, direction)
        for i, name, direction in talib_crossings(
            closes, {k: v for k, v in values.items() if k != "macd_hist"}
        )
    }
    rows = crossing_rows(spark, subject)
    assert {(r.t, r.signal, r.direction) for r in rows} == expected
    assert not any(r.retracted for r in rows)
    assert len(rows) == len(expected) > 500


def test_risk_of_a_symbol_equals_pandas(spark: Any, archive: Any) -> None:
    subject, _ = archive
    bars = archive_bars()
    r = bars["close"].astype(float).pct_change()
    rows = {
        row.as_of_ms: row
        for row in table(spark, subject, tables.RISK.name)
        .filter((F.col("subject") == "BTCUSDT") & (F.col("window") == "24 hours"))
        .withColumn("as_of_ms", F.unix_millis("as_of"))
        .collect()
    }
    assert len(rows) == 4319  # every minute with a return
    for i in (1500, 2500, 4319):
        window = r.iloc[max(1, i - 1439) : i + 1].to_numpy()
        row = rows[int(bars["open_ms"][i]) + MIN]
        assert row.n_obs == len(window) == 1440
        assert math.isclose(row.var_99, -np.quantile(window, 0.01), rel_tol=1e-12)
        wealth = pd.Series(np.cumprod(np.concatenate([[1.0], 1 + window])))
        assert math.isclose(row.max_drawdown, (1 - wealth / wealth.cummax()).max(), rel_tol=1e-12)


def crossing_rows(spark: Any, settings: Settings) -> list[Any]:
    """gold_signals' crossing events (not anomalies): t (open ms), signal, direction, retracted."""
    return (
        table(spark, settings, tables.SIGNALS.name)
        .filter(~F.col("signal").startswith("anomaly"))
        .select(F.unix_millis("open_time").alias("t"), "signal", "direction", "retracted")
        .collect()
    )


def no_nan(spark: Any, settings: Settings, name: str) -> None:
    df = table(spark, settings, name)
    doubles = [f.name for f in df.schema.fields if f.dataType.typeName() == "double"]
    nans = df.select(*[F.sum(F.isnan(c).cast("int")).alias(c) for c in doubles]).first()
    assert nans is not None and not any(nans), (name, nans)


def test_no_nan_anywhere_and_reasons_for_nulls(spark: Any, archive: Any) -> None:
    subject, _ = archive
    for name in GOLD:
        no_nan(spark, subject, name.name)
    summary = table(spark, subject, tables.MARKET_SUMMARY.name)
    assert (
        summary.filter(F.col("realized_vol").isNull() & F.col("null_reason").isNull()).count() == 0
    )


# --- the captures through the whole chain ------------------------------------------


@pytest.fixture(scope="module")
def captured(spark: Any, services: Settings, tmp_path_factory: Any) -> Settings:
    settings = private_settings(tmp_path_factory.mktemp("gold-captures"), "gd")
    publish(settings, merge_captures(CAPTURES))
    run_bronze(spark, settings)
    run_silver(spark, settings)
    run_gold(spark, settings)
    return settings


def silver_1m(spark: Any, settings: Settings) -> pd.DataFrame:
    return (
        table(spark, settings, silver.OHLCV.name)
        .filter((F.col("interval") == "1m") & F.col("is_final"))
        .select(
            "symbol", F.unix_millis("open_time").alias("open_ms"), F.col("close").cast("double")
        )
        .toPandas()
        .pivot(index="open_ms", columns="symbol", values="close")
        .sort_index()
    )


def test_btc_eth_correlation_and_portfolio_equal_pandas(spark: Any, captured: Settings) -> None:
    wide = silver_1m(spark, captured)
    assert {"BTCUSDT", "ETHUSDT"} <= set(wide.columns) and len(wide) >= 9
    logs = np.log(wide / wide.shift(1))
    rows = (
        table(spark, captured, tables.CORRELATION.name)
        .filter(F.col("window") == "1 hour")
        .withColumn("as_of_ms", F.unix_millis("as_of"))
        .collect()
    )
    assert rows and all(r.symbol_a == "BTCUSDT" and r.symbol_b == "ETHUSDT" for r in rows)
    for row in rows:
        window = logs[(logs.index < row.as_of_ms) & (logs.index >= row.as_of_ms - 3_600_000)]
        both = window[["BTCUSDT", "ETHUSDT"]].dropna()
        assert row.n_obs == len(both)
        if len(both) >= 3:
            assert math.isclose(
                row.correlation, both["BTCUSDT"].corr(both["ETHUSDT"]), rel_tol=1e-9
            )
        else:
            assert row.correlation is None and row.null_reason
    simple = wide / wide.shift(1) - 1
    weights = captured.portfolio.weights
    portfolio = sum(simple[s] * w for s, w in weights.items()).dropna()
    risk = {
        r.as_of_ms: r
        for r in table(spark, captured, tables.RISK.name)
        .filter((F.col("subject") == "portfolio:core") & (F.col("window") == "1 hour"))
        .withColumn("as_of_ms", F.unix_millis("as_of"))
        .collect()
    }
    assert len(risk) == len(portfolio)
    last = int(portfolio.index[-1])
    window = portfolio[portfolio.index > last - 3_600_000].to_numpy()
    row = risk[last + MIN]
    assert row.n_obs == len(window)
    annual = 365 * 24 * 60
    sd = float(np.std(window, ddof=1))
    assert math.isclose(row.volatility, sd * math.sqrt(annual), rel_tol=1e-9)
    rf = captured.portfolio.risk_free_rate
    assert math.isclose(
        row.sharpe, (window.mean() * annual - rf) / (sd * math.sqrt(annual)), rel_tol=1e-9
    )
    assert math.isclose(row.var_95, -np.quantile(window, 0.05), rel_tol=1e-9)


def test_data_quality_counts_what_bronze_and_silver_hold(spark: Any, captured: Settings) -> None:
    trades = (
        table(spark, captured, bronze.TRADES.name)
        .groupBy("symbol", "date")
        .agg(F.count("*").alias("n"), F.min("trade_id").alias("lo"), F.max("trade_id").alias("hi"))
        .collect()
    )
    minutes = {
        (r.symbol, r.day): (r.n, r.filled)
        for r in table(spark, captured, silver.OHLCV.name)
        .filter(F.col("interval") == "1m")
        .groupBy("symbol", F.to_date("open_time").alias("day"))
        .agg(F.count("*").alias("n"), F.count(F.when(F.col("is_filled"), 1)).alias("filled"))
        .collect()
    }
    quality = {
        (r.symbol, r.day): r for r in table(spark, captured, tables.DATA_QUALITY.name).collect()
    }
    assert {(t.symbol, str(t.date)) for t in trades} == {
        (s, d) for s in ("BTCUSDT", "ETHUSDT") for d in ("2024-08-08", "2024-08-09")
    }
    for t in trades:
        row = quality[(t.symbol, t.date)]
        assert (row.trades, row.first_trade_id, row.last_trade_id) == (t.n, t.lo, t.hi)
        assert row.missing_trades == t.hi - t.lo + 1 - t.n
        assert (row.minutes, row.tradeless_minutes) == minutes[(t.symbol, t.date)]
        assert row.gaps_filled == 0
        assert row.latency_max_s is not None and row.latency_max_s >= row.latency_p99_s > 0
    # The bad frames test_bronze.publish injects, received on 2024-08-08.
    injected = {
        (r.symbol, r.reason)
        for r in table(spark, captured, bronze.QUARANTINE.name)
        .withColumn("symbol", F.coalesce("symbol", F.lit("*")))
        .collect()
    }
    assert len(injected) == 4
    reported = {
        (symbol, reason) for (symbol, _day), row in quality.items() for reason in row.quarantined
    }
    assert reported == injected
    assert sum(row.quarantined_total for row in quality.values()) == 4
    assert all(row.trades == 0 for (symbol, _day), row in quality.items() if symbol == "*")
    no_nan(spark, captured, tables.DATA_QUALITY.name)


def quality_oracle(spark: Any, settings: Settings) -> dict[tuple[str, Any], dict[str, Any]]:
    """Each (symbol, day)'s trade figures from every row of bronze at once (pandas)."""
    watermark_ms = settings.pipeline.streaming.silver.watermark_ms
    committed = lakefiles.completed_instants(settings, bronze.TRADES.name)
    rows = (
        table(spark, settings, bronze.TRADES.name)
        .select(
            "symbol",
            "date",
            "trade_id",
            "backfill",
            "recv_ns",
            "_hoodie_commit_time",
            (F.unix_millis("recv_time") - F.unix_millis("trade_time") > watermark_ms).alias("late"),
        )
        .toPandas()
    )
    # Commit completed - receipt, in whole ns first (a receipt in ns is not exact as a double).
    rows["latency_ms"] = [
        (committed[c] * 1_000_000 - ns) / 1e6 if c in committed and ns == ns else np.nan
        for c, ns in zip(rows["_hoodie_commit_time"], rows["recv_ns"], strict=True)
    ]
    out = {}
    for (symbol, day), t in rows.groupby(["symbol", "date"]):
        t = t.sort_values("trade_id")
        step = t["trade_id"].diff()
        after_backfill = t["backfill"].shift(1, fill_value=False).astype(bool)
        live = t.loc[~t["backfill"], "latency_ms"]
        out[(symbol, day)] = {
            "trades": len(t),
            "first_trade_id": int(t["trade_id"].iloc[0]),
            "last_trade_id": int(t["trade_id"].iloc[-1]),
            "gaps_open": int((step > 1).sum()),
            "missing_trades": int((step - 1).where(step > 1).sum()),
            "gaps_filled": int((t["backfill"] & (~after_backfill | (step > 1))).sum()),
            "backfilled_trades": int(t["backfill"].sum()),
            "late_trades": int(t["late"].sum()),
            "latency_max_s": live.max() / 1000,
            "latency_p99_s": np.percentile(live, 99) / 1000,
        }
    return out


def assert_quality(got: dict[str, Any], want: dict[str, Any]) -> None:
    got, want = dict(got), dict(want)
    assert got.pop("latency_max_s") == pytest.approx(want.pop("latency_max_s"), abs=1e-9)
    # Latencies are counted in buckets of three significant digits of whole ms.
    p99, exact = got.pop("latency_p99_s"), want.pop("latency_p99_s")
    assert exact - max(0.001, exact / 100) - 1e-9 <= p99 <= exact + 1e-9
    assert got == want


def test_data_quality_adds_later_commits_to_the_days_it_holds(
    spark: Any, captured: Settings, tmp_path_factory: Any
) -> None:
    """A day is counted in full once, then each later commit of bronze is added: the
    captured trades written to a fresh bronze table in three commits (the last fills
    a hole in each day of the second with backfilled trades) give, batch by batch,
    what a count of every row gives."""
    lake = private_settings(tmp_path_factory.mktemp("gold-quality"), "gq")
    trades = table(spark, captured, bronze.TRADES.name)
    trades = trades.select(*[c for c in trades.columns if not c.startswith("_hoodie")])
    day = Window.partitionBy("symbol", "date")
    rank = F.row_number().over(day.orderBy("trade_id"))
    n = F.count("*").over(day)
    hole = (rank > n / 2) & (rank <= n / 2 + n / 10)  # inside the second third
    parts = trades.select(
        *[c for c in trades.columns if c != "backfill"],
        hole.alias("backfill"),
        F.when(rank <= n / 3, 1).when(hole | (rank > 2 * n / 3), 3).otherwise(2).alias("part"),
    ).localCheckpoint()
    path = lake.table_path(bronze.TRADES.name)

    def write(part: int) -> None:
        rows = parts.filter(F.col("part") == part).drop("part").select(*trades.columns)
        upsert_batch(rows, bronze.TRADES, path)

    pairs = sorted((r.symbol, r.date) for r in trades.select("symbol", "date").distinct().collect())
    quality = QualityBatch(spark, lake)

    def size(part: int) -> int:
        return parts.filter(F.col("part") == part).count()

    write(1)
    counted = quality.count(pairs)
    want = quality_oracle(spark, lake)
    assert (counted.in_full, counted.trades_read) == (len(pairs), size(1))
    assert set(want) <= set(counted.days)
    for pair, figures in want.items():
        assert_quality(counted.days[pair], figures)
    write(2)
    counted = quality.count(pairs)
    want = quality_oracle(spark, lake)
    # Only the new commit's rows are read.
    assert (counted.in_full, counted.commits, counted.trades_read) == (0, 1, size(2))
    assert all(counted.days[p]["gaps_open"] >= 1 for p in want)  # the hole of each day
    for pair, figures in want.items():
        assert_quality(counted.days[pair], figures)
    write(3)
    counted = quality.count(pairs)
    want = quality_oracle(spark, lake)
    assert (counted.commits, counted.trades_read) == (1, size(3))
    assert all(counted.days[p]["gaps_filled"] >= 1 for p in want)
    for pair, figures in want.items():
        assert_quality(counted.days[pair], figures)
    assert QualityBatch(spark, lake).count(pairs).days == counted.days  # as a restart counts


def test_status_reads_the_latest_data_quality_rows_without_spark(
    spark: Any, captured: Settings
) -> None:
    from streaming_jobs.common import progress

    found = progress.data_quality(captured)
    assert found is not None
    day, rows = found
    assert day == "2024-08-09"  # no row today: the latest day
    expected = {
        (r.symbol, r.trades, r.tradeless_minutes)
        for r in table(spark, captured, tables.DATA_QUALITY.name)
        .filter(F.col("day") == day)
        .collect()
    }
    assert {(r["symbol"], r["trades"], r["tradeless_minutes"]) for r in rows} == expected
    assert len(expected) == 3  # BTCUSDT, ETHUSDT and frames without a symbol


def test_a_correction_retracts_the_signals_it_undoes(
    spark: Any, lake_env: dict[str, str], tmp_path: Any
) -> None:
    """A late correction of one final bar: its signals and later ones are recomputed."""
    bars = archive_bars().iloc[:1440].reset_index(drop=True)
    open_ms = bars["open_ms"]

    def crossings(values: np.ndarray) -> set[tuple[int, str, str]]:
        ref = talib_reference(values)
        found = talib_crossings(values, {k: v for k, v in ref.items() if k != "macd_hist"})
        return {(int(open_ms[i]), name, direction) for i, name, direction in found}

    closes = bars["close"].astype(float).to_numpy()
    before = crossings(closes)
    # The first bar from 700 on whose close set to the previous close undoes a signal.
    fixed = bars.copy()
    for at in range(700, 1400):
        fixed["close"] = bars["close"]
        fixed.loc[at, "close"] = bars.loc[at - 1, "close"]
        fixed_closes = fixed["close"].astype(float).to_numpy()
        after = crossings(fixed_closes)
        if before - after:
            break
    settings = silver_settings(lake_env, tmp_path)
    write_silver(spark, settings, bars, ind.compute(closes))
    run_gold(spark, settings)
    # Silver rewrites the corrected bar and every later one (their indicators change).
    later = {c: v[at:] for c, v in ind.compute(fixed_closes).items()}
    write_silver(spark, settings, fixed.iloc[at:].reset_index(drop=True), later)
    run_gold(spark, settings)

    rows = crossing_rows(spark, settings)
    live = {(r.t, r.signal, r.direction) for r in rows if not r.retracted}
    retracted = {(r.t, r.signal, r.direction) for r in rows if r.retracted}
    assert live == after
    assert retracted == before - after and retracted
