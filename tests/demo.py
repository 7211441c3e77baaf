"""`make demo ONCE=1` as the tests run it: on the tests' services, with topics and a lake of
its own. One run serves the operating tests and is the chaos subset's clean reference."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streaming_jobs.common.settings import PROJECT_ROOT, Settings

# What `make demo` replays by default (infra/replay.sh).
CAPTURES = [
    PROJECT_ROOT / "producer" / "replay" / "captures" / f"spot_{symbol}_20240808.gz"
    for symbol in ("btcusdt", "ethusdt")
]
INFRA = PROJECT_ROOT / "infra"
LAYERS = ("bronze", "silver", "gold")


@dataclass(frozen=True)
class Demo:
    settings: Settings
    env: dict[str, str]
    stdout: str
    # The silver and gold rows right after the demo (tests/chaos/invariants.py).
    clean: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def demo_conf(root: Path) -> Path:
    """The tests' conf with topics, a lake and a producer state file of the demo's own."""
    conf = root / "conf"
    shutil.copytree(os.environ["LAKE_CONF_DIR"], conf)
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    for spec in pipeline["kafka"]["topics"].values():
        spec["name"] = f"demo.{spec['name']}"
    pipeline["storage"]["local_root"] = "demo-lake"
    pipeline["producer"]["state_file"] = "demo/producer-state.json"
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return conf


def run(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def demo_once(env: dict[str, str], timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    """`make demo ONCE=1` on `env`'s conf; the replay, producer and layers it started are
    stopped afterwards whatever happened (services it found running are left)."""
    env = {k: v for k, v in env.items() if k != "MAKEFLAGS"}
    try:
        return run(["make", "--no-print-directory", "demo", "ONCE=1"], env, timeout=timeout)
    finally:
        run([str(INFRA / "services.sh"), "down", "replay", "producer", *LAYERS], env)
