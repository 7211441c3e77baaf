"""The bronze tables: key, ordering, partitioning and write path declared once.

Layout: every table is partitioned by the UTC date of the exchange's time
(of receipt for partial depth and the book ticker, whose payloads carry no
time), never by symbol: a commit touching the whole market's 2,000 symbols
would open 2,000 partitions (about 100 s a commit on 2 cores, make
bench-write). The symbol stays first in the record key.

Write paths (measured in make bench-write; docs/BENCHMARKS.md, "Hudi write
paths"):

- IMMUTABLE: trades, aggTrades, depth updates, partial depth snapshots,
  book tickers, tickers and quarantined frames never change once
  published. They are bulk-inserted (Spark's row writer, one new file a
  commit): no index lookup, no rewrite of a file that holds older rows, so a
  commit costs the same at noon as at midnight.
  Small files are packed by clustering every CLUSTER_EVERY commits, sorted
  by symbol and sequence, so files hold few symbols and readers skip by
  the files' statistics. Duplicates collapse without an index: within a
  batch by key, a replayed batch by its stamp (common/hudi.BatchLedger),
  a record published twice by its sequence (bronze/guard.py: each of these
  tables has an id that grows per symbol, SEQUENCE).
- klines change (open pushes, then the closed one): upserts with bloom
  filters in the files' footers, looked up in the current date only.

The ordering field decides which of two versions of a key wins: for replays
of the same frame the versions are equal, so any choice is deterministic;
for klines the closed push beats open pushes and a later event an earlier one.
Diff depth has its own table: its update ids (U..u) and a partial snapshot's
lastUpdateId are different things and would collide under one key.
"""

from __future__ import annotations

from streaming_jobs.common.hudi import UPSERT_BLOOM, HudiTable, WritePath

PARTITION = ("date",)
# Clustering every 30 commits packs that many small files into one, sorted; files under
# 8 MB are packed again with the next ones, so no rewrite exceeds about 8 MB.
CLUSTER_EVERY = 30
CLUSTER_SMALL_FILE_MB = 8


def immutable(sequence: str) -> WritePath:
    return WritePath(
        operation="bulk_insert",
        files_per_commit=1,
        small_file_mb=0,
        cluster_every=CLUSTER_EVERY,
        cluster_small_file_mb=CLUSTER_SMALL_FILE_MB,
        sort_by=("symbol", sequence),
    )


TRADES = HudiTable(
    "bronze_trades", ("symbol", "trade_id"), "recv_ns", PARTITION, immutable("trade_id")
)
AGG_TRADES = HudiTable(
    "bronze_agg_trades",
    ("symbol", "agg_trade_id"),
    "recv_ns",
    PARTITION,
    immutable("agg_trade_id"),
)
KLINES = HudiTable(
    "bronze_klines", ("symbol", "interval", "open_time"), "push_version", PARTITION, UPSERT_BLOOM
)
TICKERS = HudiTable(
    "bronze_tickers", ("symbol", "event_time"), "recv_ns", PARTITION, immutable("event_time")
)
DEPTH = HudiTable(
    "bronze_depth", ("symbol", "last_update_id"), "recv_ns", PARTITION, immutable("last_update_id")
)
DEPTH_UPDATES = HudiTable(
    "bronze_depth_updates",
    ("symbol", "final_update_id"),
    "recv_ns",
    PARTITION,
    immutable("final_update_id"),
)
BOOK_TICKER = HudiTable(
    "bronze_book_ticker", ("symbol", "update_id"), "recv_ns", PARTITION, immutable("update_id")
)
# One row per Kafka record that did not parse or validate: its coordinates are its key,
# so it has no duplicates but a replayed batch's (the batch stamp).
QUARANTINE = HudiTable(
    "bronze_quarantine",
    ("kafka_topic", "kafka_partition", "kafka_offset"),
    "ingest_ms",
    PARTITION,
    immutable("kafka_offset"),
)

# The id of each immutable table that grows per symbol in the exchange's own order
# (the quarantine's has no symbol: its key is never published twice).
SEQUENCE = {
    TRADES.name: "trade_id",
    AGG_TRADES.name: "agg_trade_id",
    TICKERS.name: "event_time",
    DEPTH.name: "last_update_id",
    DEPTH_UPDATES.name: "final_update_id",
    BOOK_TICKER.name: "update_id",
}
ALL = (TRADES, AGG_TRADES, KLINES, TICKERS, DEPTH, DEPTH_UPDATES, BOOK_TICKER, QUARANTINE)
