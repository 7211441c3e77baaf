"""The bronze tables: key, ordering and partitioning declared once.

Every table is COPY_ON_WRITE (2 cores: no async compaction to feed) and
partitioned by symbol and the UTC date of the exchange's time (receipt date
only where the payload has no exchange time: partial depth, book ticker).
The ordering field decides which of two versions of a key wins: for replays
of the same frame the versions are equal, so any choice is deterministic;
for klines the closed push beats open pushes and a later event an earlier one.
Diff depth has its own table: its update ids (U..u) and a partial snapshot's
lastUpdateId are different things and would collide under one key.
"""

from __future__ import annotations

from streaming_jobs.common.hudi import HudiTable

PARTITION = ("symbol", "date")

TRADES = HudiTable("bronze_trades", ("symbol", "trade_id"), "recv_ns", PARTITION)
AGG_TRADES = HudiTable("bronze_agg_trades", ("symbol", "agg_trade_id"), "recv_ns", PARTITION)
KLINES = HudiTable("bronze_klines", ("symbol", "interval", "open_time"), "push_version", PARTITION)
TICKERS = HudiTable("bronze_tickers", ("symbol", "event_time"), "recv_ns", PARTITION)
DEPTH = HudiTable("bronze_depth", ("symbol", "last_update_id"), "recv_ns", PARTITION)
DEPTH_UPDATES = HudiTable(
    "bronze_depth_updates", ("symbol", "final_update_id"), "recv_ns", PARTITION
)
BOOK_TICKER = HudiTable("bronze_book_ticker", ("symbol", "update_id"), "recv_ns", PARTITION)
# One row per Kafka record that did not parse or validate: its coordinates are its key.
QUARANTINE = HudiTable(
    "bronze_quarantine", ("kafka_topic", "kafka_partition", "kafka_offset"), "ingest_ms", ("date",)
)
