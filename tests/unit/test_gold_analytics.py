"""Gold's formulas against independent pandas/numpy computations on real bars.

The series are Binance's official BTCUSDT 1m klines of 2020-01-01..03
(tests/fixtures/klines, provenance there). Where a second series is needed
(correlations, the portfolio), it is the same archive's next day laid on
the first day's minutes: real prices, used only to exercise the formulas.
The expected values here are computed with pandas' rolling windows, not
with the code under test.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from streaming_jobs.gold import analytics as A
from tests.support import archive_rows, talib_reference

MIN = 60_000


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    rows = archive_rows()
    return pd.DataFrame(
        {
            "open_ms": [int(r[0]) for r in rows],
            **{
                name: [Decimal(r[i]) for r in rows]
                for name, i in (
                    ("open", 1),
                    ("high", 2),
                    ("low", 3),
                    ("close", 4),
                    ("volume", 5),
                    ("quote_volume", 7),
                )
            },
        }
    )


def close(expected: float, actual: float | None) -> bool:
    return actual is not None and math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)


def test_market_summary_1m_equals_pandas_rolling_windows(bars: pd.DataFrame) -> None:
    since = int(bars["open_ms"].iat[1500])
    out = A.market_summary(bars, MIN, 30, since).set_index("open_ms")
    closes = bars["close"].astype(float)
    log_ret = np.log(closes / closes.shift(1))
    expected = pd.DataFrame(
        {
            "open_ms": bars["open_ms"],
            "return_simple": closes.pct_change(),
            "log_return": log_ret,
            "realized_vol": log_ret.rolling(30).std() * math.sqrt(525_600),
            "change_24h_pct": (closes / bars["open"].astype(float).shift(1439) - 1) * 100,
            "high_24h": bars["high"].astype(float).rolling(1440).max(),
            "low_24h": bars["low"].astype(float).rolling(1440).min(),
        }
    ).set_index("open_ms")
    assert len(out) == len(bars) - 1500
    assert out.index[0] == since
    for column in ("return_simple", "log_return", "realized_vol", "change_24h_pct"):
        for t, value in out[column].items():
            assert close(expected.at[t, column], value), (column, t)
    assert (out["high_24h"].astype(float) == expected.loc[out.index, "high_24h"]).all()
    assert (out["low_24h"].astype(float) == expected.loc[out.index, "low_24h"]).all()
    assert (out["bars_24h"] == 1440).all()
    # Exact decimal sums, checked by summing each window afresh.
    for i in range(1500, len(bars), 97):
        window = bars.iloc[i - 1439 : i + 1]
        row = out.loc[int(bars["open_ms"].iat[i])]
        assert row["volume_24h"] == sum(window["volume"], Decimal(0))
        assert row["quote_volume_24h"] == sum(window["quote_volume"], Decimal(0))
        assert close(
            float(sum(window["quote_volume"], Decimal(0)) / sum(window["volume"], Decimal(0))),
            row["vwap_24h"],
        )
    assert out["null_reason"].isna().all()


def test_market_summary_1h_annualises_per_interval_and_keeps_24_bars(bars: pd.DataFrame) -> None:
    hourly = (
        bars.assign(hour=bars["open_ms"] // 3_600_000 * 3_600_000)
        .groupby("hour")
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", lambda v: sum(v, Decimal(0))),
            quote_volume=("quote_volume", lambda v: sum(v, Decimal(0))),
        )
        .reset_index()
        .rename(columns={"hour": "open_ms"})
    )
    out = A.market_summary(hourly, 3_600_000, 30, 0).set_index("open_ms")
    log_ret = np.log(hourly["close"].astype(float)).diff()
    vol = (log_ret.rolling(30).std() * math.sqrt(8_760)).set_axis(hourly["open_ms"])
    for t in hourly["open_ms"].iloc[30:]:
        assert close(vol[t], out.at[t, "realized_vol"])
    assert out["bars_24h"].max() == 24
    first = out.iloc[0]
    assert pd.isna(first["return_simple"]) and pd.isna(first["realized_vol"])
    assert (
        "no previous bar" in first["null_reason"]
        and "24 h window has 1 of 24" in first["null_reason"]
    )


def test_edge_cases_give_nulls_with_reasons_never_nan() -> None:
    flat = pd.DataFrame(
        {
            "open_ms": [i * MIN for i in range(40)],
            **{c: [Decimal("5.00000000")] * 40 for c in ("open", "high", "low", "close")},
            "volume": [Decimal(0)] * 40,
            "quote_volume": [Decimal(0)] * 40,
        }
    )
    out = A.market_summary(flat, MIN, 30, 0)
    assert out["vwap_24h"].isna().all()
    assert out["null_reason"].str.contains("no volume in 24 h").all()
    assert out["realized_vol"].iloc[-1] == 0.0
    returns = pd.Series([0.0] * 10, index=[i * MIN for i in range(10)])
    risk = A.risk(returns, 3_600_000, 0, 0.0)
    assert risk["sharpe"].isna().all()
    assert risk["null_reason"].iloc[-1] == "zero variance: no sharpe"
    assert risk["null_reason"].iloc[0] == "fewer than 2 returns"
    logs = pd.DataFrame({"A": [np.nan, 0.0, 0.0, 0.0, 0.0], "B": [np.nan, 0.1, -0.1, 0.2, 0.0]})
    logs.index = [i * MIN for i in range(5)]
    corr = A.correlations(logs, ["A", "B"], 3_600_000, 0)
    assert corr["correlation"].isna().all()
    assert list(corr["null_reason"]) == ["fewer than 3 aligned returns"] * 2 + ["zero variance"] * 2


def two_series(bars: pd.DataFrame) -> pd.DataFrame:
    """BTCUSDT's day 1 as `A`, its day 2 laid on day 1's minutes as `B` (real prices)."""
    day1, day2 = bars.iloc[:1440], bars.iloc[1440:2880]
    return pd.concat(
        [
            pd.DataFrame({"symbol": "A", "open_ms": day1["open_ms"], "close": day1["close"]}),
            pd.DataFrame(
                {"symbol": "B", "open_ms": day1["open_ms"].to_numpy(), "close": day2["close"]}
            ),
        ]
    )


def test_correlations_equal_pandas_rolling_corr(bars: pd.DataFrame) -> None:
    series = two_series(bars)
    # A hole in B: its return is missing at the hole and the minute after.
    series = series[~((series["symbol"] == "B") & (series["open_ms"] == bars["open_ms"].iat[700]))]
    _, logs = A.minute_returns(series)
    since = int(bars["open_ms"].iat[600])
    out = A.correlations(logs, ["B", "A"], 3_600_000, since).set_index("as_of_ms")
    wide = series.pivot(index="open_ms", columns="symbol", values="close").astype(float)
    wide = wide.reindex(range(wide.index.min(), wide.index.max() + MIN, MIN))
    r = np.log(wide / wide.shift(1))
    both = r.dropna()
    checked = 0
    for t in both.index:
        if t < since:
            continue
        window = both[(both.index > t - 3_600_000) & (both.index <= t)]
        row = out.loc[t + MIN]
        assert row["symbol_a"] == "A" and row["symbol_b"] == "B"
        assert row["n_obs"] == len(window)
        assert close(float(window["A"].corr(window["B"])), row["correlation"])
        checked += 1
    assert checked == len(out) > 700
    assert out.loc[int(bars["open_ms"].iat[740]) + MIN, "n_obs"] == 58  # two returns missing


def test_risk_equals_pandas_rolling_quantiles_and_drawdowns(bars: pd.DataFrame) -> None:
    simple, _ = A.minute_returns(bars.assign(symbol="BTCUSDT")[["symbol", "open_ms", "close"]])
    returns = simple["BTCUSDT"]
    since = int(bars["open_ms"].iat[100])
    out = A.risk(returns, 3_600_000, since, 0.04).set_index("as_of_ms")
    r = returns.reset_index(drop=True)
    var95 = -r.rolling(60, min_periods=2).quantile(0.05, interpolation="linear")
    var99 = -r.rolling(60, min_periods=2).quantile(0.01, interpolation="linear")

    def es(window: np.ndarray, level: float) -> float:
        q = np.quantile(window, level)
        return float(-window[window <= q].mean())

    def drawdown(window: np.ndarray) -> float:
        wealth = pd.Series(np.concatenate([[1.0], np.cumprod(1 + window)]))
        return float((1 - wealth / wealth.cummax()).max())

    mdd = r.rolling(60, min_periods=2).apply(drawdown, raw=True)
    sd = r.rolling(60, min_periods=2).std()
    sharpe = (r.rolling(60, min_periods=2).mean() * 525_600 - 0.04) / (sd * math.sqrt(525_600))
    for i in range(100, len(r), 7):
        row = out.loc[int(returns.index[i]) + MIN]
        assert row["n_obs"] == 60
        assert close(var95[i], row["var_95"]) and close(var99[i], row["var_99"])
        window = r.iloc[i - 59 : i + 1].to_numpy()
        assert close(es(window, 0.05), row["es_95"]) and close(es(window, 0.01), row["es_99"])
        assert close(mdd[i], row["max_drawdown"])
        assert close(sd[i] * math.sqrt(525_600), row["volatility"])
        assert close(sharpe[i], row["sharpe"])


def test_portfolio_returns_are_the_weighted_sum_where_all_symbols_trade(
    bars: pd.DataFrame,
) -> None:
    series = two_series(bars)
    series = series[~((series["symbol"] == "A") & (series["open_ms"] == bars["open_ms"].iat[50]))]
    simple, _ = A.minute_returns(series)
    portfolio = A.portfolio_returns(simple, {"A": 0.6, "B": 0.4})
    wide = series.pivot(index="open_ms", columns="symbol", values="close").astype(float)
    wide = wide.reindex(range(wide.index.min(), wide.index.max() + MIN, MIN))
    expected = 0.6 * wide["A"].pct_change(fill_method=None) + 0.4 * wide["B"].pct_change(
        fill_method=None
    )
    assert portfolio.isna().sum() == expected.isna().sum() == 3  # first minute, hole, after it
    both = expected.dropna().index
    assert np.allclose(portfolio[both], expected[both], rtol=1e-12, atol=0)
    assert A.portfolio_returns(simple, {"A": 0.5, "C": 0.5}).empty


def talib_crossings(closes: np.ndarray, values: dict[str, np.ndarray]) -> set[tuple[int, str, str]]:
    """(bar, signal, direction) found directly from TA-Lib's series with pandas shifts."""
    frame = pd.DataFrame({"close": closes, **values})
    prev = frame.shift(1)
    found: set[tuple[int, str, str]] = set()

    def cross(name: str, now: pd.Series, before: pd.Series, level: float) -> None:
        for i in np.flatnonzero((before <= level) & (now > level)):
            found.add((int(i), name, "up"))
        for i in np.flatnonzero((before >= level) & (now < level)):
            found.add((int(i), name, "down"))

    diff = frame["macd"] - frame["macd_signal"]
    cross("macd_cross", diff, diff.shift(1), 0.0)
    gap = frame["ema_12"] - frame["sma_20"]
    cross("ema_sma_cross", gap, gap.shift(1), 0.0)
    cross("rsi_70", frame["rsi_14"], prev["rsi_14"], 70.0)
    cross("rsi_30", frame["rsi_14"], prev["rsi_14"], 30.0)
    up = (frame["close"] > frame["bb_upper"]) & (prev["close"] <= prev["bb_upper"])
    down = (frame["close"] < frame["bb_lower"]) & (prev["close"] >= prev["bb_lower"])
    found |= {(int(i), "bb_breakout", "up") for i in np.flatnonzero(up)}
    found |= {(int(i), "bb_breakout", "down") for i in np.flatnonzero(down)}
    return found


