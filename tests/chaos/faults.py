"""The faults a chaos run injects, each a method that breaks one thing and says what happened.

Four kinds, as the issue names them:
- websocket: the replay exchange drops the connection, announces
  `serverShutdown`, misses a pong, stalls (sends nothing, pings included), or
  the producer's compressed 24 h rollover comes due;
- process: SIGKILL of the producer, the Kafka broker, MinIO, a Spark
  driver in the middle of a Hudi commit when one is in flight, or bronze's
  driver in the middle of a clustering run (its upkeep thread rewriting a
  table's small files beside the writer); supervised
  processes come back by themselves, Kafka and MinIO are started again by
  their infra scripts after an outage of a few seconds;
- bad input: broken real frames sent by the exchange (the producer must
  quarantine them) or written straight to Kafka (bronze must);
- bad configuration: an entry point started with an unknown key, an invalid
  symbol or a wrongly typed value must exit 78 with one clear line; a
  producer restarted while Kafka is down must exit 69, be restarted by its
  supervisor and recover once Kafka is back.

Each fault first awaits what it needs (a live connection, a running driver),
so a fault is never lost on a component that is already down; a fault that
cannot do its work, or whose component does not recover, raises FaultFailed.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from producer.binance.streams import stream_groups
from producer.router import Quarantined, Routed, Router
from streaming_jobs.catalog import written_by
from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.s3 import S3Error
from streaming_jobs.common.settings import PROJECT_ROOT
from tests import badconfig
from tests.chaos.stack import LAYERS, Stack, await_value, sigkill
from tests.fuzzing import ACCEPTED, MEGABYTE, corpus
from tests.support import free_port

# What a driver writes: a pending commit of one of these is "the middle of a batch".
LAYER_TABLES = {
    "bronze": ("bronze_trades", "bronze_book_ticker", "bronze_depth_updates"),
    "silver": ("silver_ohlcv",),
    "gold": ("gold_market_summary", "gold_correlation", "gold_risk", "gold_signals"),
}
RECOVERY_S = 180.0
# Bronze's writers plan a clustering every 30 commits, its upkeep runs each plan within
# 10 s: a minute at the fast lane's idle pace, 5 minutes on a loaded chaos stack whose
# batches take 10 s (300 s was too short in one run of make chaos).
CLUSTERING_WAIT_S = 900.0
FRAMES_PER_INJECTION = 3


class FaultFailed(RuntimeError):
    """A fault could not be injected, or what it broke did not come back."""


@dataclass(frozen=True)
class BadFrame:
    what: str  # what was broken, e.g. "p='-1'"
    raw: bytes
    reason: str = ""  # the producer's reason (frames it quarantines)
    topic: str = ""  # the topic it is written to (frames only bronze can judge)
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def inject_params(self) -> dict[str, Any]:
        """/control/inject parameters: long runs of one byte at the end go as padding."""
        body = self.raw.rstrip(self.raw[-1:])
        pad = len(self.raw) - len(body)
        if pad < 64:
            return {"frame_hex": self.raw.hex()}
        return {"frame_hex": body.hex(), "pad_hex": self.raw[-1:].hex(), "pad_count": pad}


@dataclass(frozen=True)
class BadFrames:
    """The fuzzed corpus split by who must catch each frame."""

    at_producer: tuple[BadFrame, ...]
    at_bronze: tuple[BadFrame, ...]

    @classmethod
    def build(cls, stack: Stack, base: dict[str, tuple[str, int]]) -> BadFrames:
        """`base`: kind -> (a real frame, its receive ns). The live producer's Router decides."""
        settings = stack.settings
        subscribed = frozenset(
            s
            for g in stream_groups(settings.symbols, settings.producer.max_streams_per_connection)
            for s in g.streams
        )
        router = Router(settings, subscribed)
        recv = {kind: recv_ns for kind, (_frame, recv_ns) in base.items()}
        at_producer, at_bronze = [], []
        for kind, what, raw in corpus({kind: frame for kind, (frame, _ns) in base.items()}):
            route = router.route(raw, recv_ns=recv[kind], connection="chaos")
            if isinstance(route, Quarantined):
                at_producer.append(BadFrame(f"{kind} {what}", raw, reason=route.reason))
            elif isinstance(route, Routed) and what not in ACCEPTED:
                record = route.record
                at_bronze.append(
                    BadFrame(f"{kind} {what}", raw, "", record.topic, record.key, record.headers)
                )
        return cls(tuple(at_producer), tuple(at_bronze))


