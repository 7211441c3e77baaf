"""One chaos run: start the stack on a replayed capture, inject the seeded schedule, settle.

The schedule is `rounds` rounds; each round injects every fault of the plan
once, in an order drawn from the seed, with a pause of `gap_s` between faults.
The replay exchange loops the capture (each loop shifted in ids and time, as
it would continue) until the schedule is done, then finishes the loop it is
in. Before settling, the producer is restarted gracefully once, so that its
final incarnation's counters can be checked exactly against Kafka.

A clean run is the same without faults: `rounds=0` and a fixed loop count.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.replay.captures import merge_captures
from producer.replay.exchange import ReplayControlError
from streaming_jobs.common import progress
from tests.chaos.faults import BadFrame, BadFrames, FaultFailed, Faults, Injection, base_frames
from tests.chaos.stack import LAYERS, SUPERVISED, Stack, await_value

ALL_FAULTS = (
    "ws_drop",
    "ws_server_shutdown",
    "ws_missed_pong",
    "ws_stall",
    "ws_rollover",
    "kill_producer",
    "kill_kafka",
    "kill_minio",
    "kill_bronze",
    "kill_bronze_clustering",
    "kill_silver",
    "kill_gold",
    "bad_frames_ws",
    "bad_frames_kafka",
    "bad_config",
    "kafka_down_at_start",
)
INCARNATION = "process_start_time_seconds{}"  # one producer run from the next


@dataclass(frozen=True)
class Plan:
    seed: int
    rounds: int
    faults: tuple[str, ...] = ALL_FAULTS
    gap_s: tuple[float, float] = (0.5, 2.5)
    speed: str = "1"
    loops: int = 0  # 0: loop until the schedule is done
    settle_s: float = 1800.0


@dataclass
class RunResult:
    name: str
    plan: Plan
    seconds: float = 0.0
    loops_done: int = 0
    injections: list[Injection] = field(default_factory=list)
    injected: list[BadFrame] = field(default_factory=list)
    incarnations: dict[float, dict[str, float]] = field(default_factory=dict)
    final_producer: dict[str, float] = field(default_factory=dict)
    ends_at_restart: dict[str, int] = field(default_factory=dict)
    ends_final: dict[str, int] = field(default_factory=dict)
    unsettled: str = ""  # why the pipeline did not settle ("" when it did)
    restarts: dict[str, int] = field(default_factory=dict)
    down: str = ""  # `make status` when something was down at the end


class ProducerWatch(threading.Thread):
    """Scrapes the producer's counters twice a second, keeping each incarnation's last."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="producer-watch", daemon=True)
        self.stack = stack
        self.incarnations: dict[float, dict[str, float]] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            samples = self.stack.producer_metrics()
            if INCARNATION in samples:
                self.incarnations[samples[INCARNATION]] = {
                    k: v for k, v in samples.items() if k.startswith("producer_")
                }

    def stop(self) -> dict[float, dict[str, float]]:
        self._done.set()
        self.join(5)
        return self.incarnations


def run(
    stack: Stack,
    name: str,
    plan: Plan,
    captures: list[Path],
    workdir: Path,
    log: Callable[[str], None] = print,
) -> RunResult:
    result = RunResult(name, plan)
    rng = random.Random(plan.seed)
    capture = merge_captures(captures)
    frames = BadFrames.build(stack, base_frames(capture.frames))
    faults = Faults(stack, rng, frames, workdir)
    started = time.monotonic()
    stack.start(captures, plan.speed, plan.loops)
    watch = ProducerWatch(stack)
    watch.start()
    try:
        for round_no in range(plan.rounds):
            for fault in rng.sample(plan.faults, len(plan.faults)):
                time.sleep(rng.uniform(*plan.gap_s))  # the seeded pause between faults
                result.injections.append(inject(faults, fault, started, log, round_no))
        await_value("every component up", lambda: everything_up(stack), 600, poll_s=1)
        result.ends_at_restart = stack.restart_producer_gracefully()
        if plan.loops == 0:
            stack.replay.control("finish")
        handled, result.unsettled = progress.await_settled(stack.settings, plan.settle_s)
        log(f"{name}: settled, the producer handled {handled} frames in its last run")
        result.final_producer = stack.producer_metrics()
        result.ends_final = stack.topic_ends()
        result.loops_done = stack.replay.status()["loops_done"]
        result.down = "\n".join(stack.processes_down())
        result.restarts = {s: int(stack.supervised(s).get("restarts", 0)) for s in SUPERVISED}
    finally:
        result.incarnations = watch.stop()
        result.injected = faults.injected
        result.seconds = round(time.monotonic() - started, 1)
    return result


def inject(
    faults: Faults, fault: str, started: float, log: Callable[[str], None], round_no: int
) -> Injection:
    kind, action = faults.kinds[fault]
    injection = Injection(fault, kind, round(time.monotonic() - started, 1))
    begun = time.monotonic()
    try:
        injection.outcome = action()
    except (FaultFailed, TimeoutError, ReplayControlError, RuntimeError, OSError) as exc:
        injection.problem = f"{type(exc).__name__}: {exc}"
    injection.seconds = round(time.monotonic() - begun, 1)
    log(
        f"round {round_no + 1} +{injection.started_s:7.1f}s {fault:<20} "
        f"{injection.problem or injection.outcome}"
    )
    return injection


def everything_up(stack: Stack) -> bool:
    health = stack.producer_health() or {}
    return bool(
        health.get("live")
        and all(stack.child(layer) for layer in LAYERS)
        and stack.pid("kafka")
        and stack.pid("minio")
    )


def summary(result: RunResult) -> dict[str, Any]:
    """Per fault: how many were injected, how many failed, and what they did."""
    faults: dict[str, dict[str, Any]] = {}
    for injection in result.injections:
        entry = faults.setdefault(
            injection.fault, {"kind": injection.kind, "injected": 0, "failed": 0, "outcomes": []}
        )
        entry["injected"] += 1
        entry["failed"] += bool(injection.problem)
        entry["outcomes"].append(injection.problem or injection.outcome)
    order = {name: i for i, name in enumerate(ALL_FAULTS)}
    return dict(sorted(faults.items(), key=lambda item: order.get(item[0], len(order))))
