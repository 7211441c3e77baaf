"""The producer against the replay exchange and a real Kafka, on a real capture.

The capture is hftbacktest's BTCUSDT recording of 2024-08-08
(producer/replay/captures/, provenance there): trade, bookTicker and diff
depth frames with gap-free trade ids. Each test runs `python -m producer` as
a process, points it at an in-process replay exchange, and reads back what
reached Kafka. Faults: a dropped connection, `kill -9` of the producer, a
Kafka restart, a missed pong, rollovers every few seconds.

Duplicates: a trade id can reach Kafka twice only when the producer dies
after Kafka stored a record and before its state file recorded the delivery;
the restart then backfills from the older id. Bronze collapses them by key
(symbol, trade_id); the tests below assert the set of ids exactly and, where
no crash happens, that there are no duplicates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from producer.replay.captures import Capture, read_capture
from producer.replay.exchange import ReplayExchange, start_in_thread
from producer.topics import ensure_topics
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings
from tests.support import await_true, free_port, get_json

CAPTURE = PROJECT_ROOT / "producer" / "replay" / "captures" / "spot_btcusdt_20240808.gz"
STREAMS = ["trade", "bookTicker", "depth@100ms"]
INFRA = PROJECT_ROOT / "infra"


@pytest.fixture(scope="module")
def capture() -> Capture:
    return read_capture(CAPTURE)


@pytest.fixture(scope="module")
def capture_trade_ids(capture: Capture) -> list[int]:
    return [json.loads(f.raw)["data"]["t"] for f in capture.frames if f.stream == "btcusdt@trade"]


@dataclass
class Run:
    """One producer process with its private topics, state and metrics port."""

    settings: Settings
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "producer"],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        await_true("the producer's metrics endpoint", self.serving, 60)

    def serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"producer exited {self.process.returncode}:\n{self.tail()}")
        try:
            self.health()
        except OSError:
            return False
        return True

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def health(self) -> dict[str, Any]:
        port = self.settings.services.producer_metrics_port
        result: dict[str, Any] = get_json(f"http://127.0.0.1:{port}/health")
        return result

    def metric(self, name: str) -> float:
        port = self.settings.services.producer_metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def drained(self) -> bool:
        health = self.health()
        return health["pending_records"] == 0 and health["backfill_idle"]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=90)
        return code

    def records(self, kind: str) -> list[Any]:
        return read_topic(self.settings, self.settings.topic(kind).name)


def read_topic(settings: Settings, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(p) < end[p] for p in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


@pytest.fixture
def make_run(services: Settings, tmp_path: Path) -> Iterator[Callable[..., tuple[Run, Any]]]:
    """Build a producer run against a replay exchange; everything stops at the end."""
    started: list[tuple[Run, Any]] = []

    def build(
        *,
        speed: float | None = None,
        producer: dict[str, Any] | None = None,
        exchange: dict[str, Any] | None = None,
        symbols: list[dict[str, Any]] | None = None,
        capture: Capture | None = None,
        metrics_port: int | None = None,
        partitions: int | None = None,
    ) -> tuple[Run, Any]:
        replay = start_in_thread(
            ReplayExchange(capture or read_capture(CAPTURE), speed=speed, **(exchange or {}))
        )
        conf = tmp_path / f"conf{len(started)}"
        shutil.copytree(os.environ["LAKE_CONF_DIR"], conf)
        pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
        prefix = f"t{uuid.uuid4().hex[:6]}"
        for kind, spec in pipeline["kafka"]["topics"].items():
            spec["name"] = f"{prefix}.{spec['name']}"
            if partitions and kind != "quarantine":
                spec["partitions"] = partitions
        pipeline["services"]["producer_metrics_port"] = metrics_port or free_port()
        pipeline["producer"] = {
            "ws_base_url": replay.url_ws,
            "rest_base_url": replay.url_rest,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 2,
            **(producer or {}),
        }
        (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
        (conf / "symbols.yaml").write_text(
            yaml.safe_dump(
                {
                    "defaults": {"streams": STREAMS},
                    "symbols": symbols or [{"name": "BTCUSDT", "tier": 1}],
                }
            )
        )
        env = {**os.environ, "LAKE_CONF_DIR": str(conf), "STATE_DIR": str(tmp_path / "state")}
        env.pop("ACTIVE_SYMBOLS", None)
        settings = load_settings(conf, env)
        ensure_topics(settings)
        run = Run(settings, env, tmp_path / f"producer{len(started)}.log")
        started.append((run, replay))
        return run, replay

    yield build
    for run, replay in started:
        if run.process is not None and run.process.poll() is None:
            run.stop(signal.SIGKILL)
        replay.stop()


def finished(run: Run, replay: Any) -> Callable[[], bool]:
    return lambda: replay.status()["done"] and run.drained() and _stable(run)


def _stable(run: Run) -> bool:
    before = run.health()["frames_handled"]
    time.sleep(0.5)
    return bool(run.health()["frames_handled"] == before and run.drained())


def trade_ids(run: Run) -> list[int]:
    return [json.loads(r.value)["data"]["t"] for r in run.records("trade")]


def test_every_frame_arrives_byte_identical(
    make_run: Callable[..., tuple[Run, Any]], capture: Capture, services: Settings
) -> None:
    # The test conf's producer port is the one Prometheus scrapes.
    run, replay = make_run(metrics_port=services.services.producer_metrics_port)
    run.start()
    await_true("the capture to be played and published", finished(run, replay), 240)

    for kind, stream in (
        ("trade", "btcusdt@trade"),
        ("bookTicker", "btcusdt@bookTicker"),
        ("depth", "btcusdt@depth@100ms"),
    ):
        expected = [f.raw for f in capture.frames if f.stream == stream]
        records = run.records(kind)
        assert [r.value for r in records] == expected, f"{kind}: values differ from the capture"
        assert {r.key for r in records} == {b"BTCUSDT"}
        assert {dict(r.headers)["stream"] for r in records} == {stream.encode()}
        assert {dict(r.headers)["backfill"] for r in records} == {b"0"}
    assert run.records("quarantine") == []
    assert run.metric("producer_gaps_detected_total") == 0

    # A real Prometheus scrapes the producer.
    prometheus = f"http://127.0.0.1:{services.services.prometheus_port}/api/v1/query?query="
    query = prometheus + 'sum(producer_frames_received_total{kind="trade"})'
    await_true(
        "Prometheus to scrape the producer's trade count",
        lambda: (
            [float(r["value"][1]) for r in get_json(query)["data"]["result"]]
            == [float(len([f for f in capture.frames if f.stream == "btcusdt@trade"]))]
        ),
        60,
    )
    assert run.stop() == 0


def test_dropped_connection_is_backfilled(
    make_run: Callable[..., tuple[Run, Any]], capture_trade_ids: list[int]
) -> None:
    run, replay = make_run(speed=60.0)
    run.start()
    await_true("5,000 frames played", lambda: replay.status()["frames_published"] > 5000, 120)
    replay.control("drop")
    await_true("the capture to be played and published", finished(run, replay), 240)

    ids = trade_ids(run)
    assert sorted(ids) == capture_trade_ids  # every id, none twice
    assert run.metric("producer_gaps_filled_total") >= 1
    assert run.metric("producer_backfilled_records_total") > 0
    backfilled = [r for r in run.records("trade") if dict(r.headers)["backfill"] == b"1"]
    assert backfilled and all(r.key == b"BTCUSDT" for r in backfilled)
    assert run.stop() == 0


def test_kill_9_and_restart_lose_nothing(
    make_run: Callable[..., tuple[Run, Any]], capture_trade_ids: list[int]
) -> None:
    run, replay = make_run(speed=60.0)
    run.start()
    await_true("5,000 frames played", lambda: replay.status()["frames_published"] > 5000, 120)
    run.stop(signal.SIGKILL)
    time.sleep(1.0)  # the exchange keeps publishing while the producer is dead
    run.start()
    await_true("the capture to be played and published", finished(run, replay), 240)

    ids = trade_ids(run)
    assert set(ids) == set(capture_trade_ids)  # duplicates possible after kill -9
    assert run.stop() == 0


def test_trades_published_while_down_before_the_market_went_quiet_are_backfilled(
    make_run: Callable[..., tuple[Run, Any]], capture_trade_ids: list[int]
) -> None:
    """Found by the chaos suite: no live frame after the restart, so no gap was ever seen;
    the producer now asks the exchange for each series' newest id when it starts."""
    run, replay = make_run(speed=60.0)
    run.start()
    await_true("5,000 frames played", lambda: replay.status()["frames_published"] > 5000, 120)
    run.stop(signal.SIGKILL)
    await_true("the end of playback, nobody listening", lambda: replay.status()["done"], 120)
    run.start()
    await_true("the missed trades backfilled", finished(run, replay), 240)
    assert set(trade_ids(run)) == set(capture_trade_ids)
    assert run.metric("producer_backfilled_records_total") > 0
    assert run.stop() == 0


