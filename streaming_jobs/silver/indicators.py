"""Indicators over a bar series, exactly as TA-Lib 0.8 (../shared/docs/indicators.md).

`compute` continues a series from the state stored on the bar before the
first bar to compute (or starts it at its first bar), so a restart or a
correction of an old bar never re-seeds from a partial history: EMA-based
values would differ for hundreds of bars. The state of a bar is its index
in the series, its EMA12/EMA26, MACD's own fast EMA (not EMA12: it is
seeded later, see the notes) and signal, RSI's average gain and loss; SMA
and Bollinger need the 19 closes before, which are bars in the table.

Arithmetic follows TA-Lib's order of operations (seeds summed left to
right, then divided; the same EMA and Wilder update forms), so a continued
series is bit-identical to an uninterrupted one, and TA-Lib agrees to about
1e-11 relative (its running sums for SMA and variance round differently).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SMA_N = 20
EMA_FAST, EMA_SLOW, MACD_SIGNAL = 12, 26, 9
RSI_N = 14
BB_K = 2.0
# From this bar index on, every value is defined and the state is complete.
WARM = EMA_SLOW + MACD_SIGNAL - 2  # 33: MACD's first value
# TA-Lib's "is zero" for RSI's denominator.
_EPSILON = 1e-14

OUTPUTS = (
    "sma_20",
    "ema_12",
    "ema_26",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
)
STATE = ("bar_index", "macd_fast_ema", "rsi_avg_gain", "rsi_avg_loss")


@dataclass(frozen=True)
class State:
    """What bar i leaves for bar i + 1 (all defined once i >= WARM)."""

    bar_index: int
    close: float
    ema_12: float
    ema_26: float
    macd_fast_ema: float
    macd_signal: float
    rsi_avg_gain: float
    rsi_avg_loss: float


def _k(n: int) -> float:
    return 2.0 / (n + 1)


def _mean(values: Sequence[float]) -> float:
    # TA-Lib sums left to right, then divides.
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def compute(
    closes: Sequence[float], prior: State | None = None, window: Sequence[float] = ()
) -> dict[str, np.ndarray]:
    """Indicators and state for `closes`, the bars after `prior`.

    Without `prior` the closes are the series from its first bar. With it,
    `prior` is the state of the bar just before (index >= WARM) and `window`
    the closes of the SMA_N - 1 bars up to and including it.
    """
    n = len(closes)
    out = {name: np.full(n, np.nan) for name in (*OUTPUTS, *STATE)}
    if prior is not None and prior.bar_index < WARM:
        raise ValueError(f"continuing needs a warm state (bar index >= {WARM})")
    if prior is not None and len(window) != SMA_N - 1:
        raise ValueError(f"continuing needs the {SMA_N - 1} closes before, got {len(window)}")
    recent = list(window)  # the last SMA_N closes
    head: list[float] = []  # the series' first EMA_SLOW closes, for the seeds
    first = 0 if prior is None else prior.bar_index + 1
    prev = prior.close if prior else math.nan
    e12 = prior.ema_12 if prior else math.nan
    e26 = prior.ema_26 if prior else math.nan
    fast = prior.macd_fast_ema if prior else math.nan
    signal = prior.macd_signal if prior else math.nan
    gain = prior.rsi_avg_gain if prior else math.nan
    loss = prior.rsi_avg_loss if prior else math.nan
    macds: list[float] = []  # macd[25..33], for the signal's seed
    k12, k26, k9 = _k(EMA_FAST), _k(EMA_SLOW), _k(MACD_SIGNAL)
    for j, x in enumerate(closes):
        i = first + j
        x = float(x)
        recent.append(x)
        if len(recent) > SMA_N:
            recent.pop(0)
        if i < EMA_SLOW:
            head.append(x)
        # EMA(N): seeded with the mean of the first N closes, at i = N - 1.
        if i == EMA_FAST - 1:
            e12 = _mean(head)
        elif i >= EMA_FAST:
            e12 = ((x - e12) * k12) + e12
        if i == EMA_SLOW - 1:
            e26 = _mean(head)
        elif i >= EMA_SLOW:
            e26 = ((x - e26) * k26) + e26
        # MACD's fast line: an EMA12 seeded with mean(x[14..25]) at i = 25.
        if i == EMA_SLOW - 1:
            fast = _mean(head[EMA_SLOW - EMA_FAST :])
        elif i >= EMA_SLOW:
            fast = ((x - fast) * k12) + fast
        if i >= EMA_SLOW - 1:
            macd = fast - e26
            if i < WARM:
                macds.append(macd)
            elif i == WARM:
                macds.append(macd)
                signal = _mean(macds)
            else:
                signal = ((macd - signal) * k9) + signal
            if i >= WARM:
                out["macd"][j] = macd
                out["macd_signal"][j] = signal
                out["macd_hist"][j] = macd - signal
        # RSI(14), Wilder's smoothing after a plain-mean seed over d[1..14].
        if i >= 1:
            d = x - prev
            if i <= RSI_N:
                gain = (0.0 if i == 1 else gain) + (d if d > 0 else 0.0)
                loss = (0.0 if i == 1 else loss) - (d if d < 0 else 0.0)
                if i == RSI_N:
                    gain /= RSI_N
                    loss /= RSI_N
            else:
                gain *= RSI_N - 1
                loss *= RSI_N - 1
                if d < 0:
                    loss -= d
                else:
                    gain += d
                gain /= RSI_N
                loss /= RSI_N
            if i >= RSI_N:
                total = gain + loss
                out["rsi_14"][j] = 100.0 * (gain / total) if abs(total) >= _EPSILON else 0.0
        if i >= SMA_N - 1:
            mean = _mean(recent)
            var = _mean([v * v for v in recent]) - mean * mean
            std = math.sqrt(var) if var > 0 else 0.0
            out["sma_20"][j] = mean
            out["bb_middle"][j] = mean
            out["bb_upper"][j] = mean + BB_K * std
            out["bb_lower"][j] = mean - BB_K * std
        if i >= EMA_FAST - 1:
            out["ema_12"][j] = e12
        if i >= EMA_SLOW - 1:
            out["ema_26"][j] = e26
            out["macd_fast_ema"][j] = fast
        if i >= RSI_N:
            out["rsi_avg_gain"][j] = gain
            out["rsi_avg_loss"][j] = loss
        out["bar_index"][j] = i
        prev = x
    return out