@dataclass
class Injection:
    fault: str
    kind: str
    started_s: float  # since the run began
    seconds: float = 0.0
    outcome: dict[str, Any] = field(default_factory=dict)
    problem: str = ""


class Faults:
    """Every fault of a run, with what it injected (the expected quarantine)."""

    def __init__(self, stack: Stack, rng: random.Random, frames: BadFrames, workdir: Path) -> None:
        self.stack = stack
        self.rng = rng
        self.frames = frames
        self.workdir = workdir
        self.injected: list[BadFrame] = []  # one entry per copy that reached the producer or Kafka
        self.bad_config_runs = 0
        self.kafka_down_runs = 0
        self.kinds: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
            "ws_drop": ("websocket", self.ws_drop),
            "ws_server_shutdown": ("websocket", self.ws_server_shutdown),
            "ws_missed_pong": ("websocket", self.ws_missed_pong),
            "ws_stall": ("websocket", self.ws_stall),
            "ws_rollover": ("websocket", self.ws_rollover),
            "kill_producer": ("process", self.kill_producer),
            "kill_kafka": ("process", lambda: self.kill_service("kafka")),
            "kill_minio": ("process", lambda: self.kill_service("minio")),
            **{
                f"kill_{layer}": ("process", (lambda layer=layer: self.kill_driver(layer)))
                for layer in LAYERS
            },
            "kill_bronze_clustering": ("process", lambda: self.kill_clustering("bronze")),
            "bad_frames_ws": ("bad input", self.bad_frames_ws),
            "bad_frames_kafka": ("bad input", self.bad_frames_kafka),
            "bad_config": ("bad config", self.bad_config),
            "kafka_down_at_start": ("bad config", self.kafka_down_at_start),
        }

    # -- websocket --

    def _one_live_connection(self) -> dict[str, Any]:
        """The producer live on exactly one open connection (none being replaced)."""

        def probe() -> dict[str, Any] | None:
            health = self.stack.producer_health()
            if not health or not health.get("live"):
                return None
            connections = self.stack.replay.status()["connections"]
            return connections[0] if len(connections) == 1 else None

        connection: dict[str, Any] = await_value(
            "the producer live on one connection", probe, RECOVERY_S
        )
        return connection

    def _replaced(self, old_id: int, deadline_s: float = RECOVERY_S) -> float:
        """Seconds until a newer connection carries the producer (live again)."""
        started = time.monotonic()

        def probe() -> bool:
            health = self.stack.producer_health()
            connections = self.stack.replay.status()["connections"]
            return bool(
                health
                and health.get("live")
                and connections
                and all(c["id"] > old_id for c in connections)
            )

        await_value(f"a connection replacing {old_id}", probe, deadline_s)
        return round(time.monotonic() - started, 2)

    def ws_drop(self) -> dict[str, Any]:
        old = self._one_live_connection()
        dropped = self.stack.replay.control("drop")["dropped"]
        return {"dropped": dropped, "recovery_s": self._replaced(old["id"])}

    def ws_server_shutdown(self) -> dict[str, Any]:
        old = self._one_live_connection()
        self.stack.replay.control("shutdown", grace=3)
        return {"recovery_s": self._replaced(old["id"])}

    def ws_missed_pong(self) -> dict[str, Any]:
        old = self._one_live_connection()
        self.stack.replay.control("miss_pongs")
        return {"recovery_s": self._replaced(old["id"])}

    def ws_stall(self) -> dict[str, Any]:
        old = self._one_live_connection()
        seconds = self.stack.tuning.watchdog_silence_s + 3
        self.stack.replay.control("stall", seconds=seconds)
        return {"stall_s": seconds, "recovery_s": self._replaced(old["id"])}

    def ws_rollover(self) -> dict[str, Any]:
        """Await the compressed 24 h rollover: make-before-break, so never not live.

        A connection can be replaced for another cause meanwhile (the replay's
        silence between two loops trips the watchdog): then await the next one.
        """
        rollovers = 'producer_reconnects_total{cause="rollover"}'
        started = time.monotonic()
        deadline = started + self.stack.tuning.rollover_after_s * 3 + RECOVERY_S
        while time.monotonic() < deadline:
            old = self._one_live_connection()
            before = self._producer_counter(rollovers)
            self._replaced(old["id"], self.stack.tuning.rollover_after_s + RECOVERY_S)
            after = self._producer_counter(rollovers)
            if after[0] == before[0] and after[1] > before[1]:
                return {"waited_s": round(time.monotonic() - started, 2)}
        raise FaultFailed("no rollover came due")

    # -- process --

    def _producer_counter(self, name: str) -> tuple[float, float]:
        """(the producer's incarnation, a counter's value in it).

        `name` is a family, summed over its label sets, or one sample with its
        labels (`name{label="value"}`).
        """
        samples = self.stack.producer_metrics()
        incarnation = samples.get("process_start_time_seconds{}", -1.0)
        value = samples.get(name, 0.0) if "{" in name else progress.total(samples, name)
        return incarnation, value

    def kill_producer(self) -> dict[str, Any]:
        self._one_live_connection()
        pid = await_value("the producer running", lambda: self.stack.child("producer"), RECOVERY_S)
        restarts = self.stack.supervised("producer")["restarts"]
        sigkill(pid)
        started = time.monotonic()
        await_value(
            "the producer restarted and live",
            lambda: (
                self.stack.supervised("producer").get("restarts") == restarts + 1
                and (self.stack.producer_health() or {}).get("live")
            ),
            RECOVERY_S,
        )
        return {"recovery_s": round(time.monotonic() - started, 2)}

    def kill_service(self, name: str) -> dict[str, Any]:
        pid = await_value(f"{name} running", lambda: self.stack.pid(name), RECOVERY_S)
        sigkill(pid)
        outage = round(self.rng.uniform(1.0, 6.0), 1)
        time.sleep(outage)  # the outage is the fault: nothing to await
        started = time.monotonic()
        self.stack.must(name, "start")
        return {"outage_s": outage, "restart_s": round(time.monotonic() - started, 2)}

    def _metrics(self, layer: str) -> dict[str, float]:
        """The driver's /metrics ({} while it does not answer)."""
        port = self.stack.settings.layer(layer).metrics_port
        try:
            return progress.scrape(f"http://{self.stack.settings.services.host}:{port}/metrics")
        except ValueError:  # a page cut short by a kill
            return {}

    def kill_driver(self, layer: str) -> dict[str, Any]:
        """SIGKILL a driver that is at work, while one of its commits is in flight if any is."""

        def working() -> int | None:
            pid = self.stack.child(layer)
            active = progress.total(self._metrics(layer), "lakehouse_query_active")
            return pid if active else None

        pid = await_value(f"{layer}'s queries running", working, RECOVERY_S)

        def pending() -> str | None:
            for table in LAYER_TABLES[layer]:
                try:
                    if lakefiles.pending_instants(self.stack.settings, table):
                        return table
                except S3Error:  # MinIO just restarted
                    continue
            return None

        try:
            table = await_value(f"a commit of {layer} in flight", pending, 20, poll_s=0.05)
        except TimeoutError:
            table = None
        sigkill(pid)
        return {"mid_commit": table is not None, "table": table}

    def kill_clustering(self, layer: str) -> dict[str, Any]:
        """SIGKILL a driver while its upkeep rewrites a table: the driver says a run is
        under way (lakehouse_clustering_running) and the run has begun on the timeline."""

        def under_way() -> tuple[int, str] | None:
            pid = self.stack.child(layer)
            samples = self._metrics(layer)
            for table in (t.name for t in written_by(layer) if t.write.cluster_every):
                running = f'lakehouse_clustering_running{{layer="{layer}",table="{table}"}}'
                if samples.get(running) != 1:
                    continue
                try:
                    if pid and lakefiles.timeline(self.stack.settings, table).clustering:
                        return pid, table
                except S3Error:  # MinIO just restarted
                    continue
            return None

        started = time.monotonic()
        pid, table = await_value(
            f"a clustering run of {layer} under way", under_way, CLUSTERING_WAIT_S, poll_s=0.1
        )
        sigkill(pid)
        return {"table": table, "waited_s": round(time.monotonic() - started, 2)}

    # -- bad input --

    def _pick(self, frames: tuple[BadFrame, ...]) -> list[BadFrame]:
        """A few frames; every injection also has one of the biggest or strangest."""
        special = [f for f in frames if len(f.raw) >= MEGABYTE or b"\xff" in f.raw]
        picked = self.rng.sample(frames, FRAMES_PER_INJECTION - 1)
        return [*picked, self.rng.choice(special or frames)]

    def bad_frames_ws(self) -> dict[str, Any]:
        frames = self._pick(self.frames.at_producer)
        self._one_live_connection()
        incarnation, before = self._producer_counter("producer_quarantined_total")
        copies = 0
        for frame in frames:
            sent = int(self.stack.replay.control("inject", **frame.inject_params())["sent_to"])
            self.injected += [frame] * sent
            copies += sent
        await_value(
            f"{copies} bad frames quarantined by the producer",
            lambda: (
                self._producer_counter("producer_quarantined_total")
                >= (incarnation, before + copies)
            ),
            60,
        )
        return {"frames": [f.what for f in frames], "copies": copies}

    def bad_frames_kafka(self) -> dict[str, Any]:
        frames = self._pick(self.frames.at_bronze)
        await_value("kafka running", lambda: self.stack.pid("kafka"), RECOVERY_S)
        producer = KafkaProducer(
            bootstrap_servers=self.stack.settings.kafka_bootstrap_servers, acks="all"
        )
        try:
            for frame in frames:
                producer.send(
                    frame.topic, key=frame.key, value=frame.raw, headers=list(frame.headers)
                ).get(timeout=60)
                self.injected.append(frame)
        finally:
            producer.close(timeout=10)
        return {"frames": [f.what for f in frames]}

    # -- bad configuration --

    def bad_config(self) -> dict[str, Any]:
        """One entry point with one bad config (they take turns): exit 78, one clear line."""
        n = self.bad_config_runs
        self.bad_config_runs += 1
        cases = sorted(badconfig.BAD_CONFIGS)
        case = cases[n % len(cases)]
        python = str(PROJECT_ROOT / ".venv" / "bin" / "python")
        entries = [
            [python, "-m", "producer"],
            *([str(PROJECT_ROOT / "spark-submit.sh"), layer] for layer in LAYERS),
            [str(PROJECT_ROOT / "infra" / "services.sh"), "up", "kafka"],
            [str(PROJECT_ROOT / ".venv" / "bin" / "lakehouse"), "tables"],
        ]
        entry = entries[n % len(entries)]
        root = self.workdir / f"bad-config-{n}"
        env, message = badconfig.bad_conf(
            Path(self.stack.env["LAKE_CONF_DIR"]), root, case, self.stack.env
        )
        done = subprocess.run(
            entry, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
        )
        name = " ".join(Path(a).name for a in entry[:3])
        if done.returncode != 78 or message not in done.stderr or "Traceback" in done.stderr:
            raise FaultFailed(f"{name} with {case}: exit {done.returncode}: {done.stderr[-500:]}")
        return {"case": case, "entry": name, "exit": 78}

    def kafka_down_at_start(self) -> dict[str, Any]:
        """Kafka unreachable when the producer (re)starts: exit 69, restarted, recovers."""
        self.kafka_down_runs += 1
        if self.kafka_down_runs % 2 == 1:
            # A producer started by hand on an address nobody listens on.
            env = {**self.stack.env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
            env["STATE_DIR"] = str(self.workdir / "unreachable")
            done = subprocess.run(
                [str(PROJECT_ROOT / ".venv" / "bin" / "python"), "-m", "producer"],
                env=env,
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 69 or "is unreachable" not in done.stderr:
                raise FaultFailed(
                    f"producer on a closed port: exit {done.returncode}: {done.stderr}"
                )
            return {"case": "closed port", "exit": 69}
        self._one_live_connection()
        kafka = await_value("kafka running", lambda: self.stack.pid("kafka"), RECOVERY_S)
        producer = await_value("the producer running", lambda: self.stack.child("producer"), 60)
        sigkill(kafka)
        sigkill(producer)
        await_value(
            "the restarted producer to exit 69 (Kafka unreachable)",
            lambda: self.stack.supervised("producer").get("last_exit") == 69,
            RECOVERY_S,
        )
        self.stack.must("kafka", "start")
        started = time.monotonic()
        await_value(
            "the producer live again",
            lambda: (
                self.stack.child("producer") and (self.stack.producer_health() or {}).get("live")
            ),
            RECOVERY_S,
        )
        return {
            "case": "supervised restart",
            "exit": 69,
            "recovery_s": round(time.monotonic() - started, 2),
        }


def base_frames(capture_frames: list[Any]) -> dict[str, tuple[str, int]]:
    """A real frame of each stream kind the capture has: kind -> (frame text, receive ns)."""
    kinds = {"trade": "@trade", "bookTicker": "@bookTicker", "depthUpdate": "@depth@100ms"}
    found: dict[str, tuple[str, int]] = {}
    for frame in capture_frames:
        for kind, suffix in kinds.items():
            if kind not in found and frame.stream.endswith(suffix):
                found[kind] = (frame.raw.decode(), frame.recv_ns)
    missing = set(kinds) - set(found)
    if missing:
        raise ValueError(f"the capture has no frame of {sorted(missing)}")
    return found
