"""Bad configuration stops every entry point at once with a message naming the file and
key, exit code 78 (EX_CONFIG), and the supervisor does not restart it in a loop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streaming_jobs.common.settings import PROJECT_ROOT

BAD_CONFIGS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "unknown key": (
        "pipeline.yaml",
        lambda d: d["services"].update(kafka_prot=1),
        "pipeline.yaml: services.kafka_prot: unknown key",
    ),
    "invalid symbol": (
        "symbols.yaml",
        lambda d: d["symbols"].append({"name": "btc/usdt", "tier": 1}),
        "is not a Binance spot symbol",
    ),
    "wrong type": (
        "pipeline.yaml",
        lambda d: d["streaming"]["bronze"].update(ui_port="forty"),
        "streaming.bronze.ui_port",
    ),
}


def bad_conf(tmp_path: Path, case: str) -> tuple[dict[str, str], str]:
    conf = tmp_path / "conf"
    shutil.copytree(os.environ["LAKE_CONF_DIR"], conf)
    name, change, message = BAD_CONFIGS[case]
    data = yaml.safe_load((conf / name).read_text())
    change(data)
    (conf / name).write_text(yaml.safe_dump(data))
    env = {**os.environ, "LAKE_CONF_DIR": str(conf), "STATE_DIR": str(tmp_path / "state")}
    return env, message


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
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
