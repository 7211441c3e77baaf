"""Hudi write paths, one factor at a time, per commit, at 2, 200 and 2,000 symbols.

    python -m tests.bench.write_paths                  (make bench-write)
    python -m tests.bench.write_paths --only today,date --symbols 2,200

Two row shapes, written the way the jobs write them (`df.write.format("hudi")`,
one commit per call, rows materialised before the clock starts):

- `trades`: immutable rows with bronze_trades' key (symbol, trade_id) and
  columns; each commit is one second of a market trading ROWS[n] trades
  spread evenly over n symbols, ids increasing per symbol;
- `bars`: mutable rows with silver_ohlcv's key (symbol, interval,
  open_time); each commit is one 10 s silver batch: every symbol's current
  bar of each of six intervals (1m .. 1d), updated in place and a new key
  whenever a bucket begins.

Values are synthetic (the shape, not the market, is what a write path
costs). Each variant starts from the December 2026 configuration (`today`:
copy-on-write upsert, Spark's default SIMPLE index, partitioned by symbol and
date or interval) and changes one factor, or the combination a table uses now
(`chosen`: the project's own `write_options`). Every (shape, variant) runs
in a fresh JVM (local[2], the jobs' Spark conf) over fresh tables, symbol
counts in increasing order; a symbol count whose commits do not finish
within the cap is reported as "> cap" with the commits it did finish. The
first WARM commits of each run are not counted (table creation, JIT).

Per commit: the wall time, and the time of its Spark jobs grouped by what
Hudi was doing (its job group: tagging the index, the workload profile,
writing files, committing, cleaning, compaction, clustering...); "driver"
is the wall time no job covered (timeline, listing, planning on the
driver). Results: docs/bench/write_paths.json and its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from streaming_jobs.common.hudi import HudiTable, write_options
from streaming_jobs.common.settings import PROJECT_ROOT, load_settings

STATE = PROJECT_ROOT / ".state" / "bench-write"
SYMBOLS = (2, 200, 2000)
# Rows per commit by symbol count: about one second of the market's trades.
ROWS = {2: 1_000, 200: 10_000, 2000: 20_000}
COMMITS = 10
WARM = 3
CAP_S = 150.0
INTERVALS = (
    ("1m", 60_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("4h", 14_400_000),
    ("1d", 86_400_000),
)
T0_MS = 1_733_011_200_000  # 2024-12-01T00:00:00Z

# -- the configurations ---------------------------------------------------------------


def _today(table: HudiTable) -> dict[str, str]:
    """The December 2026 options: write_options' defaults (copy-on-write upsert, Spark's
    default SIMPLE index, Hudi's small-file packing) with the layout of then."""
    return {k: v for k, v in write_options(table).items() if k != "hoodie.table.name"}


