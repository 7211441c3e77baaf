"""The integration tests' shared demo run (tests/demo.py), made once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streaming_jobs.common.settings import Settings, load_settings
from tests.chaos.invariants import snapshot
from tests.demo import INFRA, LAYERS, Demo, demo_conf, run


@pytest.fixture(scope="session")
def demo(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    conf = demo_conf(tmp_path_factory.mktemp("demo"))
    env = {**os.environ, "LAKE_CONF_DIR": str(conf), "DEMO_TIMEOUT_S": "900"}
    env.pop("MAKEFLAGS", None)
    try:
        done = run(["make", "--no-print-directory", "demo", "ONCE=1"], env, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        settings = load_settings(conf, env)
        yield Demo(settings, env, done.stdout, snapshot(settings))
    finally:
        run([str(INFRA / "services.sh"), "down", "replay", "producer", *LAYERS], env)
