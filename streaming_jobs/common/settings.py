"""Typed settings for the whole pipeline, from `conf/*.yaml` and the environment.

This is the one place that knows the configuration: the file format of
`conf/pipeline.yaml` and `conf/symbols.yaml`, the defaults, which environment
variables override what, and every path derived from them (state directory,
table and checkpoint roots for each storage profile). The producer, the Spark
jobs, the infra scripts (through `python -m streaming_jobs.common.settings
shell`) and the tests all read it from here, so a port or a path is decided
once.

Everything is validated at load time: unknown keys, wrong types, bad symbol
or stream names and impossible values raise `ConfigError` naming the file (or
the environment variable) and the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from streaming_jobs.common.strict import ConfigError, load

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF_DIR = PROJECT_ROOT / "conf"
DEFAULT_STATE_DIR = PROJECT_ROOT / ".state"

# The documented local default for the loopback MinIO. It only ever applies
# when MINIO_ROOT_USER / MINIO_ROOT_PASSWORD are both unset AND the S3
# endpoint is on loopback; anything else must bring its credentials in the
# environment.
LOCAL_S3_USER = "lakehouse"
LOCAL_S3_PASSWORD = "lakehouse-local-only"

# One Kafka topic per stream type (plus the producer's quarantine topic).
STREAM_TYPES = ("trade", "aggTrade", "kline", "ticker", "depth", "bookTicker")
TOPIC_KEYS = (*STREAM_TYPES, "quarantine")
LAYERS = ("bronze", "silver", "gold")
# Gold's queries over silver's commits: the analytics, and gold_data_quality.
GOLD_QUERIES = ("gold", "gold_quality")

KLINE_INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w",
    "1M",
)  # fmt: skip
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{5,20}$")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_DURATION_RE = re.compile(r"^[1-9][0-9]* (millisecond|second|minute|hour|day)s?$")
# Per-symbol stream suffixes by stream type (depth: diff book, depth5/10/20:
# partial book; both optionally @100ms).
_STREAM_PATTERNS = {
    kind: re.compile(pattern)
    for kind, pattern in {
        "trade": r"trade",
        "aggTrade": r"aggTrade",
        "kline": r"kline_(?P<interval>[0-9]+[smhdwM])",
        "ticker": r"ticker",
        "depth": r"depth(5|10|20)?(@100ms)?",
        "bookTicker": r"bookTicker",
    }.items()
}


def _check_duration(value: str, what: str) -> None:
    if not _DURATION_RE.match(value):
        raise ValueError(f"{what} {value!r} is not a duration like '10 seconds' or '1 minute'")


_DURATION_UNIT_MS = {
    "millisecond": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
}


def duration_ms(value: str) -> int:
    """'2 minutes' -> 120000 (the duration syntax Spark's triggers and watermarks take)."""
    _check_duration(value, "duration")
    count, unit = value.split()
    return int(count) * _DURATION_UNIT_MS[unit.removesuffix("s")]


# Binance's kline intervals that tile a UTC day, so a bar's open time is its
# start floored to the interval since the epoch (3d, 1w and 1M are not).
INTERVAL_MS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


def _check_port(value: int, what: str) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{what} {value} is not a TCP port (1-65535)")


def check_symbol(symbol: str) -> str:
    """The symbol if Binance could spell it so (it reaches stream, topic and path names)."""
    if not _SYMBOL_RE.fullmatch(symbol):  # match's $ would accept a trailing newline
        raise ValueError(
            f"symbol {symbol!r} is not a Binance spot symbol (upper-case letters and "
            "digits, 5 to 20 of them, e.g. BTCUSDT)"
        )
    return symbol


def stream_kind(stream: str) -> str:
    """The stream type (topic key) of a per-symbol stream suffix: kline_1m -> kline."""
    for kind, pattern in _STREAM_PATTERNS.items():
        match = pattern.fullmatch(stream)
        if match is None:
            continue
        if kind == "kline" and match.group("interval") not in KLINE_INTERVALS:
            raise ValueError(f"unknown kline interval {match.group('interval')!r} in {stream!r}")
        return kind
    raise ValueError(
        f"unknown stream {stream!r}: expected trade, aggTrade, kline_<interval>, ticker, "
        "depth or depth5|depth10|depth20 (optionally @100ms) or bookTicker"
    )


# --- conf/pipeline.yaml -----------------------------------------------------


@dataclass(frozen=True)
class ServicesSettings:
    """Where the local services listen: loopback unless configured otherwise."""

    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    minio_port: int = 9000
    minio_console_port: int = 9001
    prometheus_port: int = 9090
    producer_metrics_port: int = 8000
    # The replay exchange of `make demo` (python -m producer.replay).
    replay_port: int = 9443
    # The Spark standalone cluster of `make cluster-up` (infra/spark-cluster.sh):
    # the master's RPC and web UI; worker n's web UI is spark_worker_ui_port + n - 1.
    spark_master_port: int = 7077
    spark_master_ui_port: int = 8080
    spark_worker_ui_port: int = 8081
    scrape_interval: str = "5s"
    # infra/supervise.py: the wait before restarting an exited job doubles
    # from the initial value to the max; a job that ran `restart_stable_s`
    # starts over from the initial wait.
    restart_backoff_initial_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    restart_stable_s: float = 120.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_port"):
                _check_port(getattr(self, f.name), f.name)
        if not re.match(r"^[1-9][0-9]*(ms|s|m)$", self.scrape_interval):
            raise ValueError(f"scrape_interval {self.scrape_interval!r} is not like '5s'")
        if not 0 < self.restart_backoff_initial_s <= self.restart_backoff_max_s:
            raise ValueError("need 0 < restart_backoff_initial_s <= restart_backoff_max_s")
        if self.restart_stable_s <= 0:
            raise ValueError("restart_stable_s must be positive")

    @property
    def restart_backoff(self) -> str:
        """infra/supervise.py's --backoff: initial,max,stable."""
        return (
            f"{self.restart_backoff_initial_s},{self.restart_backoff_max_s},{self.restart_stable_s}"
        )


@dataclass(frozen=True)
class TopicSettings:
    name: str
    partitions: int = 1
    retention_hours: int = 168
    # 1 on the single local broker; 3 on a real cluster.
    replication_factor: int = 1

    def __post_init__(self) -> None:
        if not _TOPIC_RE.match(self.name):
            raise ValueError(f"topic name {self.name!r} may only use letters, digits, . _ -")
        if self.partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {self.partitions}")
        if self.retention_hours < 1:
            raise ValueError(f"retention_hours must be at least 1, got {self.retention_hours}")
        if self.replication_factor < 1:
            raise ValueError(
                f"replication_factor must be at least 1, got {self.replication_factor}"
            )


@dataclass(frozen=True)
class KafkaSettings:
    topics: dict[str, TopicSettings]
    # None: the local broker started by `make up` (services.host:kafka_port).
    bootstrap_servers: str | None = None

    def __post_init__(self) -> None:
        missing = [k for k in TOPIC_KEYS if k not in self.topics]
        unknown = [k for k in self.topics if k not in TOPIC_KEYS]
        if unknown:
            raise ValueError(f"topics: unknown stream type {unknown[0]!r} (known: {TOPIC_KEYS})")
        if missing:
            raise ValueError(f"topics: missing {', '.join(missing)}")
        names = [t.name for t in self.topics.values()]
        if len(set(names)) != len(names):
            raise ValueError("topics: two stream types share one topic name")


@dataclass(frozen=True)
class StorageSettings:
    """Where tables and checkpoints live, per profile (STORAGE=local|minio)."""

    profile: Literal["local", "minio"] = "local"
    # local: relative to the state directory unless absolute.
    local_root: str = "lake"
    s3_bucket: str = "lakehouse"
    # None: the local MinIO started by `make up` (http://services.host:minio_port).
    s3_endpoint: str | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9][a-z0-9.-]{2,62}$", self.s3_bucket):
            raise ValueError(f"s3_bucket {self.s3_bucket!r} is not a valid bucket name")


