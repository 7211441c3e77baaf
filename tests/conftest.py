"""Session fixtures: one test configuration, one set of real services, one SparkSession.

The tests run against a private copy of the configuration whose ports are
shifted by +10000 (Kafka 19092, MinIO 19000, Prometheus 19090, ...) and a
private state directory (`.state/test`, wiped at the start), so `make test`
works while a `make up` stack is running and never touches its data.

- `lake_settings`: the Settings every test reads (no services needed).
- `services`: Kafka, MinIO and Prometheus started once by infra/services.sh,
  stopped at the end of the session pass or fail; the teardown fails the run
  if any of their processes is still alive.
- `spark`: one local[2] SparkSession with the project's jars and conf.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings
from streaming_jobs.common.spark import LOG_CONFIG, session_conf

PORT_SHIFT = 10000
TEST_STATE_DIR = Path(os.environ.get("TEST_STATE_DIR", PROJECT_ROOT / ".state" / "test"))
SERVICES = ("kafka", "minio", "prometheus")
# Also stopped at the end, should a test have left one running.
ALL_PROCESSES = (
    *SERVICES,
    "replay",
    "producer",
    "spark-master",
    "spark-worker-1",
    "spark-worker-2",
)
SERVICES_SCRIPT = PROJECT_ROOT / "infra" / "services.sh"


def write_test_conf(conf_dir: Path, shift: int = PORT_SHIFT, for_tests: bool = True) -> None:
    """conf/ with every port shifted; for tests also a fast scrape interval and bronze
    trigger (benchmarks keep the shipped ones: they measure what a user runs)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    pipeline = yaml.safe_load((PROJECT_ROOT / "conf" / "pipeline.yaml").read_text())
    services = pipeline["services"]
    for key, value in list(services.items()):
        if key.endswith("_port"):
            services[key] = value + shift
    streaming = pipeline["streaming"]
    if for_tests:
        services["scrape_interval"] = "1s"
        # Bronze's bulk streams on a shorter trigger: runs that wait for bronze
        # to catch up end sooner.
        streaming["bronze"]["trigger"] = "5 seconds"
        # Silver's too (the shipped one trades freshness for CPU): runs that wait for bars.
        streaming["silver"]["trigger"] = "5 seconds"
        # And gold's data quality: runs that wait for it to catch up too.
        streaming["gold"]["quality_trigger"] = "10 seconds"
    for layer in ("bronze", "silver", "gold"):
        streaming[layer]["ui_port"] += shift
        streaming[layer]["metrics_port"] += shift
    streaming["sql_ui_port"] += shift
    (conf_dir / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    for name in ("symbols.yaml", "portfolio.yaml"):
        shutil.copy(PROJECT_ROOT / "conf" / name, conf_dir / name)


def private_environ() -> dict[str, str]:
    """The environment of a test: the private conf and state dir, UTC."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("STORAGE", "ACTIVE_SYMBOLS", "KAFKA_BOOTSTRAP_SERVERS", "S3_ENDPOINT")
    }
    env.update(LAKE_CONF_DIR=str(TEST_STATE_DIR / "conf"), STATE_DIR=str(TEST_STATE_DIR), TZ="UTC")
    return env


def run_services(
    command: str, env: dict[str, str], names: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SERVICES_SCRIPT), command, *names],
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )


def _live_service_pids() -> list[str]:
    pid_dir = TEST_STATE_DIR / "pids"
    alive = []
    for name in ALL_PROCESSES:
        pid_file = pid_dir / f"{name}.pid"
        if pid_file.exists():
            pid = pid_file.read_text().strip()
            if pid.isdigit() and Path(f"/proc/{pid}").exists():
                alive.append(f"{name}={pid}")
    return alive


@pytest.fixture(scope="session")
def lake_env() -> Iterator[dict[str, str]]:
    env = private_environ()
    if (TEST_STATE_DIR / "pids").exists():
        run_services("down", env)  # leftovers of an interrupted run
    shutil.rmtree(TEST_STATE_DIR, ignore_errors=True)
    write_test_conf(TEST_STATE_DIR / "conf")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    yield env
    os.environ.clear()
    os.environ.update(saved)
    time.tzset()


@pytest.fixture(scope="session")
def lake_settings(lake_env: dict[str, str]) -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def services(lake_env: dict[str, str]) -> Iterator[Settings]:
    started = run_services("up", lake_env, SERVICES)
    if started.returncode != 0:
        run_services("down", lake_env)
        pytest.fail(f"services failed to start:\n{started.stdout}\n{started.stderr}")
    try:
        yield load_settings()
    finally:
        stopped = run_services("down", lake_env)
        alive = _live_service_pids()
        assert stopped.returncode == 0 and not alive, (
            f"services left running after down: {alive}\n{stopped.stdout}\n{stopped.stderr}"
        )


@pytest.fixture(scope="session")
def spark(lake_settings: Settings) -> Iterator[object]:
    from pyspark.sql import SparkSession

    creds = lake_settings.s3_credentials()
    # S3A reads these from the JVM's environment, inherited at launch.
    os.environ["AWS_ACCESS_KEY_ID"] = creds.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = creds.secret_key
    os.environ["PYSPARK_PYTHON"] = sys.executable
    conf = session_conf(lake_settings, "sql")
    conf.update(
        {
            "spark.master": "local[2]",
            "spark.app.name": "lakehouse-tests",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.driver.memory": "2g",
            "spark.driver.extraJavaOptions": (f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}"),
        }
    )
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()
