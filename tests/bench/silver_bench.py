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

Then freshness (`--freshness-s`, 0 skips it): bronze, silver and gold run
together in one SparkSession on their configured triggers while a separate
process publishes 1,000 trade frames/s to Kafka: the real capture's trades
in order, with ids continued and trade/event time set to the publishing
time (synthetic load of real frames' shape, so minutes end on the wall
clock). For every whole minute published, freshness is the time its 1m bar
became visible as final (its commit's completion on silver's timeline)
minus the minute's end. The figures are those of the minutes starting
`--warmup-s` after the first live trade (a running pipeline's); the cold
start's minutes are reported beside them.

Gold runs too, on its trigger, from silver's first commit. End to end: for
every trade of those minutes, the time its final 1m bar became visible, and
the time that bar's gold_market_summary row did, minus its exchange time.

Reported: wall time, trades/s, silver / DuckDB, freshness p50/p99, end to
end p50/p99, the driver JVM's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
from typing import Any

import duckdb
from kafka import KafkaProducer
from pyspark.sql import DataFrame, SparkSession, functions as F

from producer.replay.captures import merge_captures, plan_shifts
from producer.topics import ensure_topics
from streaming_jobs.bronze import tables as bronze
from streaming_jobs.bronze.job import start as start_bronze
from streaming_jobs.common.hudi import HUDI_FORMAT, read_table, table_exists, write_options
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings
from streaming_jobs.gold import tables as gold
from streaming_jobs.gold.job import start as start_gold
from streaming_jobs.silver import bars as B, tables
from streaming_jobs.silver.job import start
from tests.bench.bronze_bench import hudi_visible, jvm_peak_rss_mb, session, trades_trigger
from tests.bench.producer_bench import memory_gb
from tests.bench.results import (
    TIMED_RUNS,
    kafka_running,
    median_time,
    percentile,
    publish_results,
)
from tests.conftest import write_test_conf

STATE = PROJECT_ROOT / ".state" / "bench-silver"
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


def live_trades(bootstrap: str, topic: str, rate: int, seconds: float, out: Any) -> None:
    """A child process: `rate` trade frames/s for `seconds`, times = now; report the span."""
    rows, _spans, _shift = base_trades()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    next_id = {symbol: 10**12 for symbol, *_ in rows}
    out.put("ready")
    started, sent = time.monotonic(), 0
    first_ms = time.time_ns() // 1_000_000
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        if due <= sent:
            time.sleep(0.002)
            continue
        for symbol, _t, price, qty, _ms, maker in (rows[i % len(rows)] for i in range(sent, due)):
            now_ns = time.time_ns()
            next_id[symbol] += 1
            data = {
                "e": "trade",
                "E": now_ns // 1_000_000,
                "s": symbol,
                "t": next_id[symbol],
                "p": price,
                "q": qty,
                "T": now_ns // 1_000_000,
                "m": maker,
                "M": True,
            }
            stream = f"{symbol.lower()}@trade"
            value = json.dumps({"stream": stream, "data": data}, separators=(",", ":")).encode()
            headers = [
                ("recv_ns", str(now_ns).encode()),
                ("stream", stream.encode()),
                ("backfill", b"0"),
                ("clock_offset_ns", b"0"),
            ]
            producer.send(topic, key=symbol.encode(), value=value, headers=headers)
        sent = due
    producer.flush()
    out.put((sent, first_ms, time.time_ns() // 1_000_000))
    producer.close()


def freshness(
    spark: SparkSession, settings: Settings, seconds: float, warmup_s: float
) -> dict[str, float]:
    """Bronze, silver and gold on their triggers under live trades; what the minutes saw.

    The figures are those of the minutes that start `warmup_s` after the
    first trade (a running pipeline's); `all_*` include the minutes of the
    cold start (JIT, Python workers, first commits, the backlog they leave).
    """
    ensure_topics(settings)
    bronze_queries: list[Any] = list(start_bronze(spark, settings))
    ctx = mp.get_context("spawn")
    channel = ctx.Queue()
    topic = settings.topic("trade").name
    child = ctx.Process(
        target=live_trades,
        args=(settings.kafka_bootstrap_servers, topic, 1000, seconds, channel),
    )
    child.start()
    silver_query: Any = None
    gold_query: Any = None
    try:
        assert channel.get(timeout=300) == "ready"
        while not table_exists(spark, settings.table_path(bronze.TRADES.name)):
            time.sleep(0.5)
        silver_query = start(spark, settings)
        while not table_exists(spark, settings.table_path(tables.OHLCV.name)):
            time.sleep(0.5)
        gold_query = start_gold(spark, settings)
        sent, first_ms, last_ms = channel.get(timeout=seconds + 300)
        # Long enough for the last whole minutes to pass the watermark, a
        # silver batch and a gold batch (30 s trigger).
        time.sleep(90)
    finally:
        for query in (gold_query, silver_query, *bronze_queries):
            if query is not None:
                query.stop()
        child.join(timeout=30)
    watermark_ms = settings.pipeline.streaming.silver.watermark_ms
    first_whole = first_ms - first_ms % 60_000 + 60_000
    warm_ms = first_ms + int(warmup_s * 1000)
    lo = max(first_whole, warm_ms - warm_ms % 60_000 + (60_000 if warm_ms % 60_000 else 0))
    hi = last_ms - watermark_ms  # minutes that can be final
    path = settings.table_path(tables.OHLCV.name)
    visible = hudi_visible(spark, settings, tables.OHLCV.name)
    bars = (
        read_table(spark, path)
        .filter(F.col("interval") == "1m")
        .withColumn("open_ms", F.unix_millis("open_time"))
        .filter((F.col("open_ms") >= first_whole) & (F.col("open_ms") + 60_000 <= hi))
        .select(F.col("_hoodie_commit_time").alias("commit"), "open_ms", "is_final")
        .join(visible, "commit")
        .collect()
    )
    every = sorted((b.visible_ms - (b.open_ms + 60_000)) / 1000 for b in bars if b.is_final)
    lags = sorted(
        (b.visible_ms - (b.open_ms + 60_000)) / 1000 for b in bars if b.is_final and b.open_ms >= lo
    )
    if not lags:
        return {"minutes": 0.0, "sent": float(sent)}
    return {
        "warmup_s": float(warmup_s),
        "all_minutes": float(len(every)),
        "all_p50_s": float(statistics.median(every)),
        "all_p99_s": float(percentile(every, 0.99)),
        "minutes": float(len(lags)),
        "not_final": float(sum(not b.is_final for b in bars if b.open_ms >= lo)),
        "p50_s": float(statistics.median(lags)),
        "p99_s": float(percentile(lags, 0.99)),
        "max_s": float(lags[-1]),
        "sent": float(sent),
        **end_to_end(spark, settings, lo, hi),
    }


def end_to_end(spark: SparkSession, settings: Settings, lo: int, hi: int) -> dict[str, float]:
    """Exchange time of every trade in the whole final minutes -> its final 1m bar visible,
    and -> that bar's gold_market_summary row visible."""
    minute = F.col("trade_ms") - F.col("trade_ms") % 60_000
    trades = (
        read_table(spark, settings.table_path(bronze.TRADES.name))
        .select("symbol", F.unix_millis("trade_time").alias("trade_ms"))
        .filter((F.col("trade_ms") >= lo) & (F.col("trade_ms") < hi))
        .withColumn("open_ms", minute)
    )

    def visible(table: str, *filters: Any) -> DataFrame:
        rows = read_table(spark, settings.table_path(table)).filter(F.col("interval") == "1m")
        for condition in filters:
            rows = rows.filter(condition)
        return rows.select(
            "symbol",
            F.unix_millis("open_time").alias("open_ms"),
            F.col("_hoodie_commit_time").alias("commit"),
        ).join(hudi_visible(spark, settings, table), "commit")

    bars = visible(tables.OHLCV.name, F.col("is_final")).withColumnRenamed("visible_ms", "bar_ms")
    gold_rows = visible(gold.MARKET_SUMMARY.name).withColumnRenamed("visible_ms", "gold_ms")
    joined = (
        trades.join(bars.drop("commit"), ["symbol", "open_ms"])
        .join(gold_rows.drop("commit"), ["symbol", "open_ms"], "left")
        .select(
            ((F.col("bar_ms") - F.col("trade_ms")) / 1000).alias("bar_s"),
            ((F.col("gold_ms") - F.col("trade_ms")) / 1000).alias("gold_s"),
        )
        .collect()
    )
    bar_s = sorted(r.bar_s for r in joined)
    gold_s = sorted(r.gold_s for r in joined if r.gold_s is not None)
    out = {"e2e_trades": float(len(bar_s)), "e2e_gold_trades": float(len(gold_s))}
    for name, values in (("e2e_bar", bar_s), ("e2e_gold", gold_s)):
        if values:
            out[f"{name}_p50_s"] = float(statistics.median(values))
            out[f"{name}_p99_s"] = float(percentile(values, 0.99))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.silver_bench")
    parser.add_argument("--loops", type=int, default=88, help="capture loops (88: 3.03M trades)")
    parser.add_argument(
        "--freshness-s", type=float, default=360, help="seconds of live trades (0: skip)"
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=120,
        help="freshness counts the minutes starting this long after the first live trade",
    )
    args = parser.parse_args(argv)
    shutil.rmtree(STATE, ignore_errors=True)
    write_test_conf(STATE / "conf")
    env = {**os.environ, "LAKE_CONF_DIR": str(STATE / "conf"), "STATE_DIR": str(STATE)}
    settings = load_settings(STATE / "conf", env)
    spark = session(settings)
    fresh: dict[str, float] = {}
    if args.freshness_s:
        live_env = {**env, "STATE_DIR": str(STATE / "live")}
        with kafka_running(live_env):
            fresh = freshness(
                spark, load_settings(STATE / "conf", live_env), args.freshness_s, args.warmup_s
            )
        print(f"freshness: {fresh}", file=sys.stderr)
    trades = write_backlog(spark, settings.table_path(bronze.TRADES.name), args.loops)
    print(f"{trades:,} trades in bronze_trades", file=sys.stderr)

    started = time.perf_counter()
    query: Any = start(spark, settings, once=True)
    query.awaitTermination()
    silver_s = time.perf_counter() - started
    assert query.exception() is None

    exported = STATE / "trades-parquet"
    read_table(spark, settings.table_path(bronze.TRADES.name)).select(
        "symbol", "trade_id", "price", "qty", "trade_time", "is_buyer_maker"
    ).write.parquet(str(exported))
    con = duckdb.connect()
    con.execute("SET threads = 2; SET TimeZone = 'UTC'")
    duck: list[Any] = []

    def run_duckdb() -> None:
        duck[:] = con.execute(DUCKDB_1M.format(path=exported)).fetchall()

    duckdb_s = median_time(run_duckdb)
    # Spark's floor on this machine: DuckDB's query in Spark, nothing else
    # (no Hudi, no fills, roll-ups or indicators), in the warm session.
    floor: list[Any] = []

    def run_spark_floor() -> None:
        source = spark.read.parquet(str(exported))
        floor[:] = B.minute_bars(B.trade_rows(source, "trades")).collect()

    floor_s = median_time(run_spark_floor)

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

    command = (
        f"python -m tests.bench.silver_bench --loops {args.loops} "
        f"--freshness-s {args.freshness_s:g} --warmup-s {args.warmup_s:g}"
    )
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "trades": trades,
        "bars_written": bars,
        "real_1m_bars": len(silver_1m),
        "silver_s": silver_s,
        "duckdb_1m_s": duckdb_s,
        "silver_trades_per_s": trades / silver_s,
        "duckdb_trades_per_s": trades / duckdb_s,
        "silver_over_duckdb": silver_s / duckdb_s,
        "spark_floor_1m_s": floor_s,
        "spark_floor_over_duckdb": floor_s / duckdb_s,
        "freshness": fresh,
        "driver_peak_rss_mb": peak,
        "machine": {"cores": os.cpu_count(), "memory_gb": round(memory_gb(), 1)},
    }
    section = "\n".join(
        [
            "## Silver: backfill from bronze_trades vs DuckDB",
            "",
            f"{report['date']}, {os.cpu_count()} cores, one SparkSession local[2], DuckDB 2 "
            f"threads; {trades:,} trades (the real capture looped {args.loops} times); command: "
            f"`{command}`.",
            "",
            "| measured | wall s | trades/s |",
            "|---|---|---|",
            f"| silver: 1m + 5m..1d bars, fills, indicators ({bars:,} rows upserted) | "
            f"{silver_s:,.1f} | {trades / silver_s:,.0f} |",
            f"| DuckDB: the same 1m OHLCV from Parquet ({len(duck_1m):,} bars, equal to "
            f"silver's) | {duckdb_s:,.2f} | {trades / duckdb_s:,.0f} |",
            f"| Spark alone: DuckDB's query from the same Parquet, same session (no Hudi, "
            f"fills, roll-ups or indicators) | {floor_s:,.2f} | {trades / floor_s:,.0f} |",
            f"| silver / DuckDB | {silver_s / duckdb_s:,.1f}x | |",
            f"| Spark alone / DuckDB: the floor of any Spark job here | "
            f"{floor_s / duckdb_s:,.1f}x | |",
            "",
            f"DuckDB and Spark alone: median of {TIMED_RUNS} runs each.",
            "",
            freshness_line(fresh, settings, args.freshness_s),
            "",
            f"Driver JVM peak RSS: {peak:.0f} MB.",
            "",
        ]
    )
    publish_results("silver", report, section)
    return 0


def freshness_line(fresh: dict[str, float], settings: Settings, seconds: float) -> str:
    if not fresh:
        return "Freshness: not measured (--freshness-s 0)."
    if not fresh.get("minutes"):
        return f"Freshness: no whole minute became final in {seconds:g} s of live trades."
    silver = settings.pipeline.streaming.silver
    return (
        f"Freshness at 1,000 trades/s (bronze, silver and gold running together; "
        f"{fresh['sent']:,.0f} trades over {seconds:g} s, bronze "
        f"trades trigger `{trades_trigger(settings)}`, silver trigger `{silver.trigger}`, "
        f"watermark `{silver.watermark}`): a minute's end -> its final 1m bar visible, over "
        f"the {fresh['minutes']:.0f} minutes starting {fresh['warmup_s']:g} s or more after the "
        f"first trade: p50 {fresh['p50_s']:.1f} s, p99 {fresh['p99_s']:.1f} s, "
        f"max {fresh['max_s']:.1f} s ({fresh['not_final']:.0f} whole minutes not final yet). "
        f"With the cold start's minutes ({fresh['all_minutes']:.0f} in all): "
        f"p50 {fresh['all_p50_s']:.1f} s, p99 {fresh['all_p99_s']:.1f} s."
        + end_to_end_line(fresh, settings)
    )


def end_to_end_line(fresh: dict[str, float], settings: Settings) -> str:
    if "e2e_bar_p50_s" not in fresh:
        return ""
    line = (
        f"\n\nEnd to end, over the {fresh['e2e_trades']:,.0f} trades of those minutes: a trade's "
        f"exchange time -> its final 1m bar visible p50 {fresh['e2e_bar_p50_s']:.1f} s, p99 "
        f"{fresh['e2e_bar_p99_s']:.1f} s"
    )
    if "e2e_gold_p50_s" in fresh:
        line += (
            f"; -> that bar's gold_market_summary row visible (gold trigger "
            f"`{settings.pipeline.streaming.gold.trigger}`) p50 {fresh['e2e_gold_p50_s']:.1f} s, "
            f"p99 {fresh['e2e_gold_p99_s']:.1f} s ({fresh['e2e_gold_trades']:,.0f} trades)"
        )
    return line + "."


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
