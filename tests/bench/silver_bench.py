"""Silver benchmark: a backfill from bronze to six intervals + indicators, against DuckDB.

    python -m tests.bench.silver_bench --loops 88      (part of `make bench`)

The trades are the real BTCUSDT + ETHUSDT capture (34,419 trades), looped
the way the replay loops it (ids moved by their span per symbol, times by
whole minutes, producer/replay/captures.py), `--loops` times: 88 loops are
3.03 million trades over about 17.6 hours. They are bulk-inserted into
bronze_trades (not timed); then, timed in the same run:

- silver: the real query (`start(once=True)`), bronze_trades read as a Hudi
  stream -> 1m bars with trade-less minutes filled, 5m .. 1d roll-ups and
  indicators for every bar, upserted into silver_ohlcv;
- DuckDB: the same 1m OHLCV (open, high, low, close, volume, quote volume,
  count, taker volumes; decimals) from the same trades exported to Parquet,
  the single-machine tool a user would reach for. Its 1m bars must equal
  silver's real 1m bars, or the run fails.

Freshness under live load is the live benchmark's (tests/bench/live_bench.py:
the producer and every layer running).

Silver's runs and Spark's plain query's take turns (the machine drifts
between minutes). Reported: wall time, trades/s, silver / Spark's plain query, silver /
DuckDB, where silver's time goes (its batches' own log lines: the 1m
summary job, state, the Hudi write, the rest), the driver JVM's peak RSS.
Silver's first run is not timed: it warms the JVM its peers then run in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import statistics
import sys
import time
from typing import Any

import duckdb
from pyspark.sql import SparkSession, functions as F

from producer.replay.captures import merge_captures, plan_shifts
from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common.hudi import HUDI_FORMAT, read_table, write_options
from streaming_jobs.common.settings import PROJECT_ROOT, load_settings
from streaming_jobs.silver import bars as B, tables
from streaming_jobs.silver.job import start
from tests.bench.bronze_bench import jvm_peak_rss_mb, session
from tests.bench.producer_bench import memory_gb
from tests.bench.results import (
    TIMED_RUNS,
    median_time,
    publish_results,
)
from tests.conftest import write_test_conf

STATE = PROJECT_ROOT / ".state" / "bench-silver"
# Silver and Spark's plain query, run in turns this many times each (the median):
# their ratio moved by 0.1-0.3 between runs of 3 each.
PAIRS = 5
# The whole BTCUSDT + ETHUSDT recording (2024-08-08 23:54 .. 08-09 00:05).
RECORDING = [
    PROJECT_ROOT / "producer" / "replay" / "captures" / f"spot_{s}_{d}.gz"
    for s in ("btcusdt", "ethusdt")
    for d in ("20240808", "20240809")
]
TRADE_SCHEMA = (
    "symbol string, trade_id long, price string, qty string, trade_ms long, is_buyer_maker boolean"
)


def base_trades() -> tuple[list[tuple[Any, ...]], dict[str, int], int]:
    """The capture's trades, each symbol's trade-id span and the loop's time shift (ms)."""
    capture = merge_captures(RECORDING)
    plan = plan_shifts(capture)
    rows = []
    for frame in capture.frames:
        data = json.loads(frame.raw)["data"]
        if data.get("e") == "trade":
            rows.append((data["s"], data["t"], data["p"], data["q"], data["T"], data["m"]))
    return rows, dict(plan.trade_ids), plan.time_span_ms


def write_backlog(spark: SparkSession, path: str, loops: int) -> int:
    rows, spans, shift_ms = base_trades()
    span = F.create_map(*[F.lit(x) for pair in spans.items() for x in pair])
    loop = F.col("loop")
    trades = (
        spark.createDataFrame(rows, TRADE_SCHEMA)
        .crossJoin(spark.range(loops).withColumnRenamed("id", "loop"))
        .select(
            "symbol",
            (F.col("trade_id") + loop * span[F.col("symbol")]).alias("trade_id"),
            F.col("price").cast("decimal(28,8)").alias("price"),
            F.col("qty").cast("decimal(28,8)").alias("qty"),
            F.timestamp_millis(F.col("trade_ms") + loop * shift_ms).alias("trade_time"),
            "is_buyer_maker",
        )
        .withColumn("recv_ns", F.unix_millis("trade_time") * 1_000_000)
        .withColumn("ingest_time", F.current_timestamp())
        .withColumn("date", F.to_date("trade_time"))
    )
    options = {**write_options(bronze.TRADES), "hoodie.datasource.write.operation": "bulk_insert"}
    trades.write.format(HUDI_FORMAT).options(**options).mode("append").save(path)
    return len(rows) * loops


