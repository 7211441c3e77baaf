"""The gold tables: key, ordering, partitioning and write path declared once.

Every row carries `updated_ms` (when it was computed): a recomputation
upserts the same key with the newer values, so re-processing a batch never
adds a row (signals included: their key is the bar and the signal type).

Layout: the per-bar tables as silver's bars (interval and period, never the
symbol; streaming_jobs/silver/tables.py), correlations and risk by window,
data quality by day. Every gold row can change (a correction recomputes
it): upserts. The per-bar tables, written with every batch, take the write
path of silver's bars (merge-on-read, bucket index); the others are written
once a minute or less, partitioned by window or day alone, and stay
copy-on-write with bloom filters: a bucket there would be one ever-growing
file group per window for compaction to rewrite.
"""

from __future__ import annotations

from streaming_jobs.common.hudi import UPSERT_BLOOM, HudiTable
from streaming_jobs.silver.tables import BARS, PARTITION as BAR_PARTITION

MARKET_SUMMARY = HudiTable(
    "gold_market_summary",
    ("symbol", "interval", "open_time"),
    "updated_ms",
    BAR_PARTITION,
    BARS,
)
CORRELATION = HudiTable(
    "gold_correlation",
    ("symbol_a", "symbol_b", "window", "as_of"),
    "updated_ms",
    ("window",),
    UPSERT_BLOOM,
)
RISK = HudiTable(
    "gold_risk", ("subject", "window", "as_of"), "updated_ms", ("window",), UPSERT_BLOOM
)
SIGNALS = HudiTable(
    "gold_signals",
    ("symbol", "interval", "open_time", "signal"),
    "updated_ms",
    BAR_PARTITION,
    BARS,
)
DATA_QUALITY = HudiTable(
    "gold_data_quality", ("symbol", "day"), "updated_ms", ("day",), UPSERT_BLOOM
)
ALL = (MARKET_SUMMARY, CORRELATION, RISK, SIGNALS, DATA_QUALITY)
