"""Bronze benchmark, against a plain Spark Kafka -> Parquet query in the same run:

1. throughput: a Kafka backlog drained into the typed Hudi tables (rows/s);
2. latency: frames published at a fixed rate (1k, 10k frames/s) while the
   query runs on its configured trigger; each row's latency is the time its
   commit completed (Hudi's timeline; the file sink's batch log for Parquet)
   minus the time it was published (its recv_ns header, the live clock).
   The queries first ingest a warm-up (WARMUP_S of frames at the same
   rate, other ids) so tables exist and the JVM is warm; only the rows
   published after it count.

    python -m tests.bench.bronze_bench --loops 2 --reps 2     (part of `make bench`)

The backlog is the real BTCUSDT + ETHUSDT capture (trade, bookTicker, diff
depth), looped with ids and times shifted (producer/replay/captures.py), and
published with the producer's headers. Each repetition runs both queries with
availableNow on fresh checkpoints and tables, in one SparkSession (local[2]),
with the same batch bound. The paced publisher is a separate process, so its
GIL is not the driver's. Reported: rows/s, latency p50/p99, the ratios, and
the driver JVM's peak RSS. Not measured: HoodieStreamer (its bundle is not
served by this machine's Maven registry: `make jars-streamer`).
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
import uuid
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaProducer
from pyspark.sql import DataFrame, SparkSession, functions as F

from producer.replay.captures import Frame, merge_captures, plan_shifts, shifted
from producer.topics import ensure_topics
from streaming_jobs.bronze import tables
from streaming_jobs.bronze.job import start
from streaming_jobs.catalog import written_by
from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.hudi import read_table
from streaming_jobs.common.kafka import read_topics
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings, stream_kind
from streaming_jobs.common.spark import session_conf
from streaming_jobs.common.upkeep import Upkeep
from tests.bench.producer_bench import CAPTURES, memory_gb
from tests.bench.results import kafka_running, publish_results
from tests.conftest import write_test_conf

STATE = PROJECT_ROOT / ".state" / "bench-bronze"
BATCH = 50_000
WARMUP_S = 5


def looped_frames(count: int) -> list[Frame]:
    """`count` frames of the real capture, looped with ids and times shifted."""
    capture = merge_captures(CAPTURES)
    plan = plan_shifts(capture)
    frames: list[Frame] = []
    loop = 0
    while len(frames) < count:
        frames.extend(shifted(f, loop, plan) for f in capture.frames[: count - len(frames)])
        loop += 1
    return frames


def _send(producer: KafkaProducer, topics: dict[str, str], frame: Frame, now_ns: int) -> None:
    """Publish like the producer: received now, on an exchange clock where it was captured."""
    stream = frame.stream
    headers = [
        ("recv_ns", str(now_ns).encode()),
        ("stream", stream.encode()),
        ("backfill", b"0"),
        ("clock_offset_ns", str(frame.recv_ns - now_ns).encode()),
    ]
    kind = stream_kind(stream.split("@", 1)[1])
    key = stream.split("@", 1)[0].upper().encode()
    producer.send(topics[kind], key=key, value=frame.raw, headers=headers)


def publish(settings: Settings, loops: int) -> int:
    capture_len = len(merge_captures(CAPTURES).frames)
    return publish_frames(settings, looped_frames(capture_len * loops))


def publish_frames(settings: Settings, frames: list[Frame]) -> int:
    topics = {kind: spec.name for kind, spec in settings.pipeline.kafka.topics.items()}
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=20
    )
    now_ns = time.time_ns()
    for frame in frames:
        _send(producer, topics, frame, now_ns)
    producer.flush()
    producer.close()
    return len(frames)


def paced_publish(
    bootstrap: str, topics: dict[str, str], rate: int, seconds: float, out: Any
) -> None:
    """Publish `rate` frames/s for `seconds` (a child process); report (sent, elapsed)."""
    frames = looped_frames(int(rate * seconds))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    out.put("ready")
    started = time.monotonic()
    sent = 0
    while sent < len(frames):
        due = min(len(frames), int((time.monotonic() - started) * rate))
        if due <= sent:
            time.sleep(0.002)
            continue
        now_ns = time.time_ns()
        for frame in frames[sent:due]:
            _send(producer, topics, frame, now_ns)
        sent = due
    producer.flush()
    out.put((sent, time.monotonic() - started))
    producer.close()


def session(settings: Settings, extra: dict[str, str] | None = None) -> SparkSession:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["TZ"] = "UTC"  # Hudi's instant times are the JVM's local time
    creds = settings.s3_credentials()  # S3A reads them from the JVM's environment
    os.environ["AWS_ACCESS_KEY_ID"] = creds.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = creds.secret_key
    conf = {
        **session_conf(settings, "sql"),
        "spark.master": "local[2]",
        "spark.app.name": "bench-bronze",
        **(extra or {}),
    }
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def upkeep(spark: SparkSession, settings: Settings) -> Upkeep:
    """Bronze's upkeep, as its driver runs it beside the queries (common/layer.py)."""
    return Upkeep(spark, settings, "bronze", written_by("bronze"))