TODAY = {
    "trades": _today(HudiTable("t", ("symbol", "trade_id"), "recv_ns", ("symbol", "date"))),
    "bars": _today(
        HudiTable("b", ("symbol", "interval", "open_time"), "updated_ms", ("symbol", "interval"))
    ),
}
# The one partition column each shape keeps when the symbol leaves the path.
COARSE = {"trades": "date", "bars": "interval"}
_BUCKET = {"hoodie.index.type": "BUCKET", "hoodie.bucket.index.num.buckets": "4"}
_MOR = {
    "hoodie.datasource.write.table.type": "MERGE_ON_READ",
    "hoodie.compact.inline": "false",
    "hoodie.datasource.compaction.async.enable": "false",
}
_PARALLELISM = {
    key: "2"
    for key in (
        "hoodie.upsert.shuffle.parallelism",
        "hoodie.insert.shuffle.parallelism",
        "hoodie.bulkinsert.shuffle.parallelism",
        "hoodie.finalize.write.parallelism",
        "hoodie.markers.delete.parallelism",
        "hoodie.bloom.index.parallelism",
        "hoodie.clean.parallelism",
        "hoodie.simple.index.parallelism",
    )
}
# From the coarse layout, one factor at a time (name -> (shapes, change)). Spark's default
# index, and so today's, is SIMPLE (a join with the keys of every base file of the
# partitions touched); insert does not combine duplicates within a batch unless asked.
FACTORS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "insert": (("trades",), {"hoodie.datasource.write.operation": "insert"}),
    "insert_combine": (
        ("trades",),
        {"hoodie.datasource.write.operation": "insert", "hoodie.combine.before.insert": "true"},
    ),
    "insert_drop": (
        ("trades",),
        {
            "hoodie.datasource.write.operation": "insert",
            "hoodie.datasource.insert.dup.policy": "drop",
        },
    ),
    "insert_drop_bloom": (
        ("trades",),
        {
            "hoodie.datasource.write.operation": "insert",
            "hoodie.datasource.insert.dup.policy": "drop",
            "hoodie.index.type": "BLOOM",
        },
    ),
    "bloom": (("trades", "bars"), {"hoodie.index.type": "BLOOM"}),
    "mor": (("trades", "bars"), _MOR),
    "mor_bucket": (("trades", "bars"), {**_MOR, **_BUCKET}),
    "mor_bucket_compact5": (
        ("trades", "bars"),
        {
            **_MOR,
            **_BUCKET,
            "hoodie.compact.inline": "true",
            "hoodie.compact.inline.max.delta.commits": "5",
        },
    ),
    "cow_bucket": (("trades", "bars"), _BUCKET),
    "record_index": (
        ("trades", "bars"),
        {
            "hoodie.metadata.enable": "true",
            "hoodie.metadata.record.level.index.enable": "true",
            "hoodie.index.type": "RECORD_LEVEL_INDEX",
        },
    ),
    "no_small_files": (("trades", "bars"), {"hoodie.parquet.small.file.limit": "0"}),
    "metadata": (("trades", "bars"), {"hoodie.metadata.enable": "true"}),
    "parallelism_2": (("trades", "bars"), _PARALLELISM),
}


def configurations(shape: str) -> dict[str, dict[str, str]]:
    """Every variant of a shape: today, the coarse layout, one factor each, and chosen."""
    today = TODAY[shape]
    coarse = {**today, "hoodie.datasource.write.partitionpath.field": COARSE[shape]}
    out = {"today": today, COARSE[shape]: coarse}
    for name, (shapes, change) in FACTORS.items():
        if shape in shapes:
            out[name] = {**coarse, **change}
    out["chosen"] = chosen(shape)
    # The chosen path with its commit's own jobs sized for two cores (one factor on it).
    out["chosen_parallelism_2"] = {**out["chosen"], **_PARALLELISM}
    return out


def chosen(shape: str) -> dict[str, str]:
    """The options the project writes this shape's table with now."""
    from streaming_jobs.bronze import tables as bronze
    from streaming_jobs.common.hudi import write_options
    from streaming_jobs.silver import tables as silver

    table = bronze.TRADES if shape == "trades" else silver.OHLCV
    return write_options(table)


# -- the child: one JVM, one (shape, variant), every symbol count ----------------------


def _trades(spark: Any, symbols: int, rows: int, commit: int) -> Any:
    from pyspark.sql import functions as F, types as T

    price = T.DecimalType(28, 8)
    n = F.col("id")
    ms = F.lit(T0_MS + commit * 1000) + (n * 1000 / rows).cast("long")
    return spark.range(rows).select(
        F.format_string("S%04dUSDT", n % symbols).alias("symbol"),
        (F.lit(commit * rows) + n).alias("trade_id"),
        (F.lit(60000) + (n % 100) / 100).cast(price).alias("price"),
        (F.lit(0.001) * (n % 7 + 1)).cast(price).alias("qty"),
        F.timestamp_millis(ms).alias("trade_time"),
        F.timestamp_millis(ms + 1).alias("event_time"),
        (n % 2 == 0).alias("is_buyer_maker"),
        F.lit(True).alias("is_best_match"),
        F.format_string("s%04dusdt@trade", n % symbols).alias("stream"),
        (ms * 1_000_000 + 5_000_000).alias("recv_ns"),
        F.lit("binance.trade").alias("kafka_topic"),
        (n % 3).cast("int").alias("kafka_partition"),
        (F.lit(commit * rows) + n).alias("kafka_offset"),
        F.timestamp_millis(ms + 5).alias("recv_time"),
        F.timestamp_millis(ms + 900).alias("ingest_time"),
        F.lit(False).alias("backfill"),
        F.to_date(F.timestamp_millis(ms)).alias("date"),
    )


