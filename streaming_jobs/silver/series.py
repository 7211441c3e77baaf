"""One symbol's bar series, updated in one pass: pure pandas, no Spark.

Silver's batch (streaming_jobs/silver/job.py) hands this module, per symbol,
the real 1m bars it recomputed from bronze for the minutes a batch touched
and the stored bars around them, and gets back every row to upsert:

- `fill_minutes`: the 1m series over a span, trade-less minutes as Binance
  has them (open = high = low = close = the previous close, zero volume and
  count);
- `roll_up`: any longer interval from complete 1m bars (prices from the
  minutes that traded, sums over all);
- `with_indicators`: an interval's changed bars and every later stored bar,
  continued from the indicator state of the stored bar before them
  (streaming_jobs/silver/indicators.py);
- `update_symbol`: the three above, then finality against a watermark (the job passes
  the end of what the exchange's trade sequence shows complete, silver/live.py).

Money is `decimal.Decimal` throughout (Arrow's decimals as pandas hands
them), summed in a context wide enough that no sum of table values can
round, and trapping any inexact result rather than rounding it.

Series are contiguous: every interval has a bar for every step from its
first bar to its last (fills only ever sit between two traded minutes), so
"the N bars before" is "the bars of the N steps before".
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from streaming_jobs.silver import indicators as ind

MINUTE_MS = 60_000

# The bar columns of every frame here, in order.
BAR_COLUMNS = (
    "symbol",
    "open_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_base",
    "taker_buy_quote",
    "first_trade_id",
    "last_trade_id",
    "is_filled",
)
_SUMS = ("volume", "quote_volume", "taker_buy_base", "taker_buy_quote")
# What update_symbol returns, per row.
ROW_COLUMNS = (*BAR_COLUMNS, "interval", *ind.OUTPUTS, *ind.STATE, "is_final")
# Stored bars before an interval's first changed bar that a batch reads:
# enough for the SMA window and for a series younger than its warm-up.
CONTEXT_STEPS = ind.WARM + 2

# Sums of decimal(38, s) values need at most 39 digits; trap anything inexact.
_EXACT = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation])


def floor(ms: int, interval_ms: int) -> int:
    return ms - ms % interval_ms


def _ids(values: Any) -> pd.Series:
    return pd.Series(values, dtype="Int64")


def fill_minutes(
    real: pd.DataFrame, symbol: str, first_ms: int, last_ms: int, carry_close: Decimal | None
) -> pd.DataFrame:
    """Every minute of [first_ms, last_ms]: `real` bars where they traded, the rest filled.

    `carry_close` is the close before first_ms (None when the series starts
    inside the span: minutes before its first trade have nothing to carry
    and are left out). Real bars outside the span are dropped.
    """
    by_minute = {int(t): i for i, t in enumerate(real["open_ms"])}
    rows: list[tuple[Any, ...]] = []
    close = carry_close
    zero = Decimal(0)
    columns = {c: real[c].tolist() for c in BAR_COLUMNS}
    for t in range(first_ms, last_ms + 1, MINUTE_MS):
        i = by_minute.get(t)
        if i is not None:
            row = tuple(columns[c][i] for c in BAR_COLUMNS)
            close = columns["close"][i]
        elif close is not None:
            row = (symbol, t, *[close] * 4, zero, zero, 0, zero, zero, None, None, True)
        else:
            continue
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(BAR_COLUMNS))
    for c in ("first_trade_id", "last_trade_id"):
        out[c] = _ids(out[c])
    out["trade_count"] = out["trade_count"].astype("int64")
    out["is_filled"] = out["is_filled"].astype(bool)
    return out


def roll_up(minutes: pd.DataFrame, interval_ms: int) -> pd.DataFrame:
    """Complete 1m bars (one symbol, sorted) -> bars of `interval_ms`."""
    open_ms = minutes["open_ms"].to_numpy(dtype=np.int64)
    if len(open_ms) == 0:
        return minutes.iloc[0:0][list(BAR_COLUMNS)].copy()
    bucket = open_ms - open_ms % interval_ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(bucket)]
    col = {c: minutes[c].tolist() for c in BAR_COLUMNS}
    filled = col["is_filled"]
    symbol = col["symbol"][0]
    rows = []
    with decimal.localcontext(_EXACT):
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            real = [i for i in range(s, e) if not filled[i]]
            if real:
                o, c = col["open"][real[0]], col["close"][real[-1]]
                h = max(col["high"][i] for i in real)
                lo = min(col["low"][i] for i in real)
            else:  # trade-less: every minute carries the previous close
                o = h = lo = c = col["close"][e - 1]
            firsts = [v for v in col["first_trade_id"][s:e] if not pd.isna(v)]
            lasts = [v for v in col["last_trade_id"][s:e] if not pd.isna(v)]
            rows.append(
                (
                    symbol,
                    int(bucket[s]),
                    o,
                    h,
                    lo,
                    c,
                    *(sum(col[k][s:e], Decimal(0)) for k in _SUMS[:2]),
                    int(sum(col["trade_count"][s:e])),
                    *(sum(col[k][s:e], Decimal(0)) for k in _SUMS[2:]),
                    min(firsts) if firsts else None,
                    max(lasts) if lasts else None,
                    not real,
                )
            )
    out = pd.DataFrame(rows, columns=list(BAR_COLUMNS))
    for c in ("first_trade_id", "last_trade_id"):
        out[c] = _ids(out[c])
    out["is_filled"] = out["is_filled"].astype(bool)
    return out


def with_indicators(changed: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """The changed bars of one interval and every later stored bar, with indicators and state.

    `stored`: the interval's stored bars from at least CONTEXT_STEPS steps
    before the first changed bar (or from the series' first bar) to its
    last, with their indicators and state. The computation continues from
    the state of the stored bar just before the first changed bar when it
    is warm, otherwise it runs from the series' first bar.
    """
    first = int(changed["open_ms"].min())
    later = stored[(stored["open_ms"] >= first) & ~stored["open_ms"].isin(changed["open_ms"])]
    bars = pd.concat([changed, later[list(BAR_COLUMNS)]], ignore_index=True)
    bars = bars.sort_values("open_ms", ignore_index=True)
    ctx = stored[stored["open_ms"] < first].sort_values("open_ms")
    closes = [float(c) for c in bars["close"]]
    window = ind.SMA_N - 1
    if len(ctx) >= window and int(ctx["bar_index"].iloc[-1]) >= ind.WARM:
        last = ctx.iloc[-1]
        prior = ind.State(
            bar_index=int(last["bar_index"]),
            close=float(last["close"]),
            ema_12=float(last["ema_12"]),
            ema_26=float(last["ema_26"]),
            macd_fast_ema=float(last["macd_fast_ema"]),
            macd_signal=float(last["macd_signal"]),
            rsi_avg_gain=float(last["rsi_avg_gain"]),
            rsi_avg_loss=float(last["rsi_avg_loss"]),
        )
        values = ind.compute(closes, prior, [float(c) for c in ctx["close"].iloc[-window:]])
    else:
        if len(ctx) and int(ctx["bar_index"].iloc[0]) != 0:
            raise ValueError(
                f"{bars['symbol'].iloc[0]}: the stored context does not reach the series' "
                f"first bar (its first bar has index {int(ctx['bar_index'].iloc[0])})"
            )
        full = ind.compute([float(c) for c in ctx["close"]] + closes)
        values = {k: v[len(ctx) :] for k, v in full.items()}
    for name, column in values.items():
        bars[name] = column
    bars["bar_index"] = bars["bar_index"].astype("int64")
    return bars


def update_symbol(
    real: pd.DataFrame,
    stored: pd.DataFrame,
    intervals: Sequence[tuple[str, int]],
    watermark: int | None,
) -> pd.DataFrame:
    """Every row one symbol's batch writes.

    `real`: the 1m bars recomputed from bronze for the span the batch
    touched (its first and last minute traded). `stored`: the symbol's
    stored bars of every interval (BAR_COLUMNS, interval, indicators,
    state, is_final), from CONTEXT_STEPS steps before the span (1m: from
    the start of the widest interval's bucket) to the end of each series.
    `intervals`: (name, ms), 1m first. Bars whose end the watermark has
    passed are final; a stored bar that ripened without changing is
    rewritten as final.
    """
    real = real.sort_values("open_ms", ignore_index=True)
    stored = stored.sort_values("open_ms", ignore_index=True).astype(
        {"is_filled": bool, "is_final": bool, "open_ms": "int64"}
    )
    symbol = str(real["symbol"].iloc[0])
    lo, hi = int(real["open_ms"].iloc[0]), int(real["open_ms"].iloc[-1])
    by_interval = {name: stored[stored["interval"] == name] for name, _ in intervals}
    m1 = by_interval["1m"]
    before = m1[m1["open_ms"] < lo]
    after = m1[(m1["open_ms"] > hi) & ~m1["is_filled"]]
    # The fill runs from the bar before the span to the next minute that traded.
    first_ms = int(before["open_ms"].iloc[-1]) + MINUTE_MS if len(before) else lo
    last_ms = int(after["open_ms"].iloc[0]) - MINUTE_MS if len(after) else hi
    carry = before["close"].iloc[-1] if len(before) else None
    minutes = fill_minutes(real, symbol, first_ms, last_ms, carry)

    longer = [(name, ms) for name, ms in intervals if name != "1m"]
    parts = [with_indicators(minutes, m1).assign(interval="1m")]
    if longer:
        widest = max(ms for _, ms in longer)
        b_lo, b_hi = floor(first_ms, widest), floor(last_ms, widest) + widest
        old = m1[
            (m1["open_ms"] >= b_lo)
            & (m1["open_ms"] < b_hi)
            & ~m1["open_ms"].isin(minutes["open_ms"])
        ]
        context = pd.concat([old[list(BAR_COLUMNS)], minutes], ignore_index=True)
        context = context.sort_values("open_ms", ignore_index=True)
        for name, ms in longer:
            rolled = roll_up(context, ms)
            rolled = rolled[
                (rolled["open_ms"] >= floor(first_ms, ms))
                & (rolled["open_ms"] <= floor(last_ms, ms))
            ]
            if len(rolled):
                parts.append(with_indicators(rolled, by_interval[name]).assign(interval=name))
    step = dict(intervals)
    for part in parts:
        part["is_final"] = _final(part["open_ms"], step[part["interval"].iloc[0]], watermark)
    # Stored bars before the changed ones that ripened meanwhile.
    written = {p["interval"].iloc[0]: p["open_ms"] for p in parts}
    for name, ms in intervals:
        rows = by_interval[name]
        ripe = rows[~rows["is_final"] & _final(rows["open_ms"], ms, watermark)]
        if name in written:
            ripe = ripe[~ripe["open_ms"].isin(written[name])]
        if len(ripe):
            parts.append(ripe.assign(is_final=True))
    out = pd.concat([p[list(ROW_COLUMNS)] for p in parts], ignore_index=True)
    for c in ("first_trade_id", "last_trade_id"):
        out[c] = _ids(out[c])
    return out


def _final(open_ms: pd.Series, interval_ms: int, watermark: int | None) -> pd.Series:
    if watermark is None:
        return pd.Series(False, index=open_ms.index)
    return (open_ms + (interval_ms - 1)) <= watermark