def run_bronze(spark: SparkSession, settings: Settings) -> float:
    """As `./spark-submit.sh bronze --once`: the queries, then the clustering they planned."""
    started = time.perf_counter()
    for query in start(spark, settings, once=True):
        query.awaitTermination()
    upkeep(spark, settings).run_once()
    return time.perf_counter() - started


def parquet_query(
    spark: SparkSession, settings: Settings, out: Path, trigger: dict[str, Any]
) -> Any:
    return (
        read_topics(spark, settings, BATCH)
        .writeStream.format("parquet")
        .option("path", str(out / "table"))
        .option("checkpointLocation", str(out / "checkpoint"))
        .trigger(**trigger)
        .start()
    )


def run_parquet(spark: SparkSession, settings: Settings, out: Path) -> float:
    started = time.perf_counter()
    parquet_query(spark, settings, out, {"availableNow": True}).awaitTermination()
    return time.perf_counter() - started


# --- latency -------------------------------------------------------------------


def hudi_visible(spark: SparkSession, settings: Settings, table: str) -> DataFrame:
    """commit instant -> the epoch ms it completed, from the table's timeline."""
    done = lakefiles.completed_instants(settings, table)
    return spark.createDataFrame(sorted(done.items()), "commit string, visible_ms long")


def hudi_latencies(spark: SparkSession, settings: Settings, table: str, since_ns: int) -> DataFrame:
    rows = (
        read_table(spark, settings.table_path(table))
        .select(F.col("_hoodie_commit_time").alias("commit"), "recv_ns")
        .filter(F.col("recv_ns") >= since_ns)
    )
    return rows.join(hudi_visible(spark, settings, table), "commit").select(
        (F.col("visible_ms") - F.col("recv_ns") / 1e6).alias("latency_ms")
    )


def parquet_latencies(spark: SparkSession, out: Path, topic: str, since_ns: int) -> DataFrame:
    """Each file becomes visible when the batch log that lists it is written."""
    visible: dict[str, int] = {}
    logs = [p for p in (out / "table" / "_spark_metadata").iterdir() if p.name[0].isdigit()]
    for log in sorted(logs, key=lambda p: int(p.name.split(".")[0])):
        at = log.stat().st_mtime_ns // 1_000_000
        for line in log.read_text().splitlines()[1:]:
            name = Path(json.loads(line)["path"]).name
            visible.setdefault(name, at)
    files = spark.createDataFrame(sorted(visible.items()), "file string, visible_ms long")
    header = F.filter("headers", lambda h: h["key"] == F.lit("recv_ns"))
    rows = (
        spark.read.parquet(str(out / "table"))
        .select(
            "topic",
            F.element_at(header, 1)["value"].cast("string").cast("long").alias("recv_ns"),
            F.regexp_extract(F.input_file_name(), r"([^/]+)$", 1).alias("file"),
        )
        .filter((F.col("topic") == topic) & (F.col("recv_ns") >= since_ns))
    )
    return rows.join(files, "file").select(
        (F.col("visible_ms") - F.col("recv_ns") / 1e6).alias("latency_ms")
    )


def percentiles(latencies: DataFrame) -> dict[str, float]:
    row = latencies.agg(
        F.count("*").alias("rows"),
        F.percentile("latency_ms", 0.5).alias("p50"),
        F.percentile("latency_ms", 0.99).alias("p99"),
        F.max("latency_ms").alias("max"),
    ).first()
    assert row is not None
    return {k: float(row[k] or 0) for k in ("rows", "p50", "p99", "max")}


def trades_trigger(settings: Settings) -> str:
    bronze = settings.pipeline.streaming.bronze
    return bronze.fast_trigger if "trade" in bronze.fast_lane else bronze.trigger


