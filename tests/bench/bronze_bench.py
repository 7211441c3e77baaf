"""Bronze benchmark: sustained ingest of a Kafka backlog into the typed Hudi tables,
against a plain Spark Kafka -> Parquet query over the same records, in one run.

    python -m tests.bench.bronze_bench --loops 2 --reps 2     (part of `make bench`)

The backlog is the real BTCUSDT + ETHUSDT capture (trade, bookTicker, diff
depth), looped with ids and times shifted (producer/replay/captures.py), and
published with the producer's headers. Each repetition runs both queries with
availableNow on fresh checkpoints and tables, in one SparkSession (local[2]),
with the same batch bound. Reported: rows/s of each, the ratio, and the
driver JVM's peak RSS. Not measured yet: event-to-visible latency at fixed
input rates, and HoodieStreamer (its bundle is not served by this machine's
Maven registry: `make jars-streamer`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from producer.replay.captures import merge_captures, plan_shifts, shifted
from producer.topics import ensure_topics
from streaming_jobs.bronze.job import start
from streaming_jobs.common.kafka import read_topics
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings, stream_kind
from streaming_jobs.common.spark import session_conf
from tests.bench.producer_bench import CAPTURES, memory_gb
from tests.conftest import write_test_conf

STATE = PROJECT_ROOT / ".state" / "bench-bronze"
BATCH = 50_000


def publish(settings: Settings, loops: int) -> int:
    capture = merge_captures(CAPTURES)
    plan = plan_shifts(capture)
    offset_ns = capture.frames[0].recv_ns - time.time_ns()  # the replay's clock, as live
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=20
    )
    sent = 0
    for loop in range(loops):
        for frame in capture.frames:
            moved = shifted(frame, loop, plan)
            kind = stream_kind(moved.stream.split("@", 1)[1])
            headers = [
                ("recv_ns", str(moved.recv_ns - offset_ns).encode()),
                ("stream", moved.stream.encode()),
                ("backfill", b"0"),
                ("clock_offset_ns", str(offset_ns).encode()),
            ]
            key = moved.stream.split("@", 1)[0].upper().encode()
            producer.send(settings.topic(kind).name, key=key, value=moved.raw, headers=headers)
            sent += 1
    producer.flush()
    producer.close()
    return sent


def session(settings: Settings) -> SparkSession:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    conf = {
        **session_conf(settings, "sql"),
        "spark.master": "local[2]",
        "spark.app.name": "bench-bronze",
    }
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def run_bronze(spark: SparkSession, settings: Settings) -> float:
    started = time.perf_counter()
    query: Any = start(spark, settings, once=True)
    query.awaitTermination()
    return time.perf_counter() - started


def run_parquet(spark: SparkSession, settings: Settings, out: Path) -> float:
    started = time.perf_counter()
    query = (
        read_topics(spark, settings, BATCH)
        .writeStream.format("parquet")
        .option("path", str(out / "table"))
        .option("checkpointLocation", str(out / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return time.perf_counter() - started


def jvm_peak_rss_mb(spark: SparkSession) -> float:
    pid = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bronze_bench")
    parser.add_argument("--loops", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    shutil.rmtree(STATE, ignore_errors=True)
    conf = STATE / "conf"
    write_test_conf(conf)
    env = {**os.environ, "LAKE_CONF_DIR": str(conf), "STATE_DIR": str(STATE)}
    services = [str(PROJECT_ROOT / "infra" / "services.sh")]
    up = subprocess.run([*services, "up", "kafka"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stdout, up.stderr, file=sys.stderr)
        return 1
    results: dict[str, list[float]] = {"bronze": [], "parquet": [], "ratio": []}
    try:
        pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
        pipeline["streaming"]["bronze"]["max_offsets_per_trigger"] = BATCH
        (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
        base = load_settings(conf, env)
        spark = session(base)
        rows = 0
        for rep in range(args.reps):
            prefix = f"bb{uuid.uuid4().hex[:6]}"
            for spec in pipeline["kafka"]["topics"].values():
                spec["name"] = f"{prefix}.{spec['name'].split('.', 1)[-1]}"
            (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
            settings = load_settings(conf, {**env, "STATE_DIR": str(STATE / prefix)})
            ensure_topics(settings)
            rows = publish(settings, args.loops)
            results["bronze"].append(rows / run_bronze(spark, settings))
            results["parquet"].append(rows / run_parquet(spark, settings, STATE / prefix / "pq"))
            results["ratio"].append(results["bronze"][-1] / results["parquet"][-1])
            print(
                f"rep {rep + 1}: {rows:,} rows, bronze {results['bronze'][-1]:,.0f}/s, "
                f"parquet {results['parquet'][-1]:,.0f}/s",
                file=sys.stderr,
            )
        peak = jvm_peak_rss_mb(spark)
        spark.stop()
    finally:
        subprocess.run([*services, "down"], env=env, capture_output=True)

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):,.2f} ({min(values):,.2f} - {max(values):,.2f})"

    command = f"python -m tests.bench.bronze_bench --loops {args.loops} --reps {args.reps}"
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "rows_per_run": rows,
        "repetitions": args.reps,
        "batch_bound": BATCH,
        "rows_per_second": results,
        "driver_peak_rss_mb": peak,
        "machine": {"cores": os.cpu_count(), "memory_gb": round(memory_gb(), 1)},
    }
    out = PROJECT_ROOT / "docs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bronze.json").write_text(json.dumps(report, indent=1) + "\n")
    section = "\n".join(
        [
            "## Bronze: Kafka backlog -> typed Hudi tables vs a plain Kafka -> Parquet query",
            "",
            f"{report['date']}, {os.cpu_count()} cores; {rows:,} records per run (real capture, "
            f"looped), batches of {BATCH:,}, {args.reps} repetitions, one SparkSession local[2]; "
            f"command: `{command}`.",
            "",
            "| measured | rows/s, median (range) |",
            "|---|---|",
            f"| bronze (7 typed tables + quarantine) | {spread(results['bronze'])} |",
            f"| plain Kafka -> Parquet | {spread(results['parquet'])} |",
            f"| bronze / parquet | {spread(results['ratio'])} |",
            "",
            f"Driver JVM peak RSS: {peak:.0f} MB. Not measured yet: latency at fixed input rates; "
            "HoodieStreamer (bundle not served here).",
            "",
        ]
    )
    print(section)
    doc = PROJECT_ROOT / "docs" / "BENCHMARKS.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    begin = text.find("## Bronze:")
    if begin >= 0:
        end = text.find("\n## ", begin + 1)
        text = text[:begin] + text[end + 1 :] if end >= 0 else text[:begin]
    doc.write_text(text.rstrip("\n") + "\n\n" + section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
