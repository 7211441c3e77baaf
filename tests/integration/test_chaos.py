"""The chaos suite's bounded subset: one round of the faults on the demo's capture.

The stack runs on the tests' Kafka and MinIO (which it kills and restarts like
the full suite), with topics of its own and its lake and checkpoints on
MinIO; the clean reference is the session's `make demo ONCE=1` run on the
same capture (tests/integration/conftest.py). `make chaos` runs 10 rounds.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from streaming_jobs.common.settings import LAYERS
from tests.chaos import invariants
from tests.chaos.run import ALL_FAULTS, Plan, run
from tests.chaos.stack import Stack, Tuning, write_conf
from tests.demo import CAPTURES, Demo

SEED = 8
# Every fault but the kill mid-clustering: bronze's writer plans a clustering every 30
# fast-lane commits, 3-4 minutes on this loaded stack (185 s of waiting in one run),
# which the round cannot add and stay within one loop of the capture. make chaos
# runs it every round.
FAULTS = tuple(f for f in ALL_FAULTS if f != "kill_bronze_clustering")


def log(line: str) -> None:
    print(f"{dt.datetime.now(dt.UTC):%H:%M:%S} {line}", flush=True)


def _nice(pid: int | None) -> int | None:
    """A process's nice value (the 19th field of /proc/<pid>/stat, after the name)."""
    if pid is None:
        return None
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_one_round_of_every_fault_loses_and_duplicates_nothing(
    demo: Demo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("chaos")
    tuning = Tuning()
    conf = write_conf(Path(os.environ["LAKE_CONF_DIR"]), root / "conf", "chaos", "minio", tuning)
    stack = Stack({**os.environ, "LAKE_CONF_DIR": str(conf)}, tuning, log)
    # Speed 1: one loop of the capture (346 s) outlasts the round, as the demo played one.
    plan = Plan(seed=SEED, rounds=1, faults=FAULTS, speed="1", settle_s=900)
    try:
        result = run(stack, "chaos", plan, CAPTURES, root, log)
        # Each driver, restarted ones too, runs at its layer's CPU priority.
        priorities = {layer: _nice(stack.child(layer)) for layer in LAYERS}
    finally:
        stack.stop()
    assert priorities == {layer: stack.settings.layer(layer).nice for layer in LAYERS}
    assert priorities["gold"] > 0, "the shipped conf lets gold yield to bronze and silver"
    assert sorted(i.fault for i in result.injections) == sorted(FAULTS)
    failed = [f"{i.fault}: {i.problem}" for i in result.injections if i.problem]
    assert not failed, "\n".join(failed)
    assert result.loops_done == 1, "the round outlasted one loop of the capture: slow it down"
    checks = invariants.check_all(stack, result, demo.clean, CAPTURES)
    for check in checks:
        log(f"{'ok ' if check.ok else 'NO '} {check.name}: {check.detail}")
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, "\n".join(failed)
