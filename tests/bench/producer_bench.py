"""Producer benchmark: replay exchange at full speed -> producer -> Kafka (acks=all),
against a bare kafka-python loop sending the same bytes to the same broker.

    make bench            # LOOPS=4 REPS=3
    make bench-quick      # LOOPS=1 REPS=1

Each repetition runs, in this order and on fresh topics:
1. source: a websocket-client reader draining the replay exchange (no Kafka):
   the ceiling the exchange itself sets;
2. producer: `python -m producer` reading the same replay into Kafka, timed
   from its first frame to the moment everything it handled is acknowledged;
3. bare: one KafkaProducer(acks="all") loop sending the same frames' bytes
   with the same keys, timed to the end of flush() (the issue's peer);
4. bare_librdkafka: the same loop on confluent-kafka, the client the producer
   itself uses (producer/sink.py), configured alike: what Kafka itself
   takes on this machine.
The replay exchange and the producer are separate processes, as in
production. Results: a table on stdout, JSON in docs/bench/producer.json and a
section in docs/BENCHMARKS.md. Rates are frames per second; the ratio
producer/bare is per repetition, reported as median and range.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import websocket
import yaml
from confluent_kafka import Producer as RdProducer
from kafka import KafkaProducer
from kafka.admin import NewTopic

from producer.replay.captures import merge_captures
from producer.topics import admin_client, ensure_topics
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings
from tests.bench.results import kafka_running, publish_results
from tests.conftest import write_test_conf
from tests.support import free_port, get_json

CAPTURES = [
    PROJECT_ROOT / "producer" / "replay" / "captures" / "spot_btcusdt_20240808.gz",
    PROJECT_ROOT / "producer" / "replay" / "captures" / "spot_ethusdt_20240808.gz",
]
STREAMS = ["trade", "bookTicker", "depth@100ms"]
STATE = PROJECT_ROOT / ".state" / "bench"
PY = sys.executable


def wait_for(condition: Any, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Replay:
    """The replay exchange as its own process, at full speed."""

    def __init__(self, loops: int, env: dict[str, str]):
        self.port = free_port()
        capture = ",".join(str(p) for p in CAPTURES)
        self.process = subprocess.Popen(
            [
                PY,
                "-m",
                "producer.replay",
                "--capture",
                capture,
                "--speed",
                "max",
                "--loops",
                str(loops),
                "--port",
                str(self.port),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.answers, 60, "the replay exchange")

    def answers(self) -> bool:
        try:
            get_json(f"http://127.0.0.1:{self.port}/api/v3/ping")
        except OSError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = get_json(f"http://127.0.0.1:{self.port}/control/status")
        return result

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def stream_url(port: int, symbols: list[str]) -> str:
    names = [f"{s.lower()}@{stream}" for s in symbols for stream in STREAMS]
    return f"ws://127.0.0.1:{port}/stream?streams={'/'.join(names)}"


def run_source(loops: int, env: dict[str, str], expected: int) -> float:
    replay = Replay(loops, env)
    try:
        ws = websocket.create_connection(stream_url(replay.port, ["BTCUSDT", "ETHUSDT"]))
        ws.settimeout(10)
        received, started = 0, 0.0
        while received < expected:
            ws.recv_data()
            if received == 0:
                started = time.perf_counter()
            received += 1
        elapsed = time.perf_counter() - started
        ws.close()
    finally:
        replay.stop()
    return (expected - 1) / elapsed


def bench_settings(conf: Path, env: dict[str, str]) -> Settings:
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    prefix = f"b{uuid.uuid4().hex[:6]}"
    for spec in pipeline["kafka"]["topics"].values():
        spec["name"] = f"{prefix}.{spec['name']}"
    pipeline["services"]["producer_metrics_port"] = free_port()
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    settings = load_settings(conf, env)
    ensure_topics(settings)
    return settings


def run_producer(loops: int, env: dict[str, str], conf: Path, expected: int) -> tuple[float, int]:
    settings = bench_settings(conf, env)
    replay = Replay(loops, env)
    url = f"ws://127.0.0.1:{replay.port}"
    run_env = {
        **env,
        "LAKE_CONF_DIR": str(conf),
        "BINANCE_WS_URL": url,
        "BINANCE_REST_URL": url.replace("ws://", "http://"),
        "STATE_DIR": str(STATE / f"producer-{uuid.uuid4().hex[:6]}"),
    }
    health = f"http://127.0.0.1:{settings.services.producer_metrics_port}/health"
    process = subprocess.Popen(
        [PY, "-m", "producer"],
        env=run_env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def handled() -> int:
            try:
                return int(get_json(health)["frames_handled"])
            except (OSError, KeyError, ValueError):
                return 0

        wait_for(lambda: handled() > 0, 120, "the producer's first frame")
        started = time.perf_counter()
        first = handled()
        wait_for(
            lambda: handled() >= expected and get_json(health)["pending_records"] == 0,
            1800,
            "the producer to publish the capture",
        )
        elapsed = time.perf_counter() - started
        rss_kb = peak_rss_kb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        replay.stop()
    return (expected - first) / elapsed, rss_kb


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def bare_topic(settings: Settings) -> str:
    """A fresh topic for a bare loop, partitioned as the producer's topics."""
    topic = f"bare.{uuid.uuid4().hex[:8]}"
    admin = admin_client(settings)
    partitions = settings.topic("trade").partitions
    admin.create_topics([NewTopic(topic, partitions, 1)], wait_for_metadata=True)
    admin.close()
    return topic


