"""The stack a chaos run breaks: its configuration, its processes, and what they say.

A run has a name; its topics (`<name>.trades`, ...), its lake (bucket or
folder `<name>-lake`) and its producer state are its own, so a clean run and a
chaos run on the same Kafka and MinIO never see each other's data. Time is
compressed so faults that take hours on Binance take seconds here: a
connection rolls over after `rollover_after_s`, a silent one is replaced after
`watchdog_silence_s`, the replay exchange pings every `ping_interval_s` and
closes a connection whose pong is `pong_timeout_s` late, and a supervisor backs
off at most `restart_backoff_max_s` between restarts.

Every process is started and stopped through the same infra/ scripts as
`make up`; the only thing this module does by hand is SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from producer.replay.exchange import ReplayClient
from streaming_jobs.common import progress
from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings
from tests.support import get_json

INFRA = PROJECT_ROOT / "infra"
LAYERS = ("bronze", "silver", "gold")
SUPERVISED = ("producer", *LAYERS)
SERVICES = ("kafka", "minio", "prometheus")
# The process pattern of each unsupervised service (infra/<name>.sh PATTERN).
PATTERNS = {"kafka": "kafka.Kafka", "minio": "minio server"}


@dataclass(frozen=True)
class Tuning:
    rollover_after_s: int = 20
    watchdog_silence_s: int = 4
    ping_interval_s: float = 2.0
    pong_timeout_s: float = 3.0
    restart_backoff_max_s: float = 8.0


def write_conf(base: Path, dest: Path, name: str, storage: str, tuning: Tuning) -> Path:
    """`base` (a conf/ directory) with the run's own topics, lake, state and compressed time."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest)
    pipeline = yaml.safe_load((dest / "pipeline.yaml").read_text())
    for spec in pipeline["kafka"]["topics"].values():
        spec["name"] = f"{name}.{spec['name']}"
    pipeline["storage"].update(profile=storage, local_root=f"{name}-lake", s3_bucket=f"{name}-lake")
    pipeline["producer"].update(
        state_file=f"{name}/producer-state.json",
        rollover_after_s=tuning.rollover_after_s,
        watchdog_silence_s=tuning.watchdog_silence_s,
    )
    pipeline["services"].update(
        restart_backoff_initial_s=1, restart_backoff_max_s=tuning.restart_backoff_max_s
    )
    (dest / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return dest


class Stack:
    """The processes of one run, on the state dir and conf of `env`."""

    def __init__(self, env: dict[str, str], tuning: Tuning, log: Any = print) -> None:
        self.env = {k: v for k, v in env.items() if k != "MAKEFLAGS"}
        self.tuning = tuning
        self.settings: Settings = load_settings(Path(env["LAKE_CONF_DIR"]), self.env)
        self.log = log
        host, services = self.settings.services.host, self.settings.services
        self.replay = ReplayClient(f"http://{host}:{services.replay_port}")
        self.producer_url = f"http://{host}:{services.producer_metrics_port}"

    # -- infra scripts --

    def script(
        self, name: str, *args: str, timeout: float = 600, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(INFRA / f"{name}.sh"), *args],
            env={**self.env, **env},
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def must(self, name: str, *args: str, **env: str) -> None:
        done = self.script(name, *args, **env)
        if done.returncode != 0:
            raise RuntimeError(f"infra/{name}.sh {' '.join(args)}: {done.stdout}{done.stderr}")

    def start(self, captures: list[Path], speed: str, loops: int) -> None:
        """Kafka, MinIO, Prometheus (unless up), the replay exchange, the producer, the layers."""
        self.must("services", "up", *SERVICES)
        self.must(
            "replay",
            "start",
            CAPTURE=",".join(str(c) for c in captures),
            SPEED=speed,
            LOOPS=str(loops),
            PING_INTERVAL=str(self.tuning.ping_interval_s),
            PONG_TIMEOUT=str(self.tuning.pong_timeout_s),
        )
        self.must("producer", "start", PRODUCER_SOURCE="replay")
        for layer in LAYERS:
            self.must(layer, "start")

    def stop(self) -> None:
        """Everything but Kafka, MinIO and Prometheus (shared with other runs)."""
        self.script("services", "down", "replay", "producer", *LAYERS)

    def restart_producer_gracefully(self) -> dict[str, int]:
        """Stop the producer (SIGTERM: it flushes), read every topic's end, start it again."""
        self.must("producer", "stop")
        ends = self.topic_ends()
        self.must("producer", "start", PRODUCER_SOURCE="replay")
        return ends

    # -- state --

    def pid(self, name: str) -> int | None:
        """The pid in infra's pid file of an unsupervised service, if that process runs."""
        path = self.settings.state_dir / "pids" / f"{name}.pid"
        try:
            pid = int(path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            return None
        return pid if PATTERNS[name] in cmdline else None

    def supervised(self, name: str) -> dict[str, Any]:
        """infra/supervise.py's state of a supervised service ({} before it ever started)."""
        path = self.settings.state_dir / "supervise" / f"{name}.json"
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return state

    def child(self, name: str) -> int | None:
        """The running child of a supervised service (None while it is restarting)."""
        state = self.supervised(name)
        pid = state.get("child_pid")
        if state.get("state") != "running" or not pid or not Path(f"/proc/{pid}").exists():
            return None
        return int(pid)

    def producer_health(self) -> dict[str, Any] | None:
        try:
            health: dict[str, Any] = get_json(f"{self.producer_url}/health")
        except (OSError, ValueError):
            return None
        return health

    def producer_metrics(self) -> dict[str, float]:
        try:
            return progress.scrape(f"{self.producer_url}/metrics")
        except (OSError, ValueError):
            return {}

    def topic_ends(self) -> dict[str, int]:
        """Records in each of the run's topics (sum over partitions)."""
        ends = progress.end_offsets(self.settings)
        totals: dict[str, int] = {}
        for (topic, _partition), end in (ends or {}).items():
            totals[topic] = totals.get(topic, 0) + end
        return totals

    def processes_down(self) -> list[str]:
        """`make status` lines of processes that are not running ("sick" is running: a
        producer whose replayed capture has ended is not live, and says so)."""
        screen = self.script("services", "status", timeout=120).stdout
        table = screen.split("\n\n", 1)[0].splitlines()[1:]
        return [line for line in table if line.split()[1:2] not in (["up"], ["sick"])]


def sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def await_value(what: str, probe: Any, deadline_s: float, poll_s: float = 0.2) -> Any:
    """Poll `probe()` until it returns something truthy; that value, or TimeoutError."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