@dataclass(frozen=True)
class LayerSettings:
    """One long-running streaming query (a spark-submit)."""

    trigger: str
    ui_port: int
    # The driver's own /metrics (query progress, Kafka lag, restarts) for Prometheus.
    metrics_port: int
    watermark: str | None = None
    # Bounds a micro-batch (a burst or a backlog after downtime); None: no bound.
    max_offsets_per_trigger: int | None = None
    # The driver's CPU priority on its machine (nice, 0-19): a layer that may lag
    # yields the cores to those a bar's freshness waits on (./spark-submit.sh).
    nice: int = 0

    def __post_init__(self) -> None:
        _check_duration(self.trigger, "trigger")
        if not 0 <= self.nice <= 19:
            raise ValueError("nice must be 0 (the default priority) to 19 (the lowest)")
        if self.max_offsets_per_trigger is not None and self.max_offsets_per_trigger < 1:
            raise ValueError("max_offsets_per_trigger must be at least 1")
        if self.watermark is not None:
            _check_duration(self.watermark, "watermark")
        _check_port(self.ui_port, "ui_port")
        _check_port(self.metrics_port, "metrics_port")


@dataclass(frozen=True)
class BronzeSettings(LayerSettings):
    # Stream types a second query ingests on its own, shorter trigger, so
    # trades are not held up by the commits of the bulkier streams (depth,
    # tickers); empty: one query for every topic.
    fast_lane: tuple[str, ...] = ("trade", "aggTrade")
    fast_trigger: str = "1 second"
    # A fast-lane trigger commits once it has fast_min_records new records, or once
    # fast_max_delay has passed since its last commit (Kafka's minOffsetsPerTrigger and
    # maxTriggerDelay): a busy market commits every trigger, a quiet one pays for fewer
    # commits, each a fixed cost. 0: every trigger with new records commits.
    fast_min_records: int = 0
    fast_max_delay: str = "3 seconds"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_duration(self.fast_trigger, "fast_trigger")
        _check_duration(self.fast_max_delay, "fast_max_delay")
        if self.fast_min_records < 0:
            raise ValueError("fast_min_records must not be negative")
        if duration_ms(self.fast_max_delay) < duration_ms(self.fast_trigger):
            raise ValueError("fast_max_delay must not be shorter than fast_trigger")
        unknown = [k for k in self.fast_lane if k not in TOPIC_KEYS or k == "quarantine"]
        if unknown:
            raise ValueError(f"fast_lane: {unknown[0]!r} is not a stream type")
        if len(set(self.fast_lane)) != len(self.fast_lane):
            raise ValueError("fast_lane lists a stream type twice")


