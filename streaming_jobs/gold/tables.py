"""The gold tables: key, ordering and partitioning declared once.

Every row carries `updated_ms` (when it was computed): a recomputation
upserts the same key with the newer values, so re-processing a batch never
adds a row (signals included: their key is the bar and the signal type).
"""

from __future__ import annotations

from streaming_jobs.common.hudi import HudiTable

MARKET_SUMMARY = HudiTable(
    "gold_market_summary", ("symbol", "interval", "open_time"), "updated_ms", ("symbol", "interval")
)
CORRELATION = HudiTable(
    "gold_correlation", ("symbol_a", "symbol_b", "window", "as_of"), "updated_ms", ("window",)
)
RISK = HudiTable("gold_risk", ("subject", "window", "as_of"), "updated_ms", ("window",))
SIGNALS = HudiTable(
    "gold_signals", ("symbol", "interval", "open_time", "signal"), "updated_ms", ("symbol",)
)
DATA_QUALITY = HudiTable("gold_data_quality", ("symbol", "day"), "updated_ms", ("day",))
