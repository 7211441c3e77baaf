"""Bad configuration stops start-up with a message naming the file (or variable) and key."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streaming_jobs.common.settings import (
    LOCAL_S3_USER,
    PROJECT_ROOT,
    ConfigError,
    load_settings,
    stream_kind,
)
from streaming_jobs.common.spark import read_spark_defaults, slots_of
from streaming_jobs.gold.job import GoldBatch

CONF = PROJECT_ROOT / "conf"


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    target = tmp_path / "conf"
    shutil.copytree(CONF, target)
    return target


def edit_yaml(path: Path, change: Callable[[Any], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def load_error(conf_dir: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(conf_dir, environ or {})
    return str(err.value)


def test_shipped_config_loads() -> None:
    settings = load_settings(CONF, {})
    assert [s.name for s in settings.symbols][:2] == ["BTCUSDT", "ETHUSDT"]
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic("trade").name == "binance.trade"
    assert settings.symbols[0].stream_names()[0] == "btcusdt@trade"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["kafka"].update(bootstrap="x"), "pipeline.yaml: kafka.bootstrap: unknown key"),
        (lambda d: d.update(extra=1), "pipeline.yaml: extra: unknown key"),
        (
            lambda d: d["kafka"]["topics"]["trade"].update(partitions="three"),
            "pipeline.yaml: kafka.topics.trade.partitions: expected int, got str 'three'",
        ),
        (
            lambda d: d["services"].update(kafka_port=True),
            "pipeline.yaml: services.kafka_port: expected int, got bool True",
        ),
        (
            lambda d: d["services"].update(kafka_port=70000),
            "pipeline.yaml: services: kafka_port 70000 is not a TCP port",
        ),
        (
            lambda d: d["storage"].update(profile="s3"),
            "pipeline.yaml: storage.profile: must be one of 'local', 'minio', got 's3'",
        ),
        (
            lambda d: d["streaming"]["bronze"].update(trigger="10s"),
            "pipeline.yaml: streaming.bronze: trigger '10s' is not a duration",
        ),
        (
            lambda d: d["kafka"]["topics"].pop("depth"),
            "pipeline.yaml: kafka: topics: missing depth",
        ),
        (
            lambda d: d["kafka"]["topics"].update(funding={"name": "x"}),
            "pipeline.yaml: kafka: topics: unknown stream type 'funding'",
        ),
        (
            lambda d: d["kafka"]["topics"]["trade"].update(name="bad topic!"),
            "pipeline.yaml: kafka.topics.trade: topic name 'bad topic!'",
        ),
        (
            lambda d: d["streaming"]["bronze"].update(fast_lane=["trade", "funding"]),
            "pipeline.yaml: streaming.bronze: fast_lane: 'funding' is not a stream type",
        ),
        (
            lambda d: d["streaming"]["bronze"].update(fast_lane=["trade", "trade"]),
            "pipeline.yaml: streaming.bronze: fast_lane lists a stream type twice",
        ),
        (
            lambda d: d["streaming"]["bronze"].update(fast_trigger="1"),
            "pipeline.yaml: streaming.bronze: fast_trigger '1' is not a duration",
        ),
        (
            lambda d: d["streaming"]["bronze"].update(fast_max_delay="500 milliseconds"),
            "pipeline.yaml: streaming.bronze: fast_max_delay must not be shorter than fast_trigger",
        ),
        (
            lambda d: d["streaming"]["bronze"].update(fast_min_records=-1),
            "pipeline.yaml: streaming.bronze: fast_min_records must not be negative",
        ),
        (
            lambda d: d["streaming"]["gold"].update(nice=-5),
            "pipeline.yaml: streaming.gold: nice must be 0 (the default priority) to 19",
        ),
        (lambda d: d.pop("streaming"), "pipeline.yaml: streaming: missing required key"),
        (
            lambda d: d["streaming"]["silver"].update(ui_port=4040),
            "pipeline.yaml: streaming: every layer needs its own Spark UI and metrics port",
        ),
        (
            lambda d: d["streaming"]["gold"].update(metrics_port=8001),
            "pipeline.yaml: streaming: every layer needs its own Spark UI and metrics port",
        ),
        (
            lambda d: d["streaming"]["gold"].pop("metrics_port"),
            "pipeline.yaml: streaming.gold.metrics_port: missing required key",
        ),
        (
            lambda d: d["services"].update(restart_backoff_initial_s=0),
            "pipeline.yaml: services: need 0 < restart_backoff_initial_s <= restart_backoff_max_s",
        ),
        (
            lambda d: d["spark_cluster"].update(worker_memory="4GB"),
            "pipeline.yaml: spark_cluster: worker_memory '4GB' is not like '4g' or '512m'",
        ),
        (
            lambda d: d["spark_cluster"].update(workers=0),
            "pipeline.yaml: spark_cluster: workers must be 1..16",
        ),
        (
            lambda d: d["services"].update(spark_master_port=70777),
            "pipeline.yaml: services: spark_master_port 70777 is not a TCP port",
        ),
    ],
)
def test_bad_pipeline_yaml(conf_dir: Path, change: Callable[[Any], None], expected: str) -> None:
    edit_yaml(conf_dir / "pipeline.yaml", change)
    message = load_error(conf_dir)
    assert expected in message
    assert message.startswith(str(conf_dir / "pipeline.yaml"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["symbols"].append({"name": "btc-usdt"}),
            "symbols.yaml: symbols[6]: symbol 'btc-usdt' is not a Binance spot symbol",
        ),
        (
            lambda d: d["symbols"][0].update(stream=["trade"]),
            "symbols.yaml: symbols[0].stream: unknown key",
        ),
        (
            lambda d: d["symbols"][1].update(streams=["trade", "klines_1m"]),
            "symbols.yaml: symbols[1]: unknown stream 'klines_1m'",
        ),
        (
            lambda d: d["symbols"][1].update(streams=["kline_7m"]),
            "symbols.yaml: symbols[1]: unknown kline interval '7m'",
        ),
        (
            lambda d: d["symbols"][0].update(enabled="yes"),
            "symbols.yaml: symbols[0].enabled: expected bool, got str 'yes'",
        ),
        (
            lambda d: d["symbols"][0].update(tier=0),
            "symbols.yaml: symbols[0]: tier must be 1, 2 or 3",
        ),
        (
            lambda d: d["symbols"].append({"name": "BTCUSDT"}),
            "symbols.yaml: symbols: BTCUSDT is listed twice",
        ),
        (
            lambda d: [s.update(enabled=False) for s in d["symbols"]],
            "symbols.yaml: symbols: no symbol is enabled",
        ),
        (lambda d: d["defaults"].update(streams=[]), "symbols.yaml: defaults: streams must not be"),
    ],
)
def test_bad_symbols_yaml(conf_dir: Path, change: Callable[[Any], None], expected: str) -> None:
    edit_yaml(conf_dir / "symbols.yaml", change)
    assert expected in load_error(conf_dir)


def test_invalid_yaml_and_missing_file(conf_dir: Path) -> None:
    (conf_dir / "pipeline.yaml").write_text("kafka: [unclosed\n")
    assert "pipeline.yaml: not valid YAML" in load_error(conf_dir)
    (conf_dir / "pipeline.yaml").unlink()
    assert "pipeline.yaml: file not found" in load_error(conf_dir)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"STORAGE": "s3"}, "environment STORAGE: must be one of 'local', 'minio', got 's3'"),
        ({"ACTIVE_SYMBOLS": "BTCUSDT,eth"}, "environment ACTIVE_SYMBOLS: eth: symbol 'eth'"),
        ({"ACTIVE_SYMBOLS": " , "}, "environment ACTIVE_SYMBOLS: names no symbol"),
        ({"S3_BUCKET": "Bad_Bucket"}, "(with S3_BUCKET=Bad_Bucket): storage: s3_bucket"),
        ({"MINIO_ROOT_USER": "only-user"}, "MINIO_ROOT_USER/MINIO_ROOT_PASSWORD: set both"),
    ],
)
def test_bad_environment(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(CONF, environ).s3_credentials(environ)
    assert expected in str(err.value)


def test_environment_overrides() -> None:
    env = {
        "STORAGE": "minio",
        "KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092",
        "ACTIVE_SYMBOLS": "ETHUSDT,DOGEUSDT",
        "STATE_DIR": "/var/lib/lake",
    }
    settings = load_settings(CONF, env)
    assert settings.kafka_bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert settings.table_path("bronze_trades") == "s3a://lakehouse/tables/bronze_trades"
    assert settings.checkpoint_path("bronze") == "s3a://lakehouse/checkpoints/bronze"
    # ETHUSDT keeps its tier; DOGEUSDT is not in the file and gets the defaults.
    assert [(s.name, s.tier) for s in settings.symbols] == [("ETHUSDT", 1), ("DOGEUSDT", 2)]
    assert settings.symbols[1].streams == settings.symbols[0].streams
    assert settings.state_dir == Path("/var/lib/lake")


def test_local_storage_paths_live_under_the_state_dir() -> None:
    settings = load_settings(CONF, {"STATE_DIR": "/srv/state"})
    assert settings.table_path("silver_ohlcv") == "file:///srv/state/lake/tables/silver_ohlcv"


def test_credentials_default_only_on_loopback() -> None:
    assert load_settings(CONF, {}).s3_credentials({}).access_key == LOCAL_S3_USER
    remote = load_settings(CONF, {"S3_ENDPOINT": "https://s3.example.net"})
    with pytest.raises(ConfigError, match="required for the non-local S3 endpoint"):
        remote.s3_credentials({})
    creds = remote.s3_credentials({"MINIO_ROOT_USER": "u", "MINIO_ROOT_PASSWORD": "p"})
    assert (creds.access_key, creds.secret_key) == ("u", "p")
    assert "p" not in repr(creds)


@pytest.mark.parametrize(
    ("stream", "kind"),
    [
        ("trade", "trade"),
        ("kline_1m", "kline"),
        ("depth20@100ms", "depth"),
        ("depth5", "depth"),
        ("bookTicker", "bookTicker"),
        ("ticker", "ticker"),
        ("aggTrade", "aggTrade"),
    ],
)
def test_stream_kind(stream: str, kind: str) -> None:
    assert stream_kind(stream) == kind


def test_cli_reports_bad_config_and_exits_78(conf_dir: Path) -> None:
    edit_yaml(conf_dir / "pipeline.yaml", lambda d: d["services"].update(kafka_prot=1))
    python = PROJECT_ROOT / ".venv" / "bin" / "python"
    for command in (
        [str(python), "-m", "streaming_jobs.common.settings", "check"],
        [str(PROJECT_ROOT / "spark-submit.sh"), "sql", "SELECT 1"],
        [str(PROJECT_ROOT / "infra" / "kafka.sh"), "start"],
    ):
        result = subprocess.run(
            command,
            env={"PATH": "/usr/bin:/bin", "LAKE_CONF_DIR": str(conf_dir)},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=PROJECT_ROOT,
        )
        assert result.returncode == 78, (command, result.stdout, result.stderr)
        assert f"{conf_dir / 'pipeline.yaml'}: services.kafka_prot: unknown key" in result.stderr


def test_bronze_queries_split_the_topics_into_lanes(conf_dir: Path) -> None:
    settings = load_settings(conf_dir, {})
    queries = settings.bronze_queries()
    assert queries["bronze_fast"] == ("trade", "aggTrade")
    assert set(queries["bronze"]) == set(settings.pipeline.kafka.topics) - {"trade", "aggTrade"}
    edit_yaml(conf_dir / "pipeline.yaml", lambda d: d["streaming"]["bronze"].update(fast_lane=[]))
    assert list(load_settings(conf_dir, {}).bronze_queries()) == ["bronze"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["weights"].update(BTCUSDT=0.7),
            "portfolio.yaml: weights must sum to 1, got 1.1",
        ),
        (
            lambda d: d["weights"].update({"btc": 0.0}),
            "portfolio.yaml: weights: 'btc' is not a Binance spot symbol",
        ),
        (
            lambda d: d.update(weights={"BTCUSDT": 1.5, "ETHUSDT": -0.5}),
            "portfolio.yaml: weights: ETHUSDT must be a positive number, got -0.5",
        ),
        (lambda d: d.update(risk_free_rate="4%"), "portfolio.yaml: risk_free_rate: expected float"),
        (lambda d: d.update(name="Core Book"), "portfolio.yaml: name 'Core Book'"),
        (lambda d: d.update(leverage=2), "portfolio.yaml: leverage: unknown key"),
    ],
)
def test_bad_portfolio_yaml(conf_dir: Path, change: Callable[[Any], None], expected: str) -> None:
    edit_yaml(conf_dir / "portfolio.yaml", change)
    assert expected in load_error(conf_dir)


def test_gold_windows_are_validated(conf_dir: Path) -> None:
    edit_yaml(
        conf_dir / "pipeline.yaml",
        lambda d: d["streaming"]["gold"].update(risk_windows=["90 seconds"]),
    )
    assert "risk_windows: '90 seconds' is not a whole number of minutes" in load_error(conf_dir)
    (conf_dir / "portfolio.yaml").unlink()
    edit_yaml(conf_dir / "pipeline.yaml", lambda d: d["streaming"]["gold"].pop("risk_windows"))
    assert load_error(conf_dir).endswith("portfolio.yaml: file not found")


def test_cross_asset_analytics_cover_the_configured_tiers(conf_dir: Path) -> None:
    settings = load_settings(conf_dir, {"ACTIVE_SYMBOLS": ""})
    cross = GoldBatch(None, settings)._cross_symbols  # type: ignore[arg-type]
    assert cross == sorted(s.name for s in settings.symbols if s.tier in (1, 2))
    assert "ADAUSDT" not in cross  # tier 3 (and disabled in the shipped file)
    edit_yaml(conf_dir / "symbols.yaml", lambda d: d["symbols"][-1].update(enabled=True))
    edit_yaml(
        conf_dir / "pipeline.yaml",
        lambda d: d["streaming"]["gold"].update(cross_asset_tiers=[1, 2, 3]),
    )
    assert "ADAUSDT" in GoldBatch(None, load_settings(conf_dir, {}))._cross_symbols  # type: ignore[arg-type]
    edit_yaml(
        conf_dir / "pipeline.yaml", lambda d: d["streaming"]["gold"].update(cross_asset_tiers=[4])
    )
    assert "cross_asset_tiers must be tiers 1..3, got (4,)" in load_error(conf_dir)


@pytest.mark.parametrize(
    ("conf", "slots"),
    [
        ({"spark.master": "local"}, 1),
        ({"spark.master": "local[2]"}, 2),
        ({"spark.master": "local[*]"}, 8),
        ({"spark.master": "local[3,2]"}, 3),  # 3 threads, 2 attempts per task
        # local ignores the cluster's settings
        ({"spark.master": "local[2]", "spark.cores.max": "6"}, 2),
        ({"spark.master": "spark://host:7077", "spark.cores.max": "6"}, 6),
        (
            {"spark.master": "yarn", "spark.executor.instances": "3", "spark.executor.cores": "4"},
            12,
        ),
        ({"spark.master": "k8s://https://host:443"}, 5),  # Spark's default parallelism
    ],
)
def test_task_slots_follow_the_master(conf: dict[str, str], slots: int) -> None:
    assert slots_of(conf, cpus=8, default=5) == slots


def test_the_shipped_spark_defaults_run_two_tasks_at_once() -> None:
    assert slots_of(read_spark_defaults(), cpus=64, default=64) == 2
