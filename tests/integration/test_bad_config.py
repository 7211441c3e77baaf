"""Bad configuration stops every entry point at once with a message naming the file and
key, exit code 78 (EX_CONFIG), and the supervisor does not restart it in a loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streaming_jobs.common.settings import PROJECT_ROOT
from tests import badconfig


def bad_conf(tmp_path: Path, case: str) -> tuple[dict[str, str], str]:
    return badconfig.bad_conf(Path(os.environ["LAKE_CONF_DIR"]), tmp_path, case, os.environ)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("case", sorted(badconfig.BAD_CONFIGS))
def test_every_entry_point_refuses_a_bad_config(
    tmp_path: Path, lake_env: dict[str, str], case: str
) -> None:
    env, message = bad_conf(tmp_path, case)
    python = str(PROJECT_ROOT / ".venv" / "bin" / "python")
    entry_points = [
        [python, "-m", "producer"],
        [str(PROJECT_ROOT / "spark-submit.sh"), "bronze"],
        [str(PROJECT_ROOT / "infra" / "services.sh"), "up", "kafka"],
        [str(PROJECT_ROOT / ".venv" / "bin" / "lakehouse"), "tables"],
    ]
    for args in entry_points:
        result = run(args, env)
        assert result.returncode == 78, (args, result.stdout, result.stderr)
        assert "configuration error" in result.stderr and message in result.stderr, (
            args,
            result.stderr,
        )
        assert "Traceback" not in result.stderr, args
    assert not (tmp_path / "state" / "pids").exists() or not any(
        (tmp_path / "state" / "pids").iterdir()
    )


def test_the_supervisor_does_not_restart_a_bad_config(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env, _message = bad_conf(tmp_path, "unknown key")
    result = run(
        [sys.executable, str(PROJECT_ROOT / "infra" / "supervise.py"), "--name", "producer",
         "--state-dir", str(tmp_path / "state"), "--",
         str(PROJECT_ROOT / ".venv" / "bin" / "python"), "-m", "producer"],
        env,
    )  # fmt: skip
    assert result.returncode == 78
    state = json.loads((tmp_path / "state" / "supervise" / "producer.json").read_text())
    assert state["state"] == "failed" and state["restarts"] == 0