def _bars(spark: Any, symbols: int, commit: int) -> Any:
    from pyspark.sql import functions as F, types as T

    price, total = T.DecimalType(28, 8), T.DecimalType(38, 8)
    now = T0_MS + commit * 10_000
    intervals = spark.createDataFrame(list(INTERVALS), "interval string, step long")
    sym = spark.range(symbols).select(F.format_string("S%04dUSDT", "id").alias("symbol"), "id")
    move = (F.col("id") % 100 + commit) / 100
    return sym.crossJoin(intervals).select(
        "symbol",
        "interval",
        F.timestamp_millis(F.lit(now) - F.lit(now) % F.col("step")).alias("open_time"),
        F.timestamp_millis(F.lit(now) - F.lit(now) % F.col("step") + F.col("step") - 1).alias(
            "close_time"
        ),
        *[(F.lit(60000) + move + k).cast(price).alias(c) for k, c in enumerate("ohlc")],
        (F.lit(commit) * 1.5).cast(total).alias("volume"),
        (F.lit(commit) * 90000).cast(total).alias("quote_volume"),
        F.lit(commit * 10).cast("long").alias("trade_count"),
        *[F.lit(0.5).cast("double").alias(c) for c in ("sma_20", "ema_12", "ema_26", "rsi_14")],
        F.lit(False).alias("is_final"),
        F.lit(now).alias("updated_ms"),
    )


def _jobs_between(spark: Any, since_ms: int, until_ms: int) -> list[tuple[str, float, float]]:
    """(Hudi's job group or description, start s, end s) of the jobs run in the window."""
    store = spark.sparkContext._jsc.sc().statusStore()
    jobs = spark.sparkContext._jvm.scala.collection.JavaConverters.seqAsJavaList(
        store.jobsList(None)
    )
    out = []
    for job in jobs:
        submitted, completed = job.submissionTime(), job.completionTime()
        if submitted.isEmpty() or completed.isEmpty():
            continue
        start, end = submitted.get().getTime(), completed.get().getTime()
        if start < since_ms or start > until_ms:
            continue
        group, description = job.jobGroup(), job.description()
        if not group.isEmpty():
            name = str(group.get())
        elif not description.isEmpty():
            name = str(description.get())
        else:
            name = str(job.name())
        out.append((name, start / 1000, end / 1000))
    return out


def breakdown(
    jobs: list[tuple[str, float, float]], started: float, ended: float
) -> dict[str, float]:
    """Seconds per activity; `driver`: the commit's wall time no Spark job covered."""
    phases: dict[str, float] = {}
    covered: list[tuple[float, float]] = []
    for name, start, end in jobs:
        phase = activity(name)
        phases[phase] = phases.get(phase, 0.0) + (end - start)
        covered.append((max(start, started), min(end, ended)))
    busy, edge = 0.0, started
    for start, end in sorted(covered):
        if end > edge:
            busy += end - max(start, edge)
            edge = end
    phases["driver"] = max(0.0, (ended - started) - busy)
    return {k: round(v, 3) for k, v in sorted(phases.items())}


# Hudi's job groups ("Class:what it does", HoodieEngineContext.setJobStatus) by step. The
# files are written lazily, in the job that collects the write statuses ("Committing stats").
_ACTIVITIES = (
    ("clustering", ("lustering",)),
    ("compaction", ("ompact",)),
    ("clean", ("lean",)),
    ("archive", ("rchiv",)),
    ("metadata", ("etadata", "HoodieBackedTableMetadata")),
    ("index", ("Tagging", "HoodieIndexUtils", "ndex", "key ranges", "loom")),
    ("profile", ("workload profile",)),
    ("small_files", ("small files",)),
    ("write", ("Committing stats", "Doing partition", "writing data")),
    ("finalize", ("arker", "listing paths", "invalid files", "inalize")),
)


def activity(name: str) -> str:
    for phase, needles in _ACTIVITIES:
        if any(n in name for n in needles):
            return phase
    return "other"


