"""Live: the whole stack under live load, measured where the goals of December 2026 are.

    python -m tests.bench.live_bench                                 (make bench-live)
    python -m tests.bench.live_bench --storage minio                 (make bench-live)
    python -m tests.bench.live_bench --capture demo --minutes 11 --warmup-s 480 (make bench-cpu)
    python -m tests.bench.live_bench --minutes 135 --soak            (make soak)

The stack runs as `make up` runs it (tests/chaos/stack.py: Kafka, MinIO,
Prometheus, the replay exchange, the producer and the three drivers, each
under its supervisor), on a state dir and ports of its own. The replay
exchange serves either the market of tests/bench/market.py (`--symbols`
symbols of real frames' shape, trade and kline_1m, about `--trades-per-s`
trades/s in aggregate) or, with `--capture demo`, the real BTCUSDT and
ETHUSDT capture `make demo` plays, at real speed.

Measured, from `--warmup-s` after the start to the end of the run:

- freshness: every symbol's whole minutes, its end -> its 1m bar visible as
  final (the commit's completion on silver's timeline); a minute never
  final counts with its age at the end (market_bench.freshness);
- trade -> its rows: a sampler reads silver's and gold's current 1m rows
  (hudi-rs, every SAMPLER_S) and keeps when each version of a bar was first
  seen; for every trade of the counted minutes, the first silver version of
  its bar holding it (last_trade_id at or above its id), and the first
  gold_market_summary version at or above that one's volume, minus the
  trade's exchange time on the wall clock (the sampler's period is its
  resolution);
- CPU: cores per process of the stack, from /proc (utime + stime, with the
  children that ended: Hadoop's forked commands, exited workers), the
  replay exchange apart (it stands in for Binance);
- each query's batch durations, from the layers' logs;
- delivered rates: records that reached the trade and kline topics at the
  broker, per second;
- keeps up: each stage's backlog (market_bench.verdict: not growing over
  the last third, no slack);
- with `--soak`: each query's median batch duration in the first 15
  minutes after the warm-up against the last 15, and the files per table
  over time.

Results: docs/bench/live[-<variant>].json and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import threading
import time
from typing import Any

from pyspark.sql import functions as F

from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common import lakefiles
from streaming_jobs.common.hudi import read_table, table_exists
from streaming_jobs.common.settings import PROJECT_ROOT, Settings
from streaming_jobs.gold import tables as gold
from streaming_jobs.silver import tables as silver
from tests.bench import jvm_threads, market
from tests.bench.bronze_bench import session
from tests.bench.jvm_threads import ThreadProfile, driver_pids
from tests.bench.market_bench import (
    LOOP_MINUTES,
    START_MS,
    TUNING,
    Phase,
    batch_log,
    cores,
    delivered_per_s,
    freshness,
    log,
    market_conf,
    peak_rss_by_process,
    spread,
    stack_cores_by_minute,
    stages,
)
from tests.bench.producer_bench import memory_gb
from tests.bench.results import publish_results
from tests.chaos.stack import write_conf
from tests.conftest import write_test_conf
from tests.demo import CAPTURES

# Every port below 32768, where Linux's ephemeral ports begin: at +31000 an outgoing
# connection once held gold's UI port (35042) as the driver started, its UI moved
# to 35043, and the start-up check, asking 35042, gave up after 120 s.
PORT_SHIFT = 22000
SAMPLER_S = 1.0
SOAK_WINDOW_S = 15 * 60
FILES_EVERY_S = 60
GOALS = {"fresh_p99_s": 20.0, "gold_p99_s": 45.0, "cores": 1.0, "soak_ratio": 1.2}


class Sampler:
    """When each version of a bar first showed in silver and in gold (a thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # (symbol, open_ms) -> [(seen ms, last_trade_id, updated_ms)] / [(seen ms, bar_updated_ms)]
        self.silver: dict[tuple[str, int], list[tuple[float, int, int]]] = {}
        self.gold: dict[tuple[str, int], list[tuple[float, int]]] = {}
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLER_S):
            try:
                if silver.OHLCV.name not in lakefiles.tables(self.settings):
                    continue
                periods = [
                    p.split("period=")[1]
                    for p in lakefiles.partitions(self.settings, silver.OHLCV.name)
                    if p.startswith("interval=1m/")
                ]
                if not periods:
                    continue
                filters = [("interval", "=", "1m"), ("period", "=", max(periods))]
                rows = lakefiles.latest_rows(
                    self.settings,
                    silver.OHLCV.name,
                    filters,
                    ["symbol", "open_time", "last_trade_id", "updated_ms"],
                )
                seen = time.time() * 1000
                for r in rows:
                    if r["last_trade_id"] is not None:
                        versions = self.silver.setdefault(_key(r), [])
                        if not versions or versions[-1][2] != r["updated_ms"]:
                            versions.append((seen, r["last_trade_id"], r["updated_ms"]))
                rows = lakefiles.latest_rows(
                    self.settings,
                    gold.MARKET_SUMMARY.name,
                    filters,
                    ["symbol", "open_time", "bar_updated_ms"],
                )
                seen = time.time() * 1000
                for r in rows:
                    versions_g = self.gold.setdefault(_key(r), [])
                    if not versions_g or versions_g[-1][1] != r["bar_updated_ms"]:
                        versions_g.append((seen, r["bar_updated_ms"]))
                self.reads += 1
            except Exception as err:  # a table not written yet, a file replaced meanwhile
                log(f"sampler: {err!r}"[:200])