def run_bare(frames: list[tuple[bytes, bytes]], settings: Settings) -> float:
    topic = bare_topic(settings)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )
    producer.send(topic, b"warm-up").get(timeout=60)
    started = time.perf_counter()
    for key, value in frames:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(frames) / elapsed


def run_bare_librdkafka(frames: list[tuple[bytes, bytes]], settings: Settings) -> float:
    """The same loop on the producer's own client, configured like producer/sink.py."""
    topic = bare_topic(settings)
    producer = RdProducer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    producer.produce(topic, b"warm-up")
    producer.flush(60)
    started = time.perf_counter()
    for key, value in frames:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    return len(frames) / (time.perf_counter() - started)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.producer_bench")
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)

    shutil.rmtree(STATE, ignore_errors=True)
    conf = STATE / "conf"
    write_test_conf(conf, for_tests=False)  # ports +10000: beside a running `make up`
    (conf / "symbols.yaml").write_text(
        yaml.safe_dump(
            {
                "defaults": {"streams": STREAMS},
                "symbols": [{"name": "BTCUSDT", "tier": 1}, {"name": "ETHUSDT", "tier": 1}],
            }
        )
    )
    env = {**os.environ, "LAKE_CONF_DIR": str(conf), "STATE_DIR": str(STATE)}
    with kafka_running(env):
        capture = merge_captures(CAPTURES)
        per_loop = len(capture.frames)
        expected = per_loop * args.loops
        frames = [
            (f.stream.split("@", 1)[0].upper().encode(), f.raw) for f in capture.frames
        ] * args.loops
        settings = load_settings(conf, env)
        results: dict[str, list[float]] = {
            "source": [],
            "producer": [],
            "bare": [],
            "bare_librdkafka": [],
            "ratio": [],
            "ratio_librdkafka": [],
        }
        rss: list[int] = []
        for rep in range(args.reps):
            results["source"].append(run_source(args.loops, env, expected))
            rate, peak = run_producer(args.loops, env, conf, expected)
            results["producer"].append(rate)
            rss.append(peak)
            results["bare"].append(run_bare(frames, settings))
            results["bare_librdkafka"].append(run_bare_librdkafka(frames, settings))
            results["ratio"].append(rate / results["bare"][-1])
            results["ratio_librdkafka"].append(rate / results["bare_librdkafka"][-1])
            print(
                f"rep {rep + 1}: source {results['source'][-1]:,.0f}/s, producer "
                f"{rate:,.0f}/s, bare {results['bare'][-1]:,.0f}/s, bare librdkafka "
                f"{results['bare_librdkafka'][-1]:,.0f}/s",
                file=sys.stderr,
            )

    command = (
        f"make bench (python -m tests.bench.producer_bench --loops {args.loops} --reps {args.reps})"
    )
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(memory_gb(), 1),
            "python": platform.python_version(),
        },
        "frames_per_run": expected,
        "repetitions": args.reps,
        "frames_per_second": {
            k: spread(v) for k, v in results.items() if not k.startswith("ratio")
        },
        "producer_vs_bare": spread(results["ratio"]),
        "producer_vs_bare_librdkafka": spread(results["ratio_librdkafka"]),
        "producer_peak_rss_mb": max(rss) / 1024,
    }
    write_report(report)
    return 0


def memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def write_report(report: dict[str, Any]) -> None:
    publish_results("producer", report)


def render(report: dict[str, Any]) -> str:
    fps, ratio = report["frames_per_second"], report["producer_vs_bare"]
    rd = report["producer_vs_bare_librdkafka"]
    rows = [
        "| measured | median frames/s | range |",
        "|---|---|---|",
        *(
            f"| {name} | {v['median']:,.0f} | {v['min']:,.0f} - {v['max']:,.0f} |"
            for name, v in fps.items()
        ),
        f"| producer / bare | {ratio['median']:.2f} | {ratio['min']:.2f} - {ratio['max']:.2f} |",
        f"| producer / bare_librdkafka | {rd['median']:.2f} | {rd['min']:.2f} - {rd['max']:.2f} |",
    ]
    return "\n".join(
        [
            "## Producer: replay exchange -> Kafka (acks=all) vs a bare kafka-python loop",
            "",
            f"{report['date']}, {report['machine']['cores']} cores, "
            f"{report['machine']['memory_gb']} GB, Python {report['machine']['python']}; "
            f"{report['frames_per_run']:,} frames per run (real BTCUSDT + ETHUSDT capture, "
            "looped), "
            f"{report['repetitions']} repetitions; command: `{report['command']}`.",
            "",
            *rows,
            "",
            f"Producer peak RSS: {report['producer_peak_rss_mb']:.0f} MB. `source` is the replay "
            "exchange drained by a bare WebSocket reader: the ceiling the exchange sets. "
            "`bare` is the issue's peer, a kafka-python loop; `bare_librdkafka` the same loop "
            "on the client the producer uses (confluent-kafka): what Kafka itself takes on "
            "this machine. When `producer` is close to `source`, the exchange is the limit.",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