@dataclass(frozen=True)
class SilverSettings(LayerSettings):
    # Bar intervals; 1m is built from trades, the others roll up from 1m.
    intervals: tuple[str, ...] = ("1m", "5m", "15m", "1h", "4h", "1d")
    # The bronze table bars are built from: `trades` or `agg_trades`.
    bars_from: str = "trades"
    # Trade-less time at a symbol's live edge is complete once the exchange clock
    # (the latest trade time of any symbol) is this far past it.
    clock_grace: str = "2 seconds"
    # Trade ids missing for this long on the exchange clock are given up: counted as
    # lost, and the bars they span final (a late arrival still corrects them).
    gap_timeout: str = "5 minutes"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.watermark is None:
            raise ValueError(
                "silver needs a watermark (how late a trade may arrive before it counts as late)"
            )
        unknown = [i for i in self.intervals if i not in INTERVAL_MS]
        if unknown:
            raise ValueError(f"interval {unknown[0]!r} is not one of {', '.join(INTERVAL_MS)}")
        if (
            not self.intervals
            or self.intervals[0] != "1m"
            or len(set(self.intervals)) != len(self.intervals)
        ):
            raise ValueError("intervals must start with 1m and list each interval once")
        if self.bars_from not in ("trades", "agg_trades"):
            raise ValueError(f"bars_from must be trades or agg_trades, got {self.bars_from!r}")
        _check_duration(self.clock_grace, "clock_grace")
        _check_duration(self.gap_timeout, "gap_timeout")

    @property
    def watermark_ms(self) -> int:
        assert self.watermark is not None
        return duration_ms(self.watermark)

    @property
    def clock_grace_ms(self) -> int:
        return duration_ms(self.clock_grace)

    @property
    def gap_timeout_ms(self) -> int:
        return duration_ms(self.gap_timeout)