def child(shape: str, variant: str, symbol_counts: list[int], commits: int) -> None:
    """Print one JSON line per commit; the parent times out a symbol count that stalls."""
    from pyspark.sql import SparkSession

    from streaming_jobs.common.spark import session_conf

    os.environ["TZ"] = "UTC"
    settings = load_settings()
    conf = {**session_conf(settings, "sql"), "spark.master": "local[2]"}
    conf["spark.app.name"] = f"bench-write-{shape}-{variant}"
    conf["spark.ui.showConsoleProgress"] = "false"
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    options = configurations(shape)[variant]
    for symbols in symbol_counts:
        path = STATE / shape / variant / str(symbols)
        shutil.rmtree(path, ignore_errors=True)
        name = f"bench_{shape}_{variant}_{symbols}"
        for commit in range(commits):
            if shape == "trades":
                df = _trades(spark, symbols, ROWS[symbols], commit)
            else:
                df = _bars(spark, symbols, commit)
            df = df.cache()
            rows = df.count()
            since_ms = int(time.time() * 1000)
            started = time.time()
            (
                df.write.format("hudi")
                .options(**{**options, "hoodie.table.name": name})
                .mode("append")
                .save(str(path))
            )
            ended = time.time()
            df.unpersist()
            jobs = _jobs_between(spark, since_ms - 1, int(ended * 1000) + 1)
            line = {
                "symbols": symbols,
                "commit": commit,
                "rows": rows,
                "seconds": round(ended - started, 3),
                "jobs": len(jobs),
                "breakdown": breakdown(jobs, started, ended),
            }
            print(json.dumps(line), flush=True)
        files = sum(1 for p in path.rglob("*") if p.is_file() and "/.hoodie" not in str(p))
        print(json.dumps({"symbols": symbols, "done": True, "files": files}), flush=True)
    spark.stop()


# -- the parent ------------------------------------------------------------------------


def _lines(proc: subprocess.Popen[str], deadline: float) -> Iterator[dict[str, Any] | None]:
    """JSON lines of the child; None once `deadline` (monotonic) passes with none."""
    assert proc.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            yield None
            return
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            return
        if line.startswith("{"):
            yield json.loads(line)


def run_variant(
    shape: str, variant: str, symbol_counts: list[int], commits: int, cap_s: float
) -> dict[str, Any]:
    """Each symbol count's commits, or what finished of them within cap_s."""
    command = [
        sys.executable,
        "-m",
        "tests.bench.write_paths",
        "--child",
        f"{shape}:{variant}",
        "--symbols",
        ",".join(map(str, symbol_counts)),
        "--commits",
        str(commits),
    ]
    log_path = STATE / f"{shape}-{variant}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        runs: dict[str, Any] = {}
        try:
            for symbols in symbol_counts:
                commits_seen: list[dict[str, Any]] = []
                # The JVM's start counts against nobody: the cap starts at the first commit's
                # begin, which the child reports by finishing it or not.
                deadline = time.monotonic() + cap_s + (60 if not runs else 0)
                result: dict[str, Any] = {"capped": False, "failed": True}
                for line in _lines(proc, deadline):
                    if line is None:
                        result = {"capped": True}
                        break
                    if line.get("done"):
                        result = {"capped": False, "files": line["files"]}
                        break
                    commits_seen.append(line)
                runs[str(symbols)] = summarize(commits_seen, result)
                print(f"{shape} {variant} {symbols}: {render_cell(runs[str(symbols)])}", flush=True)
                if result["capped"] or result.get("failed"):
                    break
        finally:
            proc.kill()
            proc.wait()
    return runs


def summarize(commits: list[dict[str, Any]], result: dict[str, Any]) -> dict[str, Any]:
    counted = commits[WARM:]
    out: dict[str, Any] = {**result, "commits": len(commits), "counted": len(counted)}
    if counted:
        seconds = [c["seconds"] for c in counted]
        out["median_s"] = round(statistics.median(seconds), 3)
        out["max_s"] = round(max(seconds), 3)
        out["rows"] = counted[0]["rows"]
        phases = sorted({k for c in counted for k in c["breakdown"]})
        out["breakdown_median_s"] = {
            k: round(statistics.median(c["breakdown"].get(k, 0.0) for c in counted), 3)
            for k in phases
        }
    elif commits:
        out["max_s"] = round(max(c["seconds"] for c in commits), 3)
    return out


def render_cell(run: dict[str, Any] | None, cap_s: float = CAP_S) -> str:
    if run is None:
        return "-"
    if run.get("failed"):
        return f"failed after {run['commits']} commits (log in {STATE.name})"
    if run.get("capped") and not run.get("counted"):
        return f"> cap ({run['commits']} commits in {cap_s:.0f} s)"
    text = f"{run['median_s']:.2f} (max {run['max_s']:.2f})"
    return text + (" > cap after" if run.get("capped") else "")