def _key(row: dict[str, Any]) -> tuple[str, int]:
    when = row["open_time"]
    return row["symbol"], int(when.replace(tzinfo=dt.UTC).timestamp() * 1000)


def trade_to_rows(spark: Any, phase: Phase, sampler: Sampler, lo: int, hi: int) -> dict[str, Any]:
    """Every trade of the minutes [lo, hi): its exchange time -> the first silver version of
    its bar holding it, and -> the first gold_market_summary version reflecting that."""
    trades = (
        read_table(spark, phase.settings.table_path(bronze.TRADES.name))
        .select("symbol", "trade_id", F.unix_millis("trade_time").alias("ms"))
        .filter((F.col("ms") >= lo) & (F.col("ms") < hi))
        .collect()
    )
    to_silver, to_gold, unseen = [], [], 0
    for t in trades:
        minute = t.ms - t.ms % 60_000
        versions = sampler.silver.get((t.symbol, minute), [])
        holding = next((v for v in versions if v[1] >= t.trade_id), None)
        if holding is None:
            unseen += 1
            continue
        at = phase.to_wall_ms(t.ms)
        to_silver.append((holding[0] - at) / 1000)
        reflected = next(
            (g for g in sampler.gold.get((t.symbol, minute), []) if (g[1] or 0) >= holding[2]),
            None,
        )
        if reflected is not None:
            to_gold.append((reflected[0] - at) / 1000)
    return {
        "trades": len(trades),
        "not_seen_in_silver": unseen,
        "not_seen_in_gold": len(trades) - unseen - len(to_gold),
        "to_silver_s": spread(to_silver),
        "to_gold_s": spread(to_gold),
        "sampler_reads": sampler.reads,
    }


def batch_spread(settings: Settings, since: float, until: float) -> dict[str, dict[str, float]]:
    """Each query's batch durations (s) over [since, until) (epoch s)."""
    by_query: dict[str, list[float]] = {}
    for at, query, _batch, seconds in batch_log(settings):
        if since <= at < until:
            by_query.setdefault(query, []).append(seconds)
    return {q: spread(v) for q, v in sorted(by_query.items())}


def start_up(settings: Settings, started: float) -> dict[str, dict[str, float]]:
    """Each query's first batch after the start: when it ended (s after the start) and
    how long it took. Gold's first batches read a day of context and count days in
    full; the warm-up should end after them, and they are reported here instead."""
    first: dict[str, dict[str, float]] = {}
    for at, query, _batch, seconds in batch_log(settings):
        if at >= started and query not in first:
            first[query] = {"ended_s": round(at - started, 1), "took_s": round(seconds, 1)}
    return dict(sorted(first.items()))