DUCKDB_1M = """
SELECT symbol,
       (epoch_ms(trade_time) // 60000) * 60000 AS open_ms,
       arg_min(price, trade_id) AS open, max(price) AS high, min(price) AS low,
       arg_max(price, trade_id) AS close, sum(qty) AS volume,
       sum(price * qty) AS quote_volume, count(*) AS trade_count,
       sum(CASE WHEN NOT is_buyer_maker THEN qty ELSE 0 END) AS taker_buy_base,
       sum(CASE WHEN NOT is_buyer_maker THEN price * qty ELSE 0 END) AS taker_buy_quote
FROM read_parquet('{path}/*.parquet')
GROUP BY ALL
"""


class BatchSplit(logging.Handler):
    """Where a silver run's time goes, from the batches' own log lines
    (streaming_jobs/silver/job.py): the 1m summary job, the state in Python,
    the Hudi write, and the rest of the run (the query's start, its source's
    planning, the ledger), summed over the run's batches."""

    LINE = re.compile(
        r"summed in ([\d.]+) s, state ([\d.]+) s, written ([\d.]+) s\), in ([\d.]+) s"
    )
    PARTS = ("summary", "state", "write", "rest")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.runs: list[dict[str, float]] = []
        self._batches: list[tuple[float, ...]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = self.LINE.search(record.getMessage())
        if found:
            self._batches.append(tuple(float(x) for x in found.groups()))

    def reset(self) -> None:
        self._batches = []

    def keep(self, wall_s: float) -> None:
        if not self._batches:
            raise RuntimeError(
                "silver logged no batch line matching BatchSplit.LINE: its log changed"
            )
        summed, state, written, total = (sum(b[i] for b in self._batches) for i in range(4))
        self.runs.append(
            {"summary": summed, "state": state, "write": written, "rest": wall_s - total}
        )

    def medians(self) -> dict[str, float]:
        return {p: round(statistics.median(r[p] for r in self.runs), 2) for p in self.PARTS}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.silver_bench")
    parser.add_argument("--loops", type=int, default=88, help="capture loops (88: 3.03M trades)")
    args = parser.parse_args(argv)
    shutil.rmtree(STATE, ignore_errors=True)
    write_test_conf(STATE / "conf", for_tests=False)
    env = {**os.environ, "LAKE_CONF_DIR": str(STATE / "conf"), "STATE_DIR": str(STATE)}
    settings = load_settings(STATE / "conf", env)
    spark = session(settings)
    trades = write_backlog(spark, settings.table_path(bronze.TRADES.name), args.loops)
    print(f"{trades:,} trades in bronze_trades", file=sys.stderr)

    exported = STATE / "trades-parquet"
    read_table(spark, settings.table_path(bronze.TRADES.name)).select(
        "symbol", "trade_id", "price", "qty", "trade_time", "is_buyer_maker"
    ).write.parquet(str(exported))

    # Silver from an empty table each time (without its table and checkpoint: each run
    # is the whole backfill), taking turns with Spark's plain query, so that both meet
    # the machine in the same state (it drifts by 10-30% within minutes). One silver
    # run before them, not timed: the peers run in the JVM it warmed (its JIT, its
    # loaded classes), so silver's figure is warm as theirs are.
    split = BatchSplit()
    logging.getLogger("silver").addHandler(split)
    logging.getLogger("silver").setLevel(logging.INFO)

    def run_silver() -> float:
        for path in (settings.table_path(tables.OHLCV.name), settings.checkpoint_path("silver")):
            shutil.rmtree(path.removeprefix("file://"), ignore_errors=True)
        split.reset()
        started = time.perf_counter()
        query: Any = start(spark, settings, once=True)
        query.awaitTermination()
        took = time.perf_counter() - started
        assert query.exception() is None
        return took

    # Spark's floor on this machine: DuckDB's query in Spark, nothing else
    # (no Hudi, no fills, roll-ups or indicators), in the warm session.
    floor: list[Any] = []

    def run_spark_floor() -> float:
        started = time.perf_counter()
        source = spark.read.parquet(str(exported))
        floor[:] = B.minute_bars(B.trade_rows(source, "trades")).collect()
        return time.perf_counter() - started

    cold_s = run_silver()
    silver_times, floor_times = [], []
    for _ in range(PAIRS):
        silver_times.append(run_silver())
        split.keep(silver_times[-1])
        floor_times.append(run_spark_floor())
    silver_s = statistics.median(silver_times)
    floor_s = statistics.median(floor_times)

    con = duckdb.connect()
    con.execute("SET threads = 2; SET TimeZone = 'UTC'")
    duck: list[Any] = []

    def run_duckdb() -> None:
        duck[:] = con.execute(DUCKDB_1M.format(path=exported)).fetchall()

    duckdb_s = median_time(run_duckdb)

    silver_1m = {
        (r.symbol, r.open_ms): tuple(r)[2:]
        for r in read_table(spark, settings.table_path(tables.OHLCV.name))
        .filter((F.col("interval") == "1m") & ~F.col("is_filled"))
        .select(
            "symbol",
            F.unix_millis("open_time").alias("open_ms"),
            *B.BAR_COLUMNS[2 : B.BAR_COLUMNS.index("first_trade_id")],
        )
        .collect()
    }
    duck_1m = {(r[0], r[1]): tuple(r[2:]) for r in duck}
    floor_1m = {
        (r.symbol, r.open_ms): tuple(r)[2 : B.BAR_COLUMNS.index("first_trade_id")] for r in floor
    }
    for name, bars_1m in (("silver", silver_1m), ("Spark's plain query", floor_1m)):
        if bars_1m != duck_1m:
            differ = [k for k in duck_1m if bars_1m.get(k) != duck_1m[k]][:3]
            print(f"{name}'s 1m bars differ from DuckDB's, e.g. {differ}", file=sys.stderr)
            return 1
    bars = read_table(spark, settings.table_path(tables.OHLCV.name)).count()
    peak = jvm_peak_rss_mb(spark)
    spark.stop()

    command = f"python -m tests.bench.silver_bench --loops {args.loops}"
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "trades": trades,
        "bars_written": bars,
        "real_1m_bars": len(silver_1m),
        "silver_s": silver_s,
        "silver_runs_s": [round(t, 2) for t in silver_times],
        "spark_floor_runs_s": [round(t, 2) for t in floor_times],
        "silver_cold_s": round(cold_s, 2),
        "silver_split_s": split.medians(),
        "duckdb_1m_s": duckdb_s,
        "silver_trades_per_s": trades / silver_s,
        "duckdb_trades_per_s": trades / duckdb_s,
        "silver_over_duckdb": silver_s / duckdb_s,
        "spark_floor_1m_s": floor_s,
        "spark_floor_over_duckdb": floor_s / duckdb_s,
        "driver_peak_rss_mb": peak,
        "machine": {"cores": os.cpu_count(), "memory_gb": round(memory_gb(), 1)},
    }
    publish_results("silver", report)
    return 0