def paced_run(
    spark: SparkSession, settings: Settings, which: str, rate: int, seconds: float
) -> dict[str, float]:
    """Publish at `rate` while one query runs on the bronze trigger; the rows' latencies."""
    ensure_topics(settings)
    topics = {kind: spec.name for kind, spec in settings.pipeline.kafka.topics.items()}
    out = settings.state_dir / "pq"
    # The baseline runs on the trigger trades get in bronze.
    trigger = {"processingTime": trades_trigger(settings)}
    beside = upkeep(spark, settings)
    if which == "bronze":
        queries: list[Any] = list(start(spark, settings))
        beside.start()
    else:
        queries = [parquet_query(spark, settings, out, trigger)]
    # Warm-up: frames with ids after the paced run's, drained before it starts.
    paced = int(rate * seconds)
    publish_frames(settings, looped_frames(paced + WARMUP_S * rate)[paced:])
    for query in queries:
        query.processAllAvailable()
    since_ns = time.time_ns()
    before = _records(settings)
    ctx = mp.get_context("spawn")
    channel = ctx.Queue()
    child = ctx.Process(
        target=paced_publish,
        args=(settings.kafka_bootstrap_servers, topics, rate, seconds, channel),
    )
    child.start()
    try:
        if channel.get(timeout=300) != "ready":
            raise RuntimeError("publisher failed to start")
        sent, elapsed = channel.get(timeout=seconds * 10 + 300)
        delivered = _records(settings) - before
        drained = time.monotonic()
        for query in queries:
            query.processAllAvailable()
        drain_s = time.monotonic() - drained
    finally:
        for query in queries:
            query.stop()
        beside.stop()
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    # Trades: the table HoodieStreamer would be compared on (one topic, one key).
    if which == "bronze":
        stats = percentiles(hudi_latencies(spark, settings, tables.TRADES.name, since_ns))
    else:
        stats = percentiles(parquet_latencies(spark, out, topics["trade"], since_ns))
    stats.update(
        offered_fps=sent / elapsed,
        delivered_fps=delivered / elapsed,
        sent=sent,
        delivered=delivered,
        drain_s=drain_s,
    )
    return stats


def _records(settings: Settings) -> int:
    """Records in every topic of the run, at the broker."""
    return sum((progress.end_offsets(settings) or {}).values())


def jvm_peak_rss_mb(spark: SparkSession) -> float:
    pid = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _with_topics(conf: Path, pipeline: dict[str, Any], env: dict[str, str]) -> Settings:
    """Settings with fresh topic names and state, so each run starts from nothing."""
    prefix = f"bb{uuid.uuid4().hex[:6]}"
    for spec in pipeline["kafka"]["topics"].values():
        spec["name"] = f"{prefix}.{spec['name'].split('.', 1)[-1]}"
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    return load_settings(conf, {**env, "STATE_DIR": str(STATE / prefix)})


def throughput(
    spark: SparkSession, conf: Path, pipeline: dict[str, Any], env: dict[str, str], args: Any
) -> tuple[int, dict[str, list[float]]]:
    results: dict[str, list[float]] = {"bronze": [], "parquet": [], "ratio": []}
    rows = 0
    for rep in range(args.reps):
        settings = _with_topics(conf, pipeline, env)
        ensure_topics(settings)
        rows = publish(settings, args.loops)
        results["bronze"].append(rows / run_bronze(spark, settings))
        results["parquet"].append(rows / run_parquet(spark, settings, settings.state_dir / "pq"))
        results["ratio"].append(results["bronze"][-1] / results["parquet"][-1])
        print(
            f"rep {rep + 1}: {rows:,} rows, bronze {results['bronze'][-1]:,.0f}/s, "
            f"parquet {results['parquet'][-1]:,.0f}/s",
            file=sys.stderr,
        )
    return rows, results


