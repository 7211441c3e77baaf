"""The integration tests' shared demo run (tests/demo.py), made once per session."""

from __future__ import annotations

import os

import pytest

from streaming_jobs.common.settings import Settings, load_settings
from tests.chaos.invariants import snapshot
from tests.demo import Demo, demo_conf, demo_once


@pytest.fixture(scope="session")
def demo(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    conf = demo_conf(tmp_path_factory.mktemp("demo"))
    env = {**os.environ, "LAKE_CONF_DIR": str(conf), "DEMO_TIMEOUT_S": "900"}
    env.pop("MAKEFLAGS", None)
    done = demo_once(env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    settings = load_settings(conf, env)
    return Demo(settings, env, done.stdout, snapshot(settings))