@dataclass(frozen=True)
class GoldSettings(LayerSettings):
    """Gold's windows and thresholds (formulas: docs/analytics.md)."""

    # Realized volatility: sample std of the last `vol_window` log returns.
    vol_window: int = 30
    # Rolling windows of 1m returns for correlations and risk.
    correlation_windows: tuple[str, ...] = ("1 hour", "24 hours")
    risk_windows: tuple[str, ...] = ("1 hour", "24 hours")
    # Correlations and per-symbol risk cover the active symbols of these tiers:
    # pairs grow with the square of the symbols (2,000 symbols are 2 million
    # pairs a minute), so the watch list (tier 3) gets bars and signals only.
    cross_asset_tiers: tuple[int, ...] = (1, 2)
    # A 1m return or volume is an anomaly when |z| against the previous
    # `anomaly_window` bars exceeds `anomaly_z`.
    anomaly_window: int = 60
    anomaly_z: float = 4.0
    # The trigger of the gold_quality query (gold_data_quality): each batch adds the
    # trades bronze committed since the last one to the days it keeps.
    quality_trigger: str = "1 minute"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_duration(self.quality_trigger, "quality_trigger")
        if self.vol_window < 2 or self.anomaly_window < 2:
            raise ValueError("vol_window and anomaly_window need at least 2 bars")
        if not self.cross_asset_tiers or not set(self.cross_asset_tiers) <= {1, 2, 3}:
            raise ValueError(f"cross_asset_tiers must be tiers 1..3, got {self.cross_asset_tiers}")
        if not self.anomaly_z > 0:
            raise ValueError(f"anomaly_z must be positive, got {self.anomaly_z}")
        for what, windows in (
            ("correlation_windows", self.correlation_windows),
            ("risk_windows", self.risk_windows),
        ):
            if not windows:
                raise ValueError(f"{what} must not be empty")
            for window in windows:
                _check_duration(window, what)
                if duration_ms(window) % 60_000 or duration_ms(window) < 120_000:
                    raise ValueError(f"{what}: {window!r} is not a whole number of minutes >= 2")


@dataclass(frozen=True)
class StreamingSettings:
    bronze: BronzeSettings
    silver: SilverSettings
    gold: GoldSettings
    sql_ui_port: int = 4043

    def __post_init__(self) -> None:
        _check_port(self.sql_ui_port, "sql_ui_port")
        layers = (self.bronze, self.silver, self.gold)
        ports = [*(layer.ui_port for layer in layers), self.sql_ui_port]
        ports += [layer.metrics_port for layer in layers]
        if len(set(ports)) != len(ports):
            raise ValueError(f"every layer needs its own Spark UI and metrics port, got {ports}")


@dataclass(frozen=True)
class ProducerSettings:
    """The Binance client: endpoints, connection policy, backfill."""

    ws_base_url: str = "wss://stream.binance.com:9443"
    rest_base_url: str = "https://api.binance.com"
    # Binance allows 1024 streams per connection.
    max_streams_per_connection: int = 1024
    # Binance cuts a connection at 24 h: roll over to a new one before that.
    rollover_after_s: float = 23 * 3600.0
    # A connection with no data frame for this long is replaced.
    watchdog_silence_s: float = 30.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    # Binance's limit is 300 connection attempts per 5 minutes per IP.
    max_attempts_per_5min: int = 250
    # How often the exchange's clock is read (the offset judges exchange times).
    clock_sync_s: float = 60.0
    # Where the last ids per symbol survive a restart (relative to the state dir).
    state_file: str = "producer/state.json"
    # Trade gaps are filled from /api/v3/historicalTrades (trade ids).
    backfill_page_limit: int = 1000
    # Stop a single gap's backfill after this many records (say so, count it).
    backfill_max_records: int = 500_000

    def __post_init__(self) -> None:
        for url, schemes in (
            (self.ws_base_url, ("ws://", "wss://")),
            (self.rest_base_url, ("http://", "https://")),
        ):
            if not url.startswith(schemes):
                raise ValueError(f"{url!r} must start with {' or '.join(schemes)}")
        if not 1 <= self.max_streams_per_connection <= 1024:
            raise ValueError("max_streams_per_connection must be 1..1024 (Binance's limit)")
        if not 0 < self.max_attempts_per_5min <= 300:
            raise ValueError("max_attempts_per_5min must be 1..300 (Binance's limit)")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if self.rollover_after_s <= 0 or self.watchdog_silence_s <= 0:
            raise ValueError("rollover_after_s and watchdog_silence_s must be positive")
        if not 1 <= self.backfill_page_limit <= 1000:
            raise ValueError("backfill_page_limit must be 1..1000 (Binance's limit)")