def latency(
    spark: SparkSession, conf: Path, pipeline: dict[str, Any], env: dict[str, str], args: Any
) -> dict[str, dict[str, dict[str, float]]]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    for rate in args.rates:
        results[str(rate)] = {}
        for which in ("bronze", "parquet"):
            settings = _with_topics(conf, pipeline, env)
            stats = paced_run(spark, settings, which, rate, args.seconds)
            results[str(rate)][which] = stats
            print(f"{rate}/s {which}: {stats}", file=sys.stderr)
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bronze_bench")
    parser.add_argument("--loops", type=int, default=2, help="capture loops per backlog")
    parser.add_argument("--reps", type=int, default=2, help="throughput repetitions")
    parser.add_argument(
        "--rates",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000, 10000],
        help="frames/s of the latency runs",
    )
    parser.add_argument("--seconds", type=float, default=30, help="publishing time per rate")
    args = parser.parse_args(argv)
    shutil.rmtree(STATE, ignore_errors=True)
    conf = STATE / "conf"
    write_test_conf(conf, for_tests=False)
    env = {**os.environ, "LAKE_CONF_DIR": str(conf), "STATE_DIR": str(STATE), "TZ": "UTC"}
    with kafka_running(env):
        pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
        pipeline["streaming"]["bronze"]["max_offsets_per_trigger"] = BATCH
        # The shipped triggers (the test conf shortens bronze's).
        shipped = yaml.safe_load((PROJECT_ROOT / "conf" / "pipeline.yaml").read_text())
        pipeline["streaming"]["bronze"]["trigger"] = shipped["streaming"]["bronze"]["trigger"]
        (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
        base = load_settings(conf, env)
        spark = session(base)
        rows, rates = throughput(spark, conf, pipeline, env, args)
        latencies = latency(spark, conf, pipeline, env, args)
        peak = jvm_peak_rss_mb(spark)
        spark.stop()
    command = (
        f"python -m tests.bench.bronze_bench --loops {args.loops} --reps {args.reps} "
        f"--rates {','.join(map(str, args.rates))} --seconds {args.seconds:g}"
    )
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "rows_per_run": rows,
        "repetitions": args.reps,
        "batch_bound": BATCH,
        "trigger": trades_trigger(base),
        "other_topics_trigger": base.layer("bronze").trigger,
        "rows_per_second": rates,
        "latency_ms": latencies,
        "driver_peak_rss_mb": peak,
        "machine": {"cores": os.cpu_count(), "memory_gb": round(memory_gb(), 1)},
    }
    publish_results("bronze", report)
    return 0


def render(report: dict[str, Any]) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):,.2f} ({min(values):,.2f} - {max(values):,.2f})"

    rates = report["rows_per_second"]
    lines = [
        "## Bronze: Kafka -> typed Hudi tables vs a plain Kafka -> Parquet query",
        "",
        f"{report['date']}, {report['machine']['cores']} cores, one SparkSession local[2]; "
        f"command: `{report['command']}`.",
        "",
        f"Throughput: a backlog of {report['rows_per_run']:,} records (real capture, looped), "
        f"batches of {report['batch_bound']:,}, availableNow, {report['repetitions']} "
        "repetitions.",
        "",
        "| measured | rows/s, median (range) |",
        "|---|---|",
        f"| bronze (7 typed tables + quarantine) | {spread(rates['bronze'])} |",
        f"| plain Kafka -> Parquet | {spread(rates['parquet'])} |",
        f"| bronze / parquet | {spread(rates['ratio'])} |",
        "",
        f"Latency of trades, publish -> visible in a snapshot query, trigger "
        f"`{report['trigger']}` (bronze's trade query; its query of the other topics runs "
        f"on `{report['other_topics_trigger']}`), frames published at a fixed rate by a "
        "separate process (all stream types, as captured):",
        "",
        "| frames/s offered (delivered at the broker) | query | trade rows | p50 s | p99 s | "
        "max s | drain after publishing s | p99 / parquet p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rate, runs in report["latency_ms"].items():
        base = runs["parquet"]["p99"] or 1.0
        for which, st in runs.items():
            lines.append(
                f"| {int(rate):,} ({st.get('delivered_fps', st['offered_fps']):,.0f}) | {which} | "
                f"{st['rows']:,.0f} | "
                f"{st['p50'] / 1000:.2f} | {st['p99'] / 1000:.2f} | {st['max'] / 1000:.2f} | "
                f"{st['drain_s']:.1f} | {st['p99'] / base:.2f} |"
            )
    lines += [
        "",
        "Drain: after publishing stopped, until every query had caught up; for bronze "
        "that is its query of the other topics (depth, book ticker), on its longer trigger.",
        "",
        f"Driver JVM peak RSS: {report['driver_peak_rss_mb']:.0f} MB. Not measured: "
        "HoodieStreamer (its bundle is not served by this machine's registry).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