def render(report: dict[str, Any]) -> str:
    lines = [
        "## Hudi write paths: seconds per commit, one factor at a time",
        "",
        "Median (max) seconds per commit over the commits after the warm-up ones, each run "
        'in a fresh JVM, local[2]; a run over its cap is "> cap". Rows per commit: '
        + ", ".join(f"{n:,} at {s:,} symbols" for s, n in ROWS.items())
        + " (trades); every symbol's bar of six intervals (bars).",
        "",
    ]
    for shape, run in report["shapes"].items():
        variants = run["results"]
        counts = run["symbols"]
        lines += [
            f"{shape}: " + SHAPE_NOTES[shape],
            "",
            f"{run['date']}, {run['machine']}; command: `{run['command']}`; "
            f"{run['commits'] - WARM} commits counted after {WARM}, cap {run['cap_s']:.0f} s.",
            "",
            "| variant | " + " | ".join(f"{n:,} symbols" for n in counts) + " | files at the end |",
            "|---|" + "---|" * (len(counts) + 1),
        ]
        for variant, runs in variants.items():
            cells = [render_cell(runs.get(str(n)), run["cap_s"]) for n in counts]
            last = runs.get(str(counts[-1])) or {}
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {last.get('files', '-')} |")
        lines += [
            "",
            f"Where a {shape} commit's time goes at {counts[-1]:,} symbols (median s):",
            "",
        ]
        phases = sorted(
            {
                k
                for runs in variants.values()
                for k in (runs.get(str(counts[-1])) or {}).get("breakdown_median_s", {})
            }
        )
        lines += ["| variant | " + " | ".join(phases) + " |", "|---|" + "---|" * len(phases)]
        for variant, runs in variants.items():
            split = (runs.get(str(counts[-1])) or {}).get("breakdown_median_s")
            if split:
                lines.append(
                    f"| {variant} | " + " | ".join(f"{split.get(p, 0):.2f}" for p in phases) + " |"
                )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


SHAPE_NOTES = {
    "trades": "immutable rows with bronze_trades' key and columns. `today` partitions by "
    "symbol and date, `date` by date alone; every other variant is `date` with one change.",
    "bars": "silver_ohlcv's key, every commit updating each symbol's current bars. `today` "
    "partitions by symbol and interval, `interval` by interval alone; every other variant "
    "is `interval` with one change.",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.write_paths")
    parser.add_argument("--symbols", default=",".join(map(str, SYMBOLS)))
    parser.add_argument("--commits", type=int, default=COMMITS)
    parser.add_argument("--cap-s", type=float, default=CAP_S)
    parser.add_argument("--shapes", default="trades,bars")
    parser.add_argument("--only", default="", help="variants to run (comma-separated)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    symbol_counts = [int(s) for s in args.symbols.split(",")]
    if args.child:
        shape, variant = args.child.split(":")
        child(shape, variant, symbol_counts, args.commits)
        return 0
    from tests.bench.producer_bench import memory_gb
    from tests.bench.results import publish_results, results_dir

    only = set(filter(None, args.only.split(",")))
    results: dict[str, dict[str, Any]] = {}
    for shape in args.shapes.split(","):
        results[shape] = {}
        for variant in configurations(shape):
            if only and variant not in only:
                continue
            results[shape][variant] = run_variant(
                shape, variant, symbol_counts, args.commits, args.cap_s
            )
    command = "python -m tests.bench.write_paths " + " ".join(argv)
    run = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": f"{os.cpu_count()} cores, {memory_gb():.1f} GB",
        "symbols": symbol_counts,
        "commits": args.commits,
        "cap_s": args.cap_s,
    }
    shapes = {
        shape: {**run, "results": variants, "options": configurations(shape)}
        for shape, variants in results.items()
    }
    # A run of some shapes keeps the others' last figures, each with its own date and command.
    published = results_dir() / "bench" / "write_paths.json"
    kept = json.loads(published.read_text()).get("shapes", {}) if published.exists() else {}
    publish_results("write_paths", {"shapes": {**kept, **shapes}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