def test_signals_equal_the_crossings_of_talib_values(bars: pd.DataFrame) -> None:
    closes = bars["close"].astype(float).to_numpy()
    values = talib_reference(closes)
    series = bars[["open_ms", "close", "volume"]].assign(**values)
    out = A.signals(series, 0, None, 4.0)
    index = {int(t): i for i, t in enumerate(bars["open_ms"])}
    ours = {(index[int(r.open_ms)], r.signal, r.direction) for r in out.itertuples()}
    expected = talib_crossings(closes, {k: values[k] for k in values if k != "macd_hist"})
    assert ours == expected
    assert {s for _, s, _ in ours} == {
        "macd_cross",
        "ema_sma_cross",
        "rsi_70",
        "rsi_30",
        "bb_breakout",
    }
    assert len(ours) > 500


def test_anomalies_are_z_scores_against_the_previous_window(bars: pd.DataFrame) -> None:
    closes = bars["close"].astype(float).to_numpy()
    series = bars[["open_ms", "close", "volume"]].assign(**talib_reference(closes))
    out = A.signals(series, 0, 60, 4.0)
    anomalies = out[out["signal"].str.startswith("anomaly")]
    volume = bars["volume"].astype(float)
    log_ret = np.log(bars["close"].astype(float)).diff()
    expected = set()
    for name, values in (("anomaly_return", log_ret), ("anomaly_volume", volume)):
        past = values.shift(1).rolling(60)
        z = (values - past.mean()) / past.std()
        for i in np.flatnonzero(z.abs() > 4.0):
            expected.add((int(bars["open_ms"].iat[i]), name, "up" if z.iat[i] > 0 else "down"))
    ours = {(int(r.open_ms), r.signal, r.direction) for r in anomalies.itertuples()}
    assert ours == expected and len(ours) > 10
    assert anomalies["z_score"].abs().min() > 4.0


@pytest.mark.parametrize("since_index", [1, 61, 1000, -2])
def test_signals_since_a_bar_are_the_whole_series_events_from_it(
    bars: pd.DataFrame, since_index: int
) -> None:
    """Gold recomputes from the first changed bar; the bars before it are only context."""
    closes = bars["close"].astype(float).to_numpy()
    series = bars[["open_ms", "close", "volume"]].assign(**talib_reference(closes))
    since_ms = int(bars["open_ms"].iat[since_index])
    whole = A.signals(series, 0, 60, 4.0)
    expected = whole[whole["open_ms"] >= since_ms].reset_index(drop=True)
    got = A.signals(series, since_ms, 60, 4.0)
    key = ["open_ms", "signal"]
    pd.testing.assert_frame_equal(
        got.sort_values(key).reset_index(drop=True),
        expected.sort_values(key).reset_index(drop=True),
    )