@dataclass(frozen=True)
class SparkClusterSettings:
    """The shape of the standalone cluster `make cluster-up` starts on services.host.

    Each layer is an application of its own that takes spark.cores.max cores
    (conf/spark-defaults.conf), so workers x worker_cores must cover three of
    them for bronze, silver and gold to run at once. Cores are the cluster's
    scheduling slots, not the machine's: they may exceed the physical cores.
    """

    workers: int = 2
    worker_cores: int = 3
    worker_memory: str = "4g"

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 16:
            raise ValueError("workers must be 1..16")
        if self.worker_cores < 1:
            raise ValueError("worker_cores must be at least 1")
        if not re.match(r"^[1-9][0-9]*[mg]$", self.worker_memory):
            raise ValueError(f"worker_memory {self.worker_memory!r} is not like '4g' or '512m'")


@dataclass(frozen=True)
class PipelineSettings:
    kafka: KafkaSettings
    storage: StorageSettings
    streaming: StreamingSettings
    services: ServicesSettings = field(default_factory=ServicesSettings)
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    spark_cluster: SparkClusterSettings = field(default_factory=SparkClusterSettings)


# --- conf/symbols.yaml ------------------------------------------------------


def _check_streams(streams: tuple[str, ...]) -> None:
    if not streams:
        raise ValueError("streams must not be empty")
    for stream in streams:
        stream_kind(stream)
    if len(set(streams)) != len(streams):
        raise ValueError(f"streams lists a stream twice: {list(streams)}")


@dataclass(frozen=True)
class SymbolDefaults:
    streams: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_streams(self.streams)


@dataclass(frozen=True)
class SymbolEntry:
    name: str
    # 1 = core market (subscribed first, watched closest), 2 = major, 3 = watch list.
    tier: int = 2
    enabled: bool = True
    # None: defaults.streams.
    streams: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_symbol(self.name)
        if self.tier not in (1, 2, 3):
            raise ValueError(f"tier must be 1, 2 or 3, got {self.tier}")
        if self.streams is not None:
            _check_streams(self.streams)


@dataclass(frozen=True)
class SymbolsFile:
    defaults: SymbolDefaults
    symbols: list[SymbolEntry]

    def __post_init__(self) -> None:
        names = [s.name for s in self.symbols]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"symbols: {duplicates[0]} is listed twice")


@dataclass(frozen=True)
class Symbol:
    """An active symbol with the streams the producer subscribes to."""

    name: str
    tier: int
    streams: tuple[str, ...]

    def stream_names(self) -> tuple[str, ...]:
        """Binance's combined-stream names: lower-case symbol @ stream."""
        return tuple(f"{self.name.lower()}@{s}" for s in self.streams)


# --- conf/portfolio.yaml ----------------------------------------------------


@dataclass(frozen=True)
class Portfolio:
    """The portfolio gold_risk tracks: constant weights, rebalanced every minute."""

    name: str
    weights: dict[str, float]
    # Annual, as a fraction (0.04 = 4 %); Sharpe's excess return is over it.
    risk_free_rate: float = 0.0

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9_]{1,32}$", self.name):
            raise ValueError(f"name {self.name!r}: lower-case letters, digits and _, at most 32")
        if not self.weights:
            raise ValueError("weights must name at least one symbol")
        for symbol, weight in self.weights.items():
            if not _SYMBOL_RE.fullmatch(symbol):
                raise ValueError(f"weights: {symbol!r} is not a Binance spot symbol")
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"weights: {symbol} must be a positive number, got {weight}")
        if abs(sum(self.weights.values()) - 1) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {sum(self.weights.values())}")
        if not (math.isfinite(self.risk_free_rate) and -1 < self.risk_free_rate < 1):
            raise ValueError(f"risk_free_rate must be a fraction, got {self.risk_free_rate}")


