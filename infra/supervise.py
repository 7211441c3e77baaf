"""Keep one long-running process alive: restart it with backoff, count the restarts.

    infra/supervise.py --name bronze [--state-dir DIR] [--backoff 1,60,120] -- CMD [ARG...]

The command runs as a child in its own process group. When it exits for any
reason but our stop (the Hudi sink ends the driver on a failed batch, an
out-of-memory kill, `kill -9`), whatever is left of its group is killed (a
PySpark driver's Python outlives its JVM for a moment and holds its ports)
and the command starts again, so a streaming job resumes from its checkpoint
and the producer from its state file. The wait before a restart doubles from
`initial` up to `max` seconds and falls back to `initial` once a child has run
`stable` seconds. Exit code 78 (EX_CONFIG: the configuration is invalid) is
final: restarting cannot fix it, so the supervisor exits with it.

SIGTERM or SIGINT stops the child (SIGTERM, then SIGKILL to its group after
--grace seconds) and then the supervisor.

The state, for `make status` and the tests, is one JSON line in
<state dir>/supervise/<name>.json, rewritten atomically on every change:
state (running|backoff|stopped|failed), pid, child_pid, restarts,
last_exit (exit code, or -signal), last_exit_at, backoff_s, started_at and
child_started_at (epoch seconds). The child sees LAKE_SERVICE=<name> and
LAKE_RESTARTS=<restarts so far>, which it exports as the metric
`lakehouse_supervisor_restarts` (alert: infra/prometheus/alerts.yml).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

EX_CONFIG = 78


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before restart n: initial * 2^(n-1), capped at max."""

    initial: float = 1.0
    max: float = 60.0
    stable: float = 120.0

    def delay(self, failures_in_a_row: int) -> float:
        return float(min(self.max, self.initial * 2 ** max(0, failures_in_a_row - 1)))

    @classmethod
    def parse(cls, text: str) -> Backoff:
        initial, maximum, stable = (float(v) for v in text.split(","))
        if not 0 < initial <= maximum or stable <= 0:
            raise ValueError(f"--backoff {text!r}: need 0 < initial <= max and stable > 0")
        return cls(initial, maximum, stable)


@dataclass
class State:
    name: str
    pid: int = field(default_factory=os.getpid)
    state: str = "starting"
    child_pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    last_exit_at: float | None = None
    backoff_s: float = 0.0
    started_at: float = field(default_factory=time.time)
    child_started_at: float | None = None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), sort_keys=True) + "\n")
        tmp.replace(path)


def log(name: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"---- {stamp} supervise {name}: {message}", flush=True)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def supervise(
    name: str, command: list[str], state_file: Path, backoff: Backoff, grace: float
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state = State(name)
    failures = 0
    while True:
        env = {**os.environ, "LAKE_SERVICE": name, "LAKE_RESTARTS": str(state.restarts)}
        child = subprocess.Popen(command, env=env, process_group=0)
        state.state, state.child_pid, state.child_started_at = "running", child.pid, time.time()
        state.save(state_file)
        log(
            name,
            f"started pid {child.pid} (restarts so far: {state.restarts}): {' '.join(command)}",
        )
        while child.poll() is None and not stop.wait(0.2):
            pass
        if stop.is_set():
            return stop_child(name, child, state, state_file, grace)
        code = child.returncode
        ran = time.time() - (state.child_started_at or time.time())
        kill_group(child.pid)  # what the child left behind (a driver's Python)
        state.last_exit, state.last_exit_at, state.child_pid = code, time.time(), None
        if code == EX_CONFIG:
            state.state = "failed"
            state.save(state_file)
            log(name, "exited 78: the configuration is invalid; not restarting")
            return EX_CONFIG
        failures = 1 if ran >= backoff.stable else failures + 1
        state.state, state.backoff_s = "backoff", backoff.delay(failures)
        state.save(state_file)
        log(name, f"exited with {code} after {ran:.0f}s; restarting in {state.backoff_s:.1f}s")
        if stop.wait(state.backoff_s):
            state.state = "stopped"
            state.save(state_file)
            return 0
        state.restarts += 1


def stop_child(
    name: str, child: subprocess.Popen[bytes], state: State, state_file: Path, grace: float
) -> int:
    log(name, f"stopping pid {child.pid}")
    try:
        child.send_signal(signal.SIGTERM)
        child.wait(grace)
    except subprocess.TimeoutExpired:
        log(name, f"pid {child.pid} still running after {grace:.0f}s: SIGKILL")
    kill_group(child.pid)
    child.wait()
    state.state, state.child_pid = "stopped", None
    state.last_exit, state.last_exit_at = child.returncode, time.time()
    state.save(state_file)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="infra/supervise.py")
    parser.add_argument("--name", required=True)
    parser.add_argument("--state-dir", default=os.environ.get("STATE_DIR", ".state"))
    parser.add_argument(
        "--backoff", type=Backoff.parse, default=Backoff(), help="initial,max,stable"
    )
    parser.add_argument("--grace", type=float, default=50.0, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    folder = Path(args.state_dir) / "supervise"
    folder.mkdir(parents=True, exist_ok=True)
    return supervise(
        args.name, args.command, folder / f"{args.name}.json", args.backoff, args.grace
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