def files_per_table(settings: Settings) -> dict[str, int]:
    """Current files (base and log) of every table: what a reader lists."""
    out = {}
    for table in lakefiles.tables(settings):
        try:
            out[table] = len(lakefiles.current_files(settings, table))
        except Exception:  # a table mid-commit; the next sample counts it
            continue
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.live_bench")
    parser.add_argument("--capture", choices=("market", "demo"), default="market")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--trades-per-s", type=float, default=1000.0)
    parser.add_argument("--minutes", type=float, default=15.0)
    # Past the start-up: gold's first batches (a day of context, days counted in full)
    # end about 200 s after the start at 1,000 trades/s (the report's start_up).
    parser.add_argument("--warmup-s", type=float, default=300.0)
    parser.add_argument("--storage", choices=("local", "minio"), default="local")
    parser.add_argument("--soak", action="store_true")
    parser.add_argument("--no-sampler", action="store_true")
    args = parser.parse_args(argv)
    variant = "-".join(
        x
        for x in (
            "soak" if args.soak else "",
            "cpu" if args.capture == "demo" else "",
            args.storage if args.storage != "local" else "",
        )
        if x
    )
    name = "live" + (f"-{variant}" if variant else "")
    command = "python -m tests.bench.live_bench " + " ".join(argv)
    state = PROJECT_ROOT / ".state" / f"bench-{name}"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    write_test_conf(state / "shared-conf", shift=PORT_SHIFT, for_tests=False)
    if args.capture == "market":
        capture = state / "market.gz"
        market.write(
            capture,
            market.generate(CAPTURES, args.symbols, args.trades_per_s, LOOP_MINUTES, START_MS),
        )
        captures = [capture]
        conf = market_conf(
            state / "shared-conf", state / "run-conf", "run", args.symbols, args.storage
        )
    else:
        captures = CAPTURES
        conf = write_conf(state / "shared-conf", state / "run-conf", "run", args.storage, TUNING)
    phase = Phase("run", captures, conf, 1, args.minutes, state)
    settings = phase.settings
    files: list[tuple[float, dict[str, int]]] = []
    # CPU per driver thread (tests/bench/jvm_threads.py), over the measured window.
    profiles: list[ThreadProfile] = []
    threads: dict[str, Any] = {}

    def on_sample(sample: dict[str, Any]) -> None:
        # Files per table once a minute (each count reads every table's file slices).
        if args.soak and (not files or sample["t_s"] - files[-1][0] >= FILES_EVERY_S):
            files.append((sample["t_s"], files_per_table(settings)))
        if not profiles and sample["t_s"] >= args.warmup_s:
            profiles.append(ThreadProfile(driver_pids(state)).start())

    def before_stop() -> None:
        if profiles:
            threads.update(profiles[0].stop())

    phase.on_sample, phase.before_stop = on_sample, before_stop
    sampler = None
    started_wall = time.time()
    ran = False
    try:
        if not args.no_sampler:
            sampler = Sampler(settings)
            sampler.start()
        phase.run()
        ran = True
    finally:
        if sampler is not None:
            sampler.stop()
        phase.stack.stop()
        if not ran:  # Kafka, MinIO and Prometheus too: a failed run leaves nothing running
            phase.stack.script("services", "down")
    ended_wall = time.time()
    spark = session(settings)
    try:
        fresh = freshness(spark, phase, args.warmup_s)
        ex_start = min(ex for _, ex in phase.clock)
        ex_end = max(ex for _, ex in phase.clock)
        lo = ex_start + int(args.warmup_s * 1000)
        lo += -lo % 60_000
        hi = ex_end - 120_000
        hi -= hi % 60_000
        rows = trade_to_rows(spark, phase, sampler, lo, hi) if sampler else {}
        tables_present = {
            t: table_exists(spark, settings.table_path(t))
            for t in (silver.OHLCV.name, gold.MARKET_SUMMARY.name)
        }
    finally:
        spark.stop()
        phase.stack.script("services", "down")
    since = started_wall + args.warmup_s
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": {"cores": os.cpu_count(), "memory_gb": round(memory_gb(), 1)},
        "capture": args.capture,
        "symbols": args.symbols if args.capture == "market" else 2,
        "storage": args.storage,
        "minutes": args.minutes,
        "warmup_s": args.warmup_s,
        "triggers": {
            "bronze_fast": settings.pipeline.streaming.bronze.fast_trigger,
            "bronze": settings.pipeline.streaming.bronze.trigger,
            "silver": settings.pipeline.streaming.silver.trigger,
            "gold": settings.pipeline.streaming.gold.trigger,
            "gold_quality": settings.pipeline.streaming.gold.quality_trigger,
        },
        "delivered_per_s": {
            t: delivered_per_s(phase.samples, settings.topic(t).name)
            for t in ("trade", "kline", "bookTicker", "depth")
        },
        "stages": stages(phase.samples, settings),
        "freshness": fresh,
        "trade_to_rows": rows,
        "tables_written": tables_present,
        "cores": cores(phase.samples, args.warmup_s),
        "stack_cores_by_minute": stack_cores_by_minute(phase.samples),
        "driver_threads": threads,
        "batches_s": batch_spread(settings, since, ended_wall),
        "start_up": start_up(settings, started_wall),
        "peak_rss_mb": max((s["rss_total_mb"] for s in phase.samples), default=0),
        "peak_rss_by_process_mb": peak_rss_by_process(phase.samples),
        "goals": GOALS,
    }
    if args.soak:
        first = (since, since + SOAK_WINDOW_S)
        last = (ended_wall - SOAK_WINDOW_S, ended_wall)
        report["soak"] = {
            "first_window": batch_spread(settings, *first),
            "last_window": batch_spread(settings, *last),
            "files": files,
        }
    report["name"] = name
    publish_results(name, report)
    return 0


