"""infra/supervise.py with real processes: restarts with backoff, counting, clean stops."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming_jobs.common.settings import PROJECT_ROOT
from tests.support import await_true

SCRIPT = PROJECT_ROOT / "infra" / "supervise.py"


def load_module() -> Any:
    spec = importlib.util.spec_from_file_location("supervise", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["supervise"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_backoff_doubles_to_its_cap() -> None:
    backoff = load_module().Backoff.parse("0.5,4,60")
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    with pytest.raises(ValueError, match="initial <= max"):
        load_module().Backoff.parse("5,1,60")


class Supervised:
    def __init__(self, tmp: Path, *command: str, backoff: str = "0.2,0.8,30"):
        self.state_file = tmp / "supervise" / "job.json"
        self.log = (tmp / "supervise.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--name", "job", "--state-dir", str(tmp),
             "--backoff", backoff, "--grace", "3", "--", *command],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return result

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self.log.close()
        return code


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Any]:
    started: list[Supervised] = []

    def start(*command: str, **kwargs: str) -> Supervised:
        job = Supervised(tmp_path, *command, **kwargs)
        started.append(job)
        return job

    yield start
    for job in started:
        job.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_an_exiting_child_is_restarted_and_counted(supervise: Any, tmp_path: Path) -> None:
    # The child records the restart count it was given, then fails.
    job = supervise("sh", "-c", 'echo "$LAKE_SERVICE $LAKE_RESTARTS" >> seen; exit 3')
    seen = tmp_path / "seen"
    # The state counts a restart as the child is started, before it has written:
    # await what the fourth child wrote, not the count.
    await_true(
        "three restarts", lambda: seen.exists() and len(seen.read_text().splitlines()) >= 4, 30
    )
    assert seen.read_text().splitlines()[:4] == ["job 0", "job 1", "job 2", "job 3"]
    assert job.state()["restarts"] >= 3
    assert job.state()["last_exit"] == 3
    assert job.stop() == 0
    assert job.state()["state"] == "stopped"


def test_a_killed_child_comes_back_and_its_leftovers_are_reaped(
    supervise: Any, tmp_path: Path
) -> None:
    # Like a PySpark driver: the child (the JVM) has a child of its own (Python).
    job = supervise("sh", "-c", "sleep 300 & echo $! > grandchild; wait")
    await_true("the first child", lambda: (tmp_path / "grandchild").exists(), 10)
    first, grandchild = job.state()["child_pid"], int((tmp_path / "grandchild").read_text())
    (tmp_path / "grandchild").unlink()
    os.kill(first, signal.SIGKILL)
    await_true("a restart", lambda: job.state().get("restarts") == 1, 10)
    await_true("the grandchild reaped", lambda: not alive(grandchild), 10)
    assert job.state()["last_exit"] == -signal.SIGKILL
    second = job.state()["child_pid"]
    assert second != first and alive(second)
    await_true("the second grandchild", lambda: (tmp_path / "grandchild").exists(), 10)
    grandchild = int((tmp_path / "grandchild").read_text())
    assert job.stop() == 0
    assert not alive(second) and not alive(grandchild)


def test_a_configuration_error_is_final(supervise: Any) -> None:
    job = supervise("sh", "-c", "exit 78")
    assert job.process.wait(10) == 78
    assert job.state()["state"] == "failed" and job.state()["restarts"] == 0


def test_sigterm_reaches_a_child_that_ignores_it_then_sigkill(supervise: Any) -> None:
    job = supervise("sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")
    await_true("the child", lambda: job.state().get("state") == "running", 10)
    child = job.state()["child_pid"]
    assert job.stop() == 0  # after the 3 s grace
    assert not alive(child)