def test_kafka_restart_loses_nothing(
    make_run: Callable[..., tuple[Run, Any]], capture_trade_ids: list[int], lake_env: dict[str, str]
) -> None:
    run, replay = make_run(speed=60.0)
    run.start()
    await_true("5,000 frames played", lambda: replay.status()["frames_published"] > 5000, 120)
    kafka = [str(INFRA / "kafka.sh")]
    assert subprocess.run([*kafka, "stop"], env=lake_env, capture_output=True).returncode == 0
    assert subprocess.run([*kafka, "start"], env=lake_env, capture_output=True).returncode == 0
    await_true("the capture to be played and published", finished(run, replay), 300)

    assert sorted(trade_ids(run)) == capture_trade_ids
    assert run.stop() == 0


def test_missed_pong_and_rollovers(
    make_run: Callable[..., tuple[Run, Any]], capture_trade_ids: list[int]
) -> None:
    # Pings every second, 5 s to answer (Binance: 20 s and 60 s), a rollover
    # every 3 s (Binance: before 24 h).
    run, replay = make_run(
        speed=20.0,
        producer={"rollover_after_s": 3.0},
        exchange={"ping_interval": 1.0, "pong_timeout": 5.0},
    )
    run.start()
    await_true("5,000 frames played", lambda: replay.status()["frames_published"] > 5000, 120)
    before = {c["id"] for c in replay.status()["connections"]}
    replay.control("miss-pongs")
    await_true(
        "the exchange to close the connection that missed its pong",
        lambda: not before & {c["id"] for c in replay.status()["connections"]},
        30,
    )
    await_true("the capture to be played and published", finished(run, replay), 300)

    assert sorted(trade_ids(run)) == capture_trade_ids  # no loss, no duplicate
    assert run.metric('producer_reconnects_total{cause="rollover"}') >= 2
    # The overlaps happened (both connections carried the same frames) and
    # were collapsed before Kafka.
    assert run.metric("producer_duplicates_dropped_total") > 0
    pongs = [c["pongs_ok"] for c in replay.status()["closed_connections"]]
    assert sum(pongs) > 0  # the producer answers pings with their payload
    assert run.stop() == 0