def _uncounted(r: dict[str, Any]) -> str:
    """The final minutes the freshness figures leave out (their commit archived), if any."""
    fresh = r["freshness"]
    if "archived" in fresh:
        return (
            f" Not counted: {fresh['archived']:,} final minutes whose commit had left Hudi's "
            "active timeline (archived) before the read, so when they became visible is not "
            "known."
            if fresh["archived"]
            else ""
        )
    # Runs before the harness counted them: the window's minutes against those counted.
    window = (r["minutes"] * 60 - r["warmup_s"]) // 60 - 2
    expected = int(window * fresh.get("symbols", 0))
    if r.get("soak") and fresh.get("bars", 0) < expected // 2:
        return (
            f" Only the last minutes are counted ({fresh.get('bars', 0):,} of about "
            f"{expected:,} in the window): this run's harness took when a bar became visible "
            "from Hudi's active timeline alone, which keeps only the latest commits, and left "
            "out the minutes whose commit had been archived, neither late nor fresh."
        )
    return ""


def render(r: dict[str, Any]) -> str:
    name = r.get("name", "live")
    title = {
        "live": "## Live: the whole stack at 1,000 trades/s",
        "live-minio": "## Live on MinIO: the whole stack at 1,000 trades/s, lake on MinIO",
        "live-cpu": "## Live, CPU: `make demo` at real speed",
        "live-soak": "## Live, soak: the whole stack at 1,000 trades/s for hours",
    }.get(name, f"## {name}")
    load = (
        f"{r['symbols']:,} symbols of tests/bench/market.py (trade, kline_1m)"
        if r["capture"] == "market"
        else "the real BTCUSDT and ETHUSDT capture `make demo` plays"
    )
    lines = [
        title,
        "",
        f"{r['date']}, {r['machine']['cores']} cores, {r['machine']['memory_gb']} GB; "
        f"command: `{r['command']}`. The stack as `make up` runs it (Kafka, MinIO, "
        f"Prometheus, producer, bronze, silver, gold, each supervised), lake on "
        f"{r['storage']}, replaying {load} for {r['minutes']:g} min; figures from "
        f"{r['warmup_s']:g} s after the start. Triggers: "
        + ", ".join(f"{q} `{t}`" for q, t in r["triggers"].items())
        + ". Delivered at the broker (records/s): "
        + ", ".join(f"{t} {v:,.0f}" for t, v in r["delivered_per_s"].items() if v)
        + ".",
        "",
    ]
    fresh = r["freshness"]
    age = fresh.get("age_s", {})
    lines += [
        "| measure | n | p50 s | p99 s | max s | goal |",
        "|---|---|---|---|---|---|",
        f"| minute end -> final 1m bar (never final: its age at the end) | {age.get('n', 0):,} "
        f"| {_v(age.get('p50'))} | {_v(age.get('p99'))} | {_v(age.get('max'))} | "
        f"p99 <= {GOALS['fresh_p99_s']:g} s |",
    ]
    rows = r.get("trade_to_rows") or {}
    for key, label, goal in (
        ("to_silver_s", "trade -> its 1m bar holding it (silver)", ""),
        ("to_gold_s", "trade -> its gold_market_summary row", f"p99 <= {GOALS['gold_p99_s']:g} s"),
    ):
        v = rows.get(key, {})
        if v:
            lines.append(
                f"| {label} | {v.get('n', 0):,} | {_v(v.get('p50'))} | {_v(v.get('p99'))} | "
                f"{_v(v.get('max'))} | {goal} |"
            )
    for query, v in r["batches_s"].items():
        lines.append(
            f"| batch duration, {query} | {v.get('n', 0):,} | {_v(v.get('p50'))} | "
            f"{_v(v.get('p99'))} | {_v(v.get('max'))} | |"
        )
    if r.get("start_up"):
        lines += [
            "",
            "Start-up, before the figures above (each query's first batch: ended s after "
            "the start, took s): "
            + ", ".join(f"{q} {v['ended_s']:g} / {v['took_s']:g}" for q, v in r["start_up"].items())
            + ".",
        ]
    lines += [
        "",
        f"Minutes counted: {fresh.get('bars', 0):,} over {fresh.get('symbols', 0)} symbols; "
        f"{fresh.get('final', 0):,} final, {fresh.get('not_final', 0):,} written but not "
        f"final, {fresh.get('missing', 0):,} never written; {fresh.get('filled', 0):,} of the "
        f"final ones trade-less."
        + _uncounted(r)
        + (
            f" Trades counted: {rows.get('trades', 0):,} ({rows.get('not_seen_in_silver', 0):,} "
            f"never seen in silver, {rows.get('not_seen_in_gold', 0):,} never in gold; the "
            f"sampler read both tables {rows.get('sampler_reads', 0):,} times, every "
            f"{SAMPLER_S:g} s)."
            if rows
            else ""
        ),
        "",
        "CPU (cores, from /proc, each process with its children that ended; `stack` is every "
        "process but the replay exchange): "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["cores"].items())
        + f". Peak RSS of the stack: {r['peak_rss_mb']:,} MB"
        + (
            " (each process's peak: "
            + ", ".join(f"{k} {v:,}" for k, v in r["peak_rss_by_process_mb"].items())
            + ")"
            if r.get("peak_rss_by_process_mb")
            else ""
        )
        + ".",
        "",
        *(
            [
                "The stack's cores minute by minute from the start (the warm-up is the "
                "JVMs' JIT compiling): "
                + ", ".join(f"{v:.2f}" for v in r["stack_cores_by_minute"])
                + ".",
                "",
            ]
            if r.get("stack_cores_by_minute")
            else []
        ),
        *(
            [
                "Where each driver's CPU goes, by JVM thread (`python -m tests.bench.jvm_threads` "
                "over the same window; tasks are the data work, the stream execution thread "
                "plans, generates code and keeps Hudi's books, CompilerThread is the JIT):",
                "",
                *jvm_threads.render(r["driver_threads"]),
                "",
            ]
            if r.get("driver_threads", {}).get("window_s")
            else []
        ),
        "Keeps up (the backlog's trend over the last third not above zero by more than twice "
        "its standard error): "
        + "; ".join(
            f"{stage} {'yes' if v.get('keeps_up') else 'no (' + str(v.get('why')) + ')'}"
            for stage, v in r["stages"].items()
        )
        + ".",
        "",
    ]
    soak = r.get("soak")
    if soak:
        lines += [
            "| query | batches, first 15 min | median s | batches, last 15 min | median s | "
            f"last / first (goal <= {GOALS['soak_ratio']:g}) |",
            "|---|---|---|---|---|---|",
        ]
        for query, first in soak["first_window"].items():
            last = soak["last_window"].get(query, {})
            ratio = last["p50"] / first["p50"] if first.get("p50") and last.get("p50") else None
            lines.append(
                f"| {query} | {first.get('n', 0):,} | {_v(first.get('p50'))} | "
                f"{last.get('n', 0):,} | {_v(last.get('p50'))} | {_v(ratio)} |"
            )
        files = soak["files"]
        if files:
            first_files, last_files = files[0][1], files[-1][1]
            peak = {t: max(f.get(t, 0) for _, f in files) for t in last_files}
            lines += [
                "",
                "Files per table (current base and log files), first sample -> last (peak): "
                + ", ".join(
                    f"{t} {first_files.get(t, 0)} -> {n} ({peak[t]})"
                    for t, n in sorted(last_files.items())
                )
                + ".",
            ]
        lines.append("")
    return "\n".join(lines)


def _v(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