# --- the assembled settings -------------------------------------------------


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    """Everything a component needs, resolved: no further defaults downstream."""

    conf_dir: Path
    state_dir: Path
    pipeline: PipelineSettings
    symbols: tuple[Symbol, ...]
    portfolio: Portfolio

    @property
    def services(self) -> ServicesSettings:
        return self.pipeline.services

    @property
    def kafka_bootstrap_servers(self) -> str:
        configured = self.pipeline.kafka.bootstrap_servers
        return configured or f"{self.services.host}:{self.services.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        configured = self.pipeline.storage.s3_endpoint
        return configured or f"http://{self.services.host}:{self.services.minio_port}"

    @property
    def storage_profile(self) -> str:
        return self.pipeline.storage.profile

    def topic(self, kind: str) -> TopicSettings:
        return self.pipeline.kafka.topics[kind]

    def bronze_queries(self) -> dict[str, tuple[str, ...]]:
        """Bronze's queries, each with the stream types whose topics it reads.

        `bronze_fast` reads the fast lane's topics, `bronze` every other one
        (the producer's quarantine topic included); each writes its topics'
        tables and the quarantine rows of its own records.
        """
        fast = self.pipeline.streaming.bronze.fast_lane
        rest = tuple(k for k in TOPIC_KEYS if k not in fast)
        return {"bronze": rest, **({"bronze_fast": fast} if fast else {})}

    def layer(self, name: str) -> LayerSettings:
        if name not in LAYERS:
            raise KeyError(f"unknown layer {name!r}; expected one of {LAYERS}")
        settings: LayerSettings = getattr(self.pipeline.streaming, name)
        return settings

    @property
    def lake_root(self) -> str:
        """Root URI of the lake for the active storage profile."""
        storage = self.pipeline.storage
        if storage.profile == "minio":
            return f"s3a://{storage.s3_bucket}"
        root = Path(storage.local_root)
        return (root if root.is_absolute() else self.state_dir / root).as_uri()

    def table_path(self, table: str) -> str:
        return f"{self.lake_root}/tables/{table}"

    def checkpoint_path(self, query: str) -> str:
        return f"{self.lake_root}/checkpoints/{query}"

    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def producer(self) -> ProducerSettings:
        return self.pipeline.producer

    def producer_state_file(self) -> Path:
        path = Path(self.producer.state_file)
        return path if path.is_absolute() else self.state_dir / path

    def s3_credentials(self, environ: Mapping[str, str] | None = None) -> S3Credentials:
        env = os.environ if environ is None else environ
        user, password = env.get("MINIO_ROOT_USER"), env.get("MINIO_ROOT_PASSWORD")
        if user and password:
            return S3Credentials(user, password)
        if user or password:
            raise ConfigError(
                "environment", "MINIO_ROOT_USER/MINIO_ROOT_PASSWORD", "set both or neither"
            )
        host = re.sub(r"^https?://|[:/].*$", "", self.s3_endpoint)
        if host in ("127.0.0.1", "localhost", "::1"):
            return S3Credentials(LOCAL_S3_USER, LOCAL_S3_PASSWORD)
        raise ConfigError(
            "environment",
            "MINIO_ROOT_USER/MINIO_ROOT_PASSWORD",
            f"required for the non-local S3 endpoint {self.s3_endpoint}",
        )


# Environment variable -> (setting path in pipeline.yaml, type of the value).
PIPELINE_ENV_OVERRIDES: dict[str, tuple[tuple[str, ...], Any]] = {
    "KAFKA_BOOTSTRAP_SERVERS": (("kafka", "bootstrap_servers"), str),
    "STORAGE": (("storage", "profile"), Literal["local", "minio"]),
    "S3_ENDPOINT": (("storage", "s3_endpoint"), str),
    "S3_BUCKET": (("storage", "s3_bucket"), str),
    "LAKE_HOST": (("services", "host"), str),
    "BINANCE_WS_URL": (("producer", "ws_base_url"), str),
    "BINANCE_REST_URL": (("producer", "rest_base_url"), str),
}


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "", f"not valid YAML: {err}") from None


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _active_symbols(
    parsed: SymbolsFile, source: str, environ: Mapping[str, str]
) -> tuple[Symbol, ...]:
    by_name = {s.name: s for s in parsed.symbols}
    raw = environ.get("ACTIVE_SYMBOLS", "").strip()
    if raw:
        # ACTIVE_SYMBOLS picks the active set; a symbol missing from the file is
        # allowed (it gets the default streams) but must still be a valid name.
        entries = []
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            entry = by_name.get(name)
            if entry is None:
                entry = load(SymbolEntry, {"name": name}, "environment ACTIVE_SYMBOLS", name)
            entries.append(entry)
        if not entries:
            raise ConfigError("environment ACTIVE_SYMBOLS", "", "names no symbol")
    else:
        entries = [s for s in parsed.symbols if s.enabled]
        if not entries:
            raise ConfigError(source, "symbols", "no symbol is enabled")
    return tuple(
        Symbol(e.name, e.tier, e.streams if e.streams is not None else parsed.defaults.streams)
        for e in sorted(entries, key=lambda e: (e.tier, e.name))
    )


