"""Gold's formulas, as pure functions of bar series (pandas in, pandas out).

Every function takes the bars of silver it needs, sorted by open time, and
returns rows for the bars (or minutes) at or after `since_ms`; earlier bars
are context only. The formulas are documented, column by column, in
docs/analytics.md; a value that cannot be computed is null (None), never
NaN, with the reason in the row's `null_reason`.

Conventions:
- log return r_t = ln(close_t / close_{t-1}); simple return R_t = close_t / close_{t-1} - 1,
  over consecutive bars of one series (silver fills trade-less bars, so a
  series has no holes);
- a year is 365 days of 24 h (crypto trades every day): an interval of
  `ms` milliseconds has 365 * 86,400,000 / ms periods per year;
- standard deviations are sample ones (ddof = 1); quantiles interpolate
  linearly between order statistics (numpy's default).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

import numpy as np
import pandas as pd

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
MINUTE_MS = 60_000
# Fewest observations a statistic is computed from.
MIN_CORRELATION_OBS = 3
MIN_RISK_OBS = 2
RISK_LEVELS = (0.95, 0.99)


def periods_per_year(interval_ms: int) -> float:
    return YEAR_MS / interval_ms


def _none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _reasons(*pairs: tuple[bool, str]) -> str | None:
    text = "; ".join(reason for failed, reason in pairs if failed)
    return text or None


# --- market summary -------------------------------------------------------------


@dataclass
class SeriesColumns:
    """One series' bars as columns, by open time: what the market summary reads.

    `cum_volume` and `cum_quote` are prefix sums, one longer than the bars:
    entry j is the exact sum of the bars before j (from wherever the sums
    started), so any window's sum is a difference of two entries. Gold keeps
    these per held series and extends them as bars come (recent.Series).
    """

    opens: list[int] = field(default_factory=list)
    open_f: list[float] = field(default_factory=list)
    close_f: list[float] = field(default_factory=list)
    high: list[Decimal] = field(default_factory=list)
    low: list[Decimal] = field(default_factory=list)
    cum_volume: list[Decimal] = field(default_factory=lambda: [Decimal(0)])
    cum_quote: list[Decimal] = field(default_factory=lambda: [Decimal(0)])

    def append(
        self, open_ms: int, open_: Decimal, high: Decimal, low: Decimal, close: Decimal,
        volume: Decimal, quote_volume: Decimal,
    ) -> None:  # fmt: skip
        self.opens.append(open_ms)
        self.open_f.append(float(open_))
        self.close_f.append(float(close))
        self.high.append(high)
        self.low.append(low)
        with localcontext(_SUMS):
            self.cum_volume.append(self.cum_volume[-1] + volume)
            self.cum_quote.append(self.cum_quote[-1] + quote_volume)

    def truncate(self, n: int) -> None:
        """Keep the first n bars."""
        for values in (self.opens, self.open_f, self.close_f, self.high, self.low):
            del values[n:]
        del self.cum_volume[n + 1 :], self.cum_quote[n + 1 :]

    def drop_first(self, n: int) -> None:
        """Forget the first n bars (the sums of the others stay differences of entries)."""
        for values in (self.opens, self.open_f, self.close_f, self.high, self.low):
            del values[:n]
        del self.cum_volume[:n], self.cum_quote[:n]


# Exact decimal sums: a decimal(38, 8) column summed needs far fewer digits.
_SUMS = Context(prec=60, traps=[Inexact, InvalidOperation])
_RATIO = Context(prec=60)


def market_summary(
    bars: pd.DataFrame, interval_ms: int, vol_window: int, since_ms: int
) -> pd.DataFrame:
    """Per bar: returns, realized volatility and the rolling 24 h figures.

    `bars`: one series, columns open_ms, open, high, low, close, volume,
    quote_volume (decimals as Decimal), sorted by open_ms.
    """
    bars = bars.sort_values("open_ms")
    columns = SeriesColumns()
    for row in bars[
        ["open_ms", "open", "high", "low", "close", "volume", "quote_volume"]
    ].itertuples(index=False, name=None):
        columns.append(int(row[0]), *row[1:])
    first = bisect.bisect_left(columns.opens, since_ms)
    rows = [
        summary_row(columns, i, interval_ms, vol_window) for i in range(first, len(columns.opens))
    ]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summary_row(bars: SeriesColumns, i: int, interval_ms: int, vol_window: int) -> tuple[Any, ...]:
    """The market summary of bar i (SUMMARY_COLUMNS' values), from the bars before it.

    Bars' open times are multiples of the interval, so the 24 h window (the
    bars opening within 24 h before this one's close) is a time range, and
    `vol_window` returns are all there when the bar vol_window before this
    one opened exactly vol_window intervals earlier.
    """
    open_ms = bars.opens[i]
    n24 = max(1, DAY_MS // interval_ms)
    first = bisect.bisect_right(bars.opens, open_ms - DAY_MS, 0, i)
    count = i - first + 1
    has_prev = i > 0 and open_ms - bars.opens[i - 1] == interval_ms
    close = bars.close_f[i]
    simple = log_return = None
    if has_prev:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.float64(close) / np.float64(bars.close_f[i - 1])
            simple, log_return = _none(ratio - 1), _none(np.log(ratio))
    lo = i - vol_window
    vol_ok = lo >= 0 and open_ms - bars.opens[lo] == vol_window * interval_ms
    realized = float("nan")
    if vol_ok:
        closes = np.array(bars.close_f[lo : i + 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            window = np.log(closes[1:] / closes[:-1])
        realized = float(np.std(window, ddof=1)) * math.sqrt(periods_per_year(interval_ms))
    with localcontext(_SUMS):
        vol_24h = bars.cum_volume[i + 1] - bars.cum_volume[first]
        quote_24h = bars.cum_quote[i + 1] - bars.cum_quote[first]
    with localcontext(_RATIO):
        vwap = float(quote_24h / vol_24h) if vol_24h else None
    open_24h = bars.open_f[first]
    return (
        open_ms,
        simple,
        log_return,
        _none(realized),
        _none((close / open_24h - 1) * 100) if open_24h else None,
        max(bars.high[first : i + 1]),
        min(bars.low[first : i + 1]),
        vol_24h,
        quote_24h,
        vwap,
        count,
        _reasons(
            (not has_prev, "no previous bar: no return"),
            (not vol_ok, f"fewer than {vol_window} returns: no realized_vol"),
            (vol_24h == 0, "no volume in 24 h: no vwap_24h"),
            (count < n24, f"24 h window has {count} of {n24} bars"),
        ),
    )


SUMMARY_COLUMNS = [
    "open_ms",
    "return_simple",
    "log_return",
    "realized_vol",
    "change_24h_pct",
    "high_24h",
    "low_24h",
    "volume_24h",
    "quote_volume_24h",
    "vwap_24h",
    "bars_24h",
    "null_reason",
]


# --- 1m returns across symbols -----------------------------------------------------


def minute_returns(bars: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide 1m simple and log returns: index open_ms, one column per symbol.

    `bars`: symbol, open_ms, close. A symbol's return at minute t needs its
    bar at t and at t - 1m; otherwise it is missing (NaN) at t.
    """
    closes = bars.pivot_table(index="open_ms", columns="symbol", values="close", aggfunc="last")
    closes = closes.astype(float).sort_index()
    full = np.arange(closes.index.min(), closes.index.max() + MINUTE_MS, MINUTE_MS)
    closes = closes.reindex(full)
    simple = closes / closes.shift(1) - 1
    logs = np.log(closes / closes.shift(1))
    return simple, logs


def correlations(
    logs: pd.DataFrame, symbols: Iterable[str], window_ms: int, since_ms: int
) -> pd.DataFrame:
    """Pearson correlation of 1m log returns per pair over the window ending at each minute.

    as_of is the end of the window (the close of its last minute); the
    window holds the minutes whose open time is in [as_of - window, as_of).
    Only minutes where both symbols have a return count (`n_obs`).
    """
    names = sorted(s for s in set(symbols) if s in logs.columns)
    span = window_ms // MINUTE_MS
    rows = []
    minutes = logs.index.to_numpy()
    for i, minute in enumerate(minutes):
        if minute < since_ms:
            continue
        lo = max(0, i - span + 1)
        block = logs.iloc[lo : i + 1]
        for x, a in enumerate(names):
            if np.isnan(logs[a].iat[i]):
                continue
            for b in names[x + 1 :]:
                if np.isnan(logs[b].iat[i]):
                    continue
                pair = block[[a, b]].dropna()
                n = len(pair)
                value, reason = None, None
                if n < MIN_CORRELATION_OBS:
                    reason = f"fewer than {MIN_CORRELATION_OBS} aligned returns"
                elif pair[a].std(ddof=1) == 0 or pair[b].std(ddof=1) == 0:
                    reason = "zero variance"
                else:
                    value = _none(float(np.corrcoef(pair[a], pair[b])[0, 1]))
                rows.append(
                    {
                        "symbol_a": a,
                        "symbol_b": b,
                        "as_of_ms": int(minute) + MINUTE_MS,
                        "correlation": value,
                        "n_obs": n,
                        "null_reason": reason,
                    }
                )
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


CORRELATION_COLUMNS = ["symbol_a", "symbol_b", "as_of_ms", "correlation", "n_obs", "null_reason"]


# --- risk ------------------------------------------------------------------------


def portfolio_returns(simple: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """sum_i w_i * R_i per minute (weights constant: rebalanced every minute).

    Only minutes where every symbol of the portfolio has a return.
    """
    if any(symbol not in simple.columns for symbol in weights):
        return pd.Series(dtype=float)
    frame = simple[list(weights)]
    weighted = (frame * pd.Series(weights)).sum(axis=1, min_count=len(weights))
    return weighted.where(frame.notna().all(axis=1))


def risk(returns: pd.Series, window_ms: int, since_ms: int, risk_free_rate: float) -> pd.DataFrame:
    """Historical VaR and ES, drawdown, return, volatility and Sharpe per minute's window.

    `returns`: 1m simple returns indexed by open_ms (NaN: no return that
    minute). The window ends at as_of (the close of its last minute) and
    holds the returns of minutes opening in [as_of - window, as_of).
    """
    span = window_ms // MINUTE_MS
    annual = periods_per_year(MINUTE_MS)
    values = returns.to_numpy(dtype=float)
    rows = []
    for i, minute in enumerate(returns.index.to_numpy()):
        if minute < since_ms or np.isnan(values[i]):
            continue
        window = values[max(0, i - span + 1) : i + 1]
        r = window[~np.isnan(window)]
        row: dict[str, object] = {"as_of_ms": int(minute) + MINUTE_MS, "n_obs": len(r)}
        if len(r) < MIN_RISK_OBS:
            row["null_reason"] = f"fewer than {MIN_RISK_OBS} returns"
            rows.append(row)
            continue
        for level in RISK_LEVELS:
            q = float(np.quantile(r, 1 - level))
            tag = round(level * 100)
            row[f"var_{tag}"] = -q
            row[f"es_{tag}"] = -float(r[r <= q].mean())
        wealth = np.cumprod(np.concatenate([[1.0], 1 + r]))
        row["max_drawdown"] = float(np.max(1 - wealth / np.maximum.accumulate(wealth)))
        row["period_return"] = float(wealth[-1] - 1)
        sd = float(np.std(r, ddof=1))
        row["volatility"] = sd * math.sqrt(annual)
        if sd > 0:
            row["sharpe"] = (float(np.mean(r)) * annual - risk_free_rate) / (sd * math.sqrt(annual))
        else:
            row["null_reason"] = "zero variance: no sharpe"
        rows.append(row)
    return pd.DataFrame(rows, columns=RISK_COLUMNS)


RISK_COLUMNS = [
    "as_of_ms",
    "n_obs",
    "var_95",
    "es_95",
    "var_99",
    "es_99",
    "max_drawdown",
    "period_return",
    "volatility",
    "sharpe",
    "null_reason",
]


# --- signals ---------------------------------------------------------------------


def _crossings(
    name: str, prev: np.ndarray, cur: np.ndarray, level: float, first: int
) -> list[tuple[int, str, str]]:
    """(row, signal, direction) from row `first` on where a value crosses `level`: up if
    prev <= level < cur."""
    out = []
    for i in range(max(1, first), len(cur)):
        p, c = prev[i], cur[i]
        if np.isnan(p) or np.isnan(c):
            continue
        if p <= level < c:
            out.append((i, name, "up"))
        elif p >= level > c:
            out.append((i, name, "down"))
    return out


def _shifted(values: np.ndarray) -> np.ndarray:
    return np.concatenate([[np.nan], values[:-1]])


def signals(
    bars: pd.DataFrame, since_ms: int, anomaly_window: int | None, anomaly_z: float
) -> pd.DataFrame:
    """Signal events of one series of final bars (sorted by open_ms), at or after since_ms.

    Crossings compare a bar with the one before it: `up` when the value was
    at or below the level and is now above it, `down` the reverse.
    anomaly_window None: no anomaly events (they are for 1m bars).
    """
    bars = bars.sort_values("open_ms").reset_index(drop=True)

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in bars[name]], dtype=float)

    close, macd, signal = col("close"), col("macd"), col("macd_signal")
    rsi, upper, lower = col("rsi_14"), col("bb_upper"), col("bb_lower")
    sma, ema = col("sma_20"), col("ema_12")
    # Bars before since_ms are context: events are looked for from the first one after.
    first = int(np.searchsorted(bars["open_ms"].to_numpy(), since_ms))
    events = [
        *_crossings("macd_cross", _shifted(macd - signal), macd - signal, 0.0, first),
        *_crossings("ema_sma_cross", _shifted(ema - sma), ema - sma, 0.0, first),
        *_crossings("rsi_70", _shifted(rsi), rsi, 70.0, first),
        *_crossings("rsi_30", _shifted(rsi), rsi, 30.0, first),
    ]
    for i in range(max(1, first), len(bars)):
        if close[i] > upper[i] and close[i - 1] <= upper[i - 1]:
            events.append((i, "bb_breakout", "up"))
        elif close[i] < lower[i] and close[i - 1] >= lower[i - 1]:
            events.append((i, "bb_breakout", "down"))
    z_scores: dict[tuple[int, str], float] = {}
    if anomaly_window is not None:
        log_ret = np.log(close / _shifted(close))
        for name, series in (("anomaly_return", log_ret), ("anomaly_volume", col("volume"))):
            for i in range(max(anomaly_window, first), len(bars)):
                past = series[i - anomaly_window : i]
                if np.isnan(series[i]) or np.isnan(past).any():
                    continue
                sd = float(np.std(past, ddof=1))
                if sd == 0:
                    continue
                z = (series[i] - float(np.mean(past))) / sd
                if abs(z) > anomaly_z:
                    events.append((i, name, "up" if z > 0 else "down"))
                    z_scores[(i, name)] = float(z)
    rows = []
    for i, name, direction in events:
        open_ms = int(bars["open_ms"].iat[i])
        if open_ms < since_ms:
            continue
        rows.append(
            {
                "open_ms": open_ms,
                "signal": name,
                "direction": direction,
                "close": _none(close[i]),
                "macd": _none(macd[i]),
                "macd_signal": _none(signal[i]),
                "rsi_14": _none(rsi[i]),
                "bb_upper": _none(upper[i]),
                "bb_lower": _none(lower[i]),
                "sma_20": _none(sma[i]),
                "ema_12": _none(ema[i]),
                "z_score": z_scores.get((i, name)),
            }
        )
    return pd.DataFrame(rows, columns=SIGNAL_COLUMNS)


SIGNAL_COLUMNS = [
    "open_ms",
    "signal",
    "direction",
    "close",
    "macd",
    "macd_signal",
    "rsi_14",
    "bb_upper",
    "bb_lower",
    "sma_20",
    "ema_12",
    "z_score",
]
