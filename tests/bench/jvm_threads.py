"""Where a driver's CPU goes: CPU per thread of the bronze, silver and gold JVMs, from /proc.

    python -m tests.bench.jvm_threads [--state .state] [--seconds 60]

Samples /proc/<pid>/task/*/stat of each driver every `interval_s` and sums
each thread's CPU (utime + stime) over the window, by thread name with its
numbers folded ("Executor task launch worker for task N..." is one class).
Spark's executor threads (tasks) are the data work; the query's "stream
execution thread" plans, generates code and runs Hudi's commit bookkeeping;
"C1/C2 CompilerThread" is the JIT; "GC Thread" and "G1 Conc" are the
collector. A thread that starts and ends between two samples is missed:
`unseen` is the process's CPU no sampled thread accounts for.

`make bench-cpu` (tests/bench/live_bench.py --capture demo) records this
for the drivers over its measured window.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streaming_jobs.common.settings import PROJECT_ROOT

_TICK = os.sysconf("SC_CLK_TCK")
DRIVERS = ("bronze", "silver", "gold")


def _thread_times(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (name, CPU seconds) of every live thread of `pid`."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def _process_time(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_class(name: str) -> str:
    return re.sub(r"[0-9]+", "N", name)


class ThreadProfile:
    """CPU per thread class of some processes over a window, sampled in a daemon thread."""

    def __init__(self, pids: dict[str, int], interval_s: float = 1.0) -> None:
        self._pids = pids
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jvm-threads", daemon=True)
        self._start: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, tuple[str, float]]] = {}
        self._process: dict[str, tuple[float, float]] = {}
        self._wall = (0.0, 0.0)

    def start(self) -> ThreadProfile:
        for name, pid in self._pids.items():
            threads = _thread_times(pid)
            self._start[name] = {tid: cpu for tid, (_, cpu) in threads.items()}
            self._last[name] = threads
            self._process[name] = (_process_time(pid) or 0.0, 0.0)
        self._wall = (time.monotonic(), 0.0)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for name, pid in self._pids.items():
                self._last[name].update(_thread_times(pid))

    def stop(self) -> dict[str, Any]:
        """{driver: {"cores": process, "threads": {class: cores}, "unseen": cores}}."""
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._wall[0]
        out: dict[str, Any] = {"window_s": round(wall, 1)}
        for name, pid in self._pids.items():
            ended = _process_time(pid)
            if ended is None:  # restarted in the window: its figures would mislead
                continue
            start = self._start[name]
            classes: dict[str, float] = {}
            for tid, (thread, cpu) in self._last[name].items():
                used = cpu - start.get(tid, 0.0)
                classes[thread_class(thread)] = classes.get(thread_class(thread), 0.0) + used
            process = (ended - self._process[name][0]) / wall
            seen = sum(classes.values()) / wall
            top = sorted(classes.items(), key=lambda kv: -kv[1])
            out[name] = {
                "cores": round(process, 3),
                "threads": {k: round(v / wall, 3) for k, v in top if v / wall >= 0.005},
                "unseen": round(max(0.0, process - seen), 3),
            }
        return out


def driver_pids(state: Path) -> dict[str, int]:
    """The JVM of each layer's driver started under STATE_DIR `state`."""
    from tests.bench.market_bench import stack_processes  # /proc, with its components

    found: dict[str, int] = {}
    for pid, (component, _rss, _cpu) in stack_processes(state).items():
        if component not in DRIVERS:
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.endswith("/java"):
            found[component] = pid
    return found


def render(profile: dict[str, Any]) -> list[str]:
    lines = [
        f"| driver | cores | top thread classes (cores), over {profile['window_s']:g} s |",
        "|---|---|---|",
    ]
    for name in DRIVERS:
        p = profile.get(name)
        if not p:
            continue
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(p["threads"].items())[:6])
        lines.append(f"| {name} | {p['cores']:.2f} | {top}; unseen {p['unseen']:.2f} |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.jvm_threads")
    parser.add_argument("--state", type=Path, default=PROJECT_ROOT / ".state")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    pids = driver_pids(args.state.resolve())
    if not pids:
        print(f"no bronze, silver or gold driver running under {args.state}", file=sys.stderr)
        return 1
    profile = ThreadProfile(pids).start()
    time.sleep(args.seconds)  # the measuring window itself
    print("\n".join(render(profile.stop())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