def load_settings(
    conf_dir: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load and validate conf/pipeline.yaml, symbols.yaml and portfolio.yaml, with env overrides."""
    env = os.environ if environ is None else environ
    conf = Path(conf_dir or env.get("LAKE_CONF_DIR") or DEFAULT_CONF_DIR)

    pipeline_file = conf / "pipeline.yaml"
    raw_pipeline = _read_yaml(pipeline_file)
    if not isinstance(raw_pipeline, dict):
        raise ConfigError(str(pipeline_file), "", "expected a mapping at the top level")
    pipeline = load(PipelineSettings, raw_pipeline, str(pipeline_file))
    for var, (path, tp) in PIPELINE_ENV_OVERRIDES.items():
        if env.get(var):
            value = load(tp, env[var], f"environment {var}")
            _set_path(raw_pipeline, path, value)
            pipeline = load(
                PipelineSettings, raw_pipeline, f"{pipeline_file} (with {var}={env[var]})"
            )

    symbols_file = conf / "symbols.yaml"
    parsed_symbols = load(SymbolsFile, _read_yaml(symbols_file), str(symbols_file))
    symbols = _active_symbols(parsed_symbols, str(symbols_file), env)

    portfolio_file = conf / "portfolio.yaml"
    portfolio = load(Portfolio, _read_yaml(portfolio_file), str(portfolio_file))

    state_dir = Path(env.get("STATE_DIR") or DEFAULT_STATE_DIR).resolve()
    return Settings(
        conf_dir=conf, state_dir=state_dir, pipeline=pipeline, symbols=symbols, portfolio=portfolio
    )


def shell_exports(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """`export` lines for the infra scripts, so shell and Python share one config."""
    s = settings.services
    cluster = settings.pipeline.spark_cluster
    creds = settings.s3_credentials(environ)
    values = {
        "STATE_DIR": str(settings.state_dir),
        "LAKE_HOST": s.host,
        "KAFKA_PORT": s.kafka_port,
        "KAFKA_CONTROLLER_PORT": s.kafka_controller_port,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MINIO_PORT": s.minio_port,
        "MINIO_CONSOLE_PORT": s.minio_console_port,
        "S3_ENDPOINT": settings.s3_endpoint,
        "S3_BUCKET": settings.pipeline.storage.s3_bucket,
        "STORAGE": settings.storage_profile,
        "PROMETHEUS_PORT": s.prometheus_port,
        "PRODUCER_METRICS_PORT": s.producer_metrics_port,
        "REPLAY_PORT": s.replay_port,
        "BINANCE_WS_URL": settings.producer.ws_base_url,
        "BINANCE_REST_URL": settings.producer.rest_base_url,
        "SCRAPE_INTERVAL": s.scrape_interval,
        "SPARK_UI_PORTS": " ".join(str(settings.layer(name).ui_port) for name in LAYERS),
        "METRICS_PORTS": " ".join(str(settings.layer(name).metrics_port) for name in LAYERS),
        **{f"NICE_{name.upper()}": settings.layer(name).nice for name in LAYERS},
        "RESTART_BACKOFF": s.restart_backoff,
        "CLUSTER_MASTER_PORT": s.spark_master_port,
        "CLUSTER_MASTER_UI_PORT": s.spark_master_ui_port,
        "CLUSTER_WORKER_UI_PORT": s.spark_worker_ui_port,
        "CLUSTER_WORKERS": cluster.workers,
        "CLUSTER_WORKER_CORES": cluster.worker_cores,
        "CLUSTER_WORKER_MEMORY": cluster.worker_memory,
        "MINIO_ROOT_USER": creds.access_key,
        "MINIO_ROOT_PASSWORD": creds.secret_key,
    }
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in values.items())


def main(argv: list[str]) -> int:
    """`check` validates the config; `shell` prints exports for the infra scripts."""
    command = argv[0] if argv else "check"
    try:
        settings = load_settings()
        if command == "shell":
            print(shell_exports(settings))
        elif command == "check":
            names = ", ".join(s.name for s in settings.symbols)
            print(
                f"config OK: {settings.conf_dir} (symbols: {names}; storage: "
                f"{settings.storage_profile} at {settings.lake_root})"
            )
        else:
            print("usage: python -m streaming_jobs.common.settings [check|shell]", file=sys.stderr)
            return 2
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 78  # EX_CONFIG
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
