"""infra/: start awaits health and names what failed; stop ends only what it started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streaming_jobs.common.settings import PROJECT_ROOT, Settings
from tests.support import free_port

INFRA = PROJECT_ROOT / "infra"


@pytest.fixture
def scratch(tmp_path: Path, lake_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A private state dir and conf whose Prometheus port is free (for start failures)."""
    conf = tmp_path / "conf"
    shutil.copytree(lake_env["LAKE_CONF_DIR"], conf)
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    pipeline["services"]["prometheus_port"] = free_port()
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    env = {**lake_env, "LAKE_CONF_DIR": str(conf), "STATE_DIR": str(tmp_path / "state")}
    yield env
    subprocess.run([str(INFRA / "prometheus.sh"), "stop"], env=env, capture_output=True)


def run(script: str, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INFRA / script), command], env=env, capture_output=True, text=True, timeout=120
    )


def test_stop_leaves_a_process_it_did_not_start(scratch: dict[str, str]) -> None:
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        pid_dir = Path(scratch["STATE_DIR"]) / "pids"
        pid_dir.mkdir(parents=True)
        (pid_dir / "kafka.pid").write_text(str(stranger.pid))  # a recycled pid, say
        result = run("kafka.sh", "stop", scratch)
        assert result.returncode == 0
        assert "kafka: not running" in result.stdout
        assert stranger.poll() is None, "stop killed a process that was not Kafka"
        assert not (pid_dir / "kafka.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_start_refuses_a_port_already_taken(scratch: dict[str, str]) -> None:
    pipeline = yaml.safe_load((Path(scratch["LAKE_CONF_DIR"]) / "pipeline.yaml").read_text())
    port = pipeline["services"]["prometheus_port"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run("prometheus.sh", "start", scratch)
    assert result.returncode != 0
    assert f"prometheus: 127.0.0.1:{port} is already in use" in result.stderr


def test_start_names_the_service_that_died_and_its_log(scratch: dict[str, str]) -> None:
    result = subprocess.run(
        [str(INFRA / "prometheus.sh"), "start"],
        env={**scratch, "PROMETHEUS_BIN": "/bin/false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    log = Path(scratch["STATE_DIR"]) / "logs" / "prometheus.log"
    assert f"prometheus: exited during start-up; last lines of {log}" in result.stderr


def test_status_shows_every_service_up_with_port_and_log(services: Settings) -> None:
    result = subprocess.run(
        [str(INFRA / "services.sh"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    table = result.stdout.split("\n\n", 1)[0]  # the progress report follows a blank line
    lines = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    # The tests run no producer or bronze (they start their own): status says so and fails.
    assert lines["producer"][1] == lines["bronze"][1] == "down"
    assert result.returncode == 1, result.stdout + result.stderr
    assert "replay" not in lines  # reported only while `make demo` runs it
    for header in ("TOPIC", "QUERY", "LAST PROGRESS", "LAST COMMIT (UTC)", "PRODUCER"):
        assert header in result.stdout
    s = services.services
    expected = {"kafka": s.kafka_port, "minio": s.minio_port, "prometheus": s.prometheus_port}
    for name, port in expected.items():
        state, pid, _uptime, restarts, address, log = lines[name][1:]
        assert state == "up" and pid.isdigit() and restarts == "-"  # not supervised
        assert address == f"{s.host}:{port}"
        assert log == str(services.log_dir() / f"{name}.log")


def test_spark_submit_sql_prints_csv(lake_env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "sql", "SELECT 1 AS x"],
        env=lake_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "x\n1\n"