def render(report: dict[str, Any]) -> str:
    trades, bars = report["trades"], report["bars_written"]
    silver_s, duckdb_s = report["silver_s"], report["duckdb_1m_s"]
    floor_s = report["spark_floor_1m_s"]
    return "\n".join(
        [
            "## Silver: backfill from bronze_trades vs Spark's plain query and DuckDB",
            "",
            f"{report['date']}, {report['machine']['cores']} cores, one SparkSession "
            f"local[2], DuckDB 2 threads; {trades:,} trades (the real capture looped); "
            f"command: `{report['command']}`.",
            "",
            "| measured | wall s | trades/s |",
            "|---|---|---|",
            f"| silver: 1m + 5m..1d bars, fills, indicators ({bars:,} rows upserted) | "
            f"{silver_s:,.1f} | {trades / silver_s:,.0f} |",
            f"| Spark alone: the same 1m OHLCV from the same trades as Parquet, same session "
            f"(no Hudi, fills, roll-ups or indicators) | {floor_s:,.2f} | "
            f"{trades / floor_s:,.0f} |",
            f"| DuckDB: the same 1m OHLCV from Parquet ({report['real_1m_bars']:,} bars, equal "
            f"to silver's) | {duckdb_s:,.2f} | {trades / duckdb_s:,.0f} |",
            f"| silver / Spark alone | {silver_s / floor_s:,.2f}x | |",
            f"| silver / DuckDB | {silver_s / duckdb_s:,.1f}x | |",
            f"| Spark alone / DuckDB: the floor of any Spark job here | "
            f"{floor_s / duckdb_s:,.1f}x | |",
            "",
            "Where silver's time goes (median s over its timed runs, from its batches' log "
            "lines): "
            + ", ".join(f"{k} {v:.2f}" for k, v in report["silver_split_s"].items())
            + " (summary: reading the batch's trades and the 1m bars job, what Spark alone "
            "does; state: bars, roll-ups and indicators in Python; write: the Hudi upsert; "
            "rest: the query's start, its source's planning, the ledger).",
            "",
            f"Silver and Spark alone: median of {len(report['silver_runs_s'])} runs each "
            "(silver's from an empty table each time: "
            f"{', '.join(f'{t:g}' for t in report['silver_runs_s'])} s, taking turns with "
            f"Spark alone's: {', '.join(f'{t:g}' for t in report['spark_floor_runs_s'])} s, "
            "after one untimed run that warmed the JVM for it and its peers: "
            f"{report['silver_cold_s']:g} s); DuckDB: median of {TIMED_RUNS}. "
            + "Driver JVM peak RSS: "
            f"{report['driver_peak_rss_mb']:.0f} MB. Freshness under live load: the Live "
            "sections.",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
