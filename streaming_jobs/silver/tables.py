"""The silver table: bars and their indicators, one row per (symbol, interval, bar).

Indicators live on the bar's row, with the few state values that continue
the series (bar index, MACD's fast EMA, RSI's average gain and loss): a bar
and the indicators computed up to it are written in one commit, so a reader
never sees a bar with another version's indicators, and a restart finds its
state where the bars are.
"""

from __future__ import annotations

from streaming_jobs.common.hudi import HudiTable

OHLCV = HudiTable(
    "silver_ohlcv", ("symbol", "interval", "open_time"), "updated_ms", ("symbol", "interval")
)
