"""`make chaos`: the full chaos suite on a stack of its own, then a clean run, then the checks.

    python -m tests.chaos --seed 20261127 --rounds 10 [--speed 1] [--out docs/RELIABILITY.md]

Runs on `.state/chaos` with every port shifted by +20000, so it works next to
`make up` and `make test`. Kafka, MinIO and Prometheus are started for the
suite and stopped at the end. Exits 1 when an invariant does not hold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from streaming_jobs.common.settings import PROJECT_ROOT
from tests.chaos import invariants, report
from tests.chaos.run import ALL_FAULTS, Plan, run
from tests.chaos.stack import Stack, Tuning, write_conf
from tests.conftest import write_test_conf
from tests.demo import CAPTURES

PORT_SHIFT = 20000


def log(line: str) -> None:
    print(f"{dt.datetime.now(dt.UTC):%H:%M:%S} {line}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--speed", default="1")
    parser.add_argument("--faults", default=",".join(ALL_FAULTS))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "RELIABILITY.md")
    args = parser.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(ALL_FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(ALL_FAULTS)}")
    command = f"make chaos SEED={args.seed} ROUNDS={args.rounds} SPEED={args.speed}" + (
        "" if faults == ALL_FAULTS else f" FAULTS={args.faults}"
    )

    state = PROJECT_ROOT / ".state" / "chaos"
    shutil.rmtree(state, ignore_errors=True)
    write_test_conf(state / "base-conf", shift=PORT_SHIFT)
    tuning = Tuning()
    base = {k: v for k, v in os.environ.items() if k not in ("STORAGE", "ACTIVE_SYMBOLS")}
    base.update(STATE_DIR=str(state), TZ="UTC")

    def stack_of(name: str, storage: str) -> Stack:
        conf = write_conf(state / "base-conf", state / f"{name}-conf", name, storage, tuning)
        return Stack({**base, "LAKE_CONF_DIR": str(conf)}, tuning, log)

    chaos = stack_of("chaos", "minio")
    clean = stack_of("clean", "local")
    try:
        log(f"chaos run: {command}")
        plan = Plan(seed=args.seed, rounds=args.rounds, faults=faults, speed=args.speed)
        result = run(chaos, "chaos", plan, CAPTURES, state / "work", log)
        chaos.stop()
        log(f"chaos run done in {result.seconds:.0f} s, {result.loops_done} loops; clean run")
        started = time.monotonic()
        clean_plan = Plan(seed=args.seed, rounds=0, speed="max", loops=result.loops_done)
        clean_result = run(clean, "clean", clean_plan, CAPTURES, state / "work", log)
        clean.stop()
        clean_seconds = round(time.monotonic() - started, 1)
        if clean_result.unsettled:
            log(f"the clean run did not settle: {clean_result.unsettled}")
            return 1
        checks = invariants.check_all(chaos, result, invariants.snapshot(clean.settings), CAPTURES)
    finally:
        chaos.stop()
        clean.stop()
        chaos.script("services", "down")
    report.write(args.out, result, checks, command, clean_seconds)
    for check in checks:
        log(f"{'ok ' if check.ok else 'NO '} {check.name}: {check.detail}")
    log(f"report: {args.out} ({shlex.quote(str(args.out.with_suffix('.json')))})")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
