"""Silver's pure parts on real data: indicators against TA-Lib, bars against Binance's own.

- Indicators: the BTCUSDT 1m closes of 2020-01-01..03 (official archive,
  tests/fixtures/klines/), computed whole and continued from stored state.
- Bars: the XRPETH aggTrades and candles (tests/fixtures/xrpeth/), the
  archive's 1m klines rolled up, and the kline pushes of a cryptofeed
  capture against the aggTrades received before them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from producer.replay.captures import read_capture
from streaming_jobs.common.settings import INTERVAL_MS, PROJECT_ROOT
from streaming_jobs.silver import bars as B, indicators as ind, series
from tests.support import archive_rows, talib_reference

CRYPTOFEED = PROJECT_ROOT / "producer" / "replay" / "captures" / "BINANCE.ws.1.0.gz"


@pytest.fixture(scope="module")
def closes() -> np.ndarray:
    return np.array([float(r[4]) for r in archive_rows()])


def worst_relative(ours: np.ndarray, theirs: np.ndarray, scale: np.ndarray) -> float:
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    if not ok.any():
        return 0.0
    return float(np.max(np.abs(ours[ok] - theirs[ok]) / np.maximum(np.abs(theirs[ok]), scale[ok])))


def test_indicators_equal_talib_over_three_archive_days(closes: np.ndarray) -> None:
    ours = ind.compute(closes)
    for name, theirs in talib_reference(closes).items():
        assert worst_relative(ours[name], theirs, np.abs(closes)) <= 1e-9, name
    assert list(ours["bar_index"]) == list(range(len(closes)))


def _state(full: dict[str, np.ndarray], closes: np.ndarray, i: int) -> ind.State:
    return ind.State(
        bar_index=int(full["bar_index"][i]),
        close=float(closes[i]),
        ema_12=float(full["ema_12"][i]),
        ema_26=float(full["ema_26"][i]),
        macd_fast_ema=float(full["macd_fast_ema"][i]),
        macd_signal=float(full["macd_signal"][i]),
        rsi_avg_gain=float(full["rsi_avg_gain"][i]),
        rsi_avg_loss=float(full["rsi_avg_loss"][i]),
    )


@pytest.mark.parametrize("cut", [ind.WARM + 1, 100, 1440, 4000])
def test_continuing_from_stored_state_is_bit_identical(closes: np.ndarray, cut: int) -> None:
    full = ind.compute(closes)
    rest = ind.compute(closes[cut:], _state(full, closes, cut - 1), closes[cut - 19 : cut])
    for name, values in rest.items():
        assert np.array_equal(values, full[name][cut:], equal_nan=True), name


def test_a_restart_never_reseeds_from_a_cold_state(closes: np.ndarray) -> None:
    full = ind.compute(closes)
    with pytest.raises(ValueError, match="warm state"):
        ind.compute(closes[20:], _state(full, closes, 19), closes[1:20])
    # What re-seeding would cost: EMA26 from a later first bar is off by far more than 1e-9.
    reseeded = ind.compute(closes[500:])
    assert abs(reseeded["ema_26"][100] - full["ema_26"][600]) / full["ema_26"][600] > 1e-9


def test_short_and_flat_series() -> None:
    short = ind.compute([7000.0] * 10)
    assert all(np.isnan(short[name]).all() for name in ind.OUTPUTS)
    flat = ind.compute([7000.0] * 40)
    assert flat["rsi_14"][14] == 0.0  # TA-Lib: flat prices give 0, not 50
    assert flat["bb_upper"][19] == flat["bb_lower"][19] == 7000.0
    reference = talib_reference(np.array([7000.0] * 40))
    for name in ind.OUTPUTS:
        assert np.array_equal(flat[name], reference[name], equal_nan=True), name


# --- bars (Spark) ------------------------------------------------------------------

AGG_SCHEMA = (
    "symbol string, price decimal(28,8), qty decimal(28,8), first_trade_id long, "
    "last_trade_id long, trade_time timestamp, is_buyer_maker boolean"
)


def agg_frame(spark: Any, rows: list[tuple[Any, ...]]) -> Any:
    """(symbol, p, q, f, l, T ms, m) with the exchange's strings -> bronze_agg_trades' types."""
    df = spark.createDataFrame(
        rows,
        "symbol string, p string, q string, f long, l long, t long, m boolean",
    )
    return df.select(
        "symbol",
        F.col("p").cast("decimal(28,8)").alias("price"),
        F.col("q").cast("decimal(28,8)").alias("qty"),
        F.col("f").alias("first_trade_id"),
        F.col("l").alias("last_trade_id"),
        F.timestamp_millis("t").alias("trade_time"),
        F.col("m").alias("is_buyer_maker"),
    )


def test_kline_pushes_equal_the_bars_of_the_agg_trades_they_cover(spark: Any) -> None:
    """Binance's own running 1m kline vs our bar over the same aggTrades, all nine fields.

    Streams arrive independently: an aggTrade can come after the kline push
    that already counts it, so the trades are matched by id, not by order.
    """
    frames = [json.loads(f.raw)["data"] for f in read_capture(CRYPTOFEED).frames]
    checked = 0
    for push in frames:
        if push.get("e") != "kline":
            continue
        k = push["k"]
        before = [
            a
            for a in frames
            if a.get("e") == "aggTrade" and a["s"] == push["s"] and k["f"] <= a["f"] <= k["L"]
        ]
        # Checkable when the capture holds every trade of the push (none split).
        if not before or before[0]["f"] != k["f"] or before[-1]["l"] != k["L"]:
            continue
        rows = [(a["s"], a["p"], a["q"], a["f"], a["l"], a["T"], a["m"]) for a in before]
        bar = B.minute_bars(B.trade_rows(agg_frame(spark, rows), "agg_trades")).first()
        assert bar is not None
        ours = (
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.trade_count,
            bar.quote_volume,
            bar.taker_buy_base,
            bar.taker_buy_quote,
            bar.open_ms,
        )
        theirs = (
            *(Decimal(k[c]) for c in "ohlcv"),
            k["n"],
            *(Decimal(k[c]) for c in "qVQ"),
            k["t"],
        )
        assert ours == theirs
        checked += 1
    assert checked >= 1


def test_trade_less_minutes_carry_the_previous_close(spark: Any) -> None:
    # XRPETH, 2019-10-11 00:02: the last aggTrade before a trade-less minute (00:03).
    rows = [
        ("XRPETH", "0.00141438", "85.00000000", 15373536, 15373536, 1570752120583, False),
        ("XRPETH", "0.00141580", "78.00000000", 15373537, 15373537, 1570752150583, True),
        ("XRPETH", "0.00141266", "10.00000000", 15373538, 15373538, 1570752243000, True),
    ]
    real = B.minute_bars(B.trade_rows(agg_frame(spark, rows), "agg_trades")).toPandas()
    got = series.fill_minutes(real, "XRPETH", 1570752120000, 1570752240000, None)
    assert list(got["open_ms"]) == [1570752120000, 1570752180000, 1570752240000]
    filled = got.iloc[1]
    assert filled.is_filled and filled.trade_count == 0 and filled.volume == 0
    assert filled.open == filled.high == filled.low == filled.close == Decimal("0.00141580")
    assert pd.isna(filled.first_trade_id)
    assert not got.iloc[0].is_filled and not got.iloc[2].is_filled


def archive_minutes(rows: list[list[str]]) -> pd.DataFrame:
    """The archive's 1m klines as series' 1m bars (decimals from the CSV's strings)."""
    return pd.DataFrame(
        [
            (
                "BTCUSDT",
                int(r[0]),
                *(Decimal(v) for v in r[1:6]),
                Decimal(r[7]),
                int(r[8]),
                Decimal(r[9]),
                Decimal(r[10]),
                None,
                None,
                int(r[8]) == 0,
            )
            for r in rows
        ],
        columns=list(series.BAR_COLUMNS),
    )


def test_archive_1m_klines_roll_up_like_an_independent_aggregation() -> None:
    rows = archive_rows()
    minutes = archive_minutes(rows)
    assert sum(int(r[8]) for r in rows[:1440]) == 194010  # the official count of 2020-01-01
    for interval in ("5m", "15m", "1h", "4h", "1d"):
        ms = INTERVAL_MS[interval]
        buckets: dict[int, list[list[str]]] = {}
        for r in rows:
            buckets.setdefault(int(r[0]) - int(r[0]) % ms, []).append(r)
        expected = {
            start: (
                Decimal(g[0][1]),
                max(Decimal(r[2]) for r in g),
                min(Decimal(r[3]) for r in g),
                Decimal(g[-1][4]),
                sum(Decimal(r[5]) for r in g),
                sum(Decimal(r[7]) for r in g),
                sum(int(r[8]) for r in g),
            )
            for start, g in buckets.items()
        }
        got = {
            b.open_ms: (b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.trade_count)
            for b in series.roll_up(minutes, ms).itertuples()
        }
        assert got == expected, interval


INTERVALS = [(i, INTERVAL_MS[i]) for i in ("1m", "5m", "15m", "1h", "4h", "1d")]


def run_batches(minutes: pd.DataFrame, cuts: list[int], watermark_lag: int) -> pd.DataFrame:
    """Feed the 1m bars to update_symbol in batches, upserting its rows as the table would."""
    table = pd.DataFrame(columns=list(series.ROW_COLUMNS))
    for lo, hi in zip([0, *cuts], [*cuts, len(minutes)], strict=True):
        real = minutes.iloc[lo:hi]
        watermark = int(real["open_ms"].max()) + 59_999 - watermark_lag
        rows = series.update_symbol(real, table, INTERVALS, watermark)
        # The first batch's rows are the whole table (concatenating an empty
        # frame would leave the dtypes to a pandas deprecation).
        stacked = pd.concat([table, rows]) if len(table) else rows
        keyed = stacked.drop_duplicates(["interval", "open_ms"], keep="last")
        table = keyed.reset_index(drop=True)
    return table.sort_values(["interval", "open_ms"], ignore_index=True)


def test_batches_continue_the_series_exactly_as_one_pass(closes: np.ndarray) -> None:
    """Bars, indicators and state from many batches equal one batch over everything."""
    minutes = archive_minutes(archive_rows())
    whole = run_batches(minutes, [], 10_000)
    batched = run_batches(minutes, [7, 100, 1439, 1440, 1441, 2000, 4000], 10_000)
    pd.testing.assert_frame_equal(batched.drop(columns="is_final"), whole.drop(columns="is_final"))
    one_minute = whole[whole["interval"] == "1m"]
    assert len(one_minute) == len(minutes) == 4320
    # 1m indicators equal TA-Lib over the whole series.
    for name, theirs in talib_reference(closes).items():
        ours = one_minute[name].to_numpy(dtype=float)
        assert worst_relative(ours, theirs, np.abs(closes)) <= 1e-9, name
    assert len(whole[whole["interval"] == "1d"]) == 3
    # Only each interval's last bar, which the last watermark has not passed, stays provisional.
    provisional = batched[~batched["is_final"].astype(bool)]
    last = batched.groupby("interval")["open_ms"].max()
    assert sorted(zip(provisional["interval"], provisional["open_ms"], strict=True)) == sorted(
        last.items()
    )


def test_a_late_minute_rewrites_its_buckets_and_every_later_indicator() -> None:
    minutes = archive_minutes(archive_rows()[:600])
    table = run_batches(minutes, [300], 10_000)
    late = minutes.iloc[[100]].copy()
    late["close"] = late["close"] + Decimal("1.5")
    late["high"] = late[["high", "close"]].max(axis=1)
    watermark = int(minutes["open_ms"].max())
    rows = series.update_symbol(late, table, INTERVALS, watermark)
    corrected = minutes.copy()
    corrected.iloc[100] = late.iloc[0]
    expected = run_batches(corrected, [], 10_000)
    by_key = rows.set_index(["interval", "open_ms"])
    m1 = by_key.loc["1m"]
    # The late minute and every later 1m bar (their indicators) are rewritten, none before.
    assert list(m1.index) == list(minutes["open_ms"].iloc[100:])
    ref = expected.set_index(["interval", "open_ms"])
    for interval, ms in INTERVALS:
        got = by_key.loc[interval]
        want = ref.loc[interval].loc[got.index]
        pd.testing.assert_frame_equal(
            got.drop(columns="is_final"), want.drop(columns="is_final"), check_dtype=False
        )
        first_changed = int(minutes["open_ms"].iloc[100]) - int(minutes["open_ms"].iloc[100]) % ms
        assert int(got.index.min()) == first_changed, interval