def test_1500_streams_open_two_connections(make_run: Callable[..., tuple[Run, Any]]) -> None:
    symbols = [
        {"name": f"SYM{i:04d}USDT", "streams": ["trade", "kline_1m", "bookTicker"]}
        for i in range(500)
    ]
    run, replay = make_run(symbols=symbols)
    run.start()
    await_true("two connections", lambda: len(replay.status()["connections"]) == 2, 60)
    assert sorted(c["streams"] for c in replay.status()["connections"]) == [476, 1024]
    await_true("both connections live", lambda: run.health()["live"], 60)
    assert run.stop() == 0


BAD_FRAMES = [
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","t":1', "not_json"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1}}\xff', "not_utf8"),
    (b'{"stream":"dogeusdt@trade","data":{"e":"trade","s":"DOGEUSDT","t":1}}', "unknown_stream"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":"7"}}', "bad_id_t"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":NaN}}', "bad_id_t"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"ETHUSDT","t":8}}', "symbol_mismatch"),
    (b"[]", "bad_shape"),
    (b'{"stream":"btcusdt@trade","data":"' + b"x" * 20_000 + b'"}', "bad_shape"),
]


def test_bad_frames_go_to_quarantine_and_the_loop_goes_on(
    make_run: Callable[..., tuple[Run, Any]], capture_trade_ids: list[int]
) -> None:
    run, replay = make_run(exchange={"start_on_connect": False})
    run.start()
    await_true("a live connection", lambda: run.health()["live"], 60)
    for raw, _reason in BAD_FRAMES:
        replay.control("inject", frame_hex=raw.hex())
    await_true(
        "every bad frame in quarantine",
        lambda: run.metric("producer_quarantined_total") == len(BAD_FRAMES),
        60,
    )
    replay.control("start")  # the real capture after the bad frames: nothing stopped
    await_true("the capture to be played and published", finished(run, replay), 240)

    quarantined = run.records("quarantine")
    assert sorted((r.value, dict(r.headers)["reason"].decode()) for r in quarantined) == sorted(
        BAD_FRAMES
    )
    assert sorted(trade_ids(run)) == capture_trade_ids
    assert run.stop() == 0


