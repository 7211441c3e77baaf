"""What every benchmark shares: a Kafka broker for its run, and where its results go."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streaming_jobs.common.settings import PROJECT_ROOT

SERVICES = str(PROJECT_ROOT / "infra" / "services.sh")
# Timed runs of a peer measured for a ratio (median taken).
TIMED_RUNS = 3


@contextmanager
def kafka_running(env: dict[str, str]) -> Iterator[None]:
    """The broker of `env`'s state dir, up for the block and stopped after it."""
    up = subprocess.run([SERVICES, "up", "kafka"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        raise SystemExit(f"kafka did not start:\n{up.stdout}\n{up.stderr}")
    try:
        yield
    finally:
        subprocess.run([SERVICES, "down"], env=env, capture_output=True)


def results_dir() -> Path:
    """docs/ for `make bench`; BENCH_RESULTS_DIR elsewhere (`make bench-quick`), so a
    quick pass never replaces the full run's figures."""
    return Path(os.environ.get("BENCH_RESULTS_DIR") or PROJECT_ROOT / "docs")


def publish_results(name: str, report: dict[str, Any]) -> None:
    """bench/<name>.json, then BENCHMARKS.md generated again from every bench/*.json."""
    out = results_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    from tests.bench.report import write_doc  # the renderers import this module

    print(write_doc(results_dir()))


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, nearest rank below (as every bench reports it)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_time(run: Callable[[], None], runs: int = TIMED_RUNS) -> float:
    """The median wall time of `runs` calls of `run`, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