def test_record_mode_writes_a_capture_the_replay_reads_back(
    make_run: Callable[..., tuple[Run, Any]], capture: Capture, tmp_path: Path
) -> None:
    run, _replay = make_run()
    out = tmp_path / "recorded.gz"
    expected = len(capture.frames)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producer",
            "record",
            "--out",
            str(out),
            "--max-frames",
            str(expected),
        ],
        env=run.env,
        cwd=PROJECT_ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.wait(timeout=180) == 0  # stops by itself after max-frames
    finally:
        if process.poll() is None:
            process.kill()
    recorded = read_capture(out)
    assert [f.raw for f in recorded.frames] == [f.raw for f in capture.frames]
    assert all(f.recv_ns > capture.frames[-1].recv_ns for f in recorded.frames)  # our clock


def test_unreachable_kafka_is_a_clear_error(tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, "-m", "producer"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 69
    assert f"kafka at {env['KAFKA_BOOTSTRAP_SERVERS']} is unreachable" in result.stderr


def test_stalled_connection_and_server_shutdown(
    make_run: Callable[..., tuple[Run, Any]], capture_trade_ids: list[int]
) -> None:
    run, replay = make_run(speed=20.0, producer={"watchdog_silence_s": 1.5})
    run.start()
    await_true("3,000 frames played", lambda: replay.status()["frames_published"] > 3000, 120)
    stalled = {c["id"] for c in replay.status()["connections"]}
    replay.control("stall", seconds=6)  # the connection stays open but goes quiet
    await_true("the watchdog", lambda: run.metric('producer_reconnects_total{cause="silent"}'), 30)
    await_true(
        "the replacement connection",
        lambda: (
            run.health()["live"]
            and bool({c["id"] for c in replay.status()["connections"]} - stalled)
        ),
        30,
    )
    replay.control("shutdown", grace=5)
    await_true(
        "a make-before-break replacement after serverShutdown",
        lambda: run.metric('producer_reconnects_total{cause="shutdown"}') >= 1,
        30,
    )
    await_true("the capture to be played and published", finished(run, replay), 300)

    assert sorted(trade_ids(run)) == capture_trade_ids
    assert run.stop() == 0
