"""How far each streaming query and lake table has got, read without Spark.

For `make status` and `make demo ONCE=1`: a query's committed Kafka offsets
come from its checkpoint (`commits/<n>` marks batch n done, `offsets/<n>`
holds the source offsets it read up to), its lag is the Kafka end offsets
minus those; a Hudi table's last commit is the newest completed instant in
its timeline. Works on both storage profiles (local files, or MinIO through
the S3 API).

    python -m streaming_jobs.common.progress     # one line per query and table
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from kafka import KafkaConsumer, TopicPartition

from streaming_jobs.common.s3 import S3Client, S3Error
from streaming_jobs.common.settings import Settings, load_settings

# Completed instants: <requested>_<completed>.commit in Hudi 1.x timelines.
# Base files: <file id>_<write token>_<instant>.parquet.
_BASE_FILE = re.compile(r"([0-9a-f-]+-[0-9]+)_([0-9-]+)_([0-9]{17})\.parquet")
DATA_QUALITY = "gold_data_quality"
_INSTANT = re.compile(r"(?:^|/)([0-9]{17})(?:_([0-9]{17}))?\.(commit|deltacommit|replacecommit)$")


class _Store:
    """Files under a lake URI: file:// or s3a://bucket/..."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._s3 = (
            S3Client(settings.s3_endpoint, settings.s3_credentials())
            if settings.storage_profile == "minio"
            else None
        )

    def _split(self, uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3a://").partition("/")
        return bucket, key

    def list(self, uri: str) -> list[str]:
        if self._s3 is None:
            root = Path(uri.removeprefix("file://"))
            return (
                [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
                if root.exists()
                else []
            )
        bucket, prefix = self._split(uri)
        keys = self._s3.list_keys(bucket, prefix.rstrip("/") + "/")
        return [k.removeprefix(prefix.rstrip("/") + "/") for k in keys]

    def read(self, uri: str) -> bytes:
        if self._s3 is None:
            return Path(uri.removeprefix("file://")).read_bytes()
        return self._s3.get(*self._split(uri))


def batches(settings: Settings, query: str) -> tuple[list[int], list[int]]:
    """(batches planned, batches committed) in the query's checkpoint, ascending."""
    names = _Store(settings).list(settings.checkpoint_path(query))

    def ids(folder: str) -> list[int]:
        return sorted(int(n.split("/")[1]) for n in names if re.fullmatch(rf"{folder}/[0-9]+", n))

    return ids("offsets"), ids("commits")


def committed_offsets(settings: Settings, query: str) -> dict[tuple[str, int], int] | None:
    """Kafka offsets the query has committed (next offset to read), or None before batch 0."""
    store = _Store(settings)
    root = settings.checkpoint_path(query)
    _planned, commits = batches(settings, query)
    if not commits:
        return None
    lines = store.read(f"{root}/offsets/{max(commits)}").decode().splitlines()
    offsets: dict[tuple[str, int], int] = {}
    for line in lines[2:]:  # version, batch metadata, then one line per source
        for topic, partitions in json.loads(line).items():
            for partition, offset in partitions.items():
                offsets[(topic, int(partition))] = int(offset)
    return offsets


def end_offsets(
    settings: Settings, kinds: tuple[str, ...] | None = None
) -> dict[tuple[str, int], int]:
    """End offsets of the topics of stream types `kinds` (None: every topic)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        partitions = [
            TopicPartition(spec.name, p)
            for kind, spec in settings.pipeline.kafka.topics.items()
            if kinds is None or kind in kinds
            for p in consumer.partitions_for_topic(spec.name) or ()
        ]
        return {
            (tp.topic, tp.partition): off for tp, off in consumer.end_offsets(partitions).items()
        }
    finally:
        consumer.close()


def lag(settings: Settings, query: str) -> int | None:
    """Records in the topics a bronze query reads it has not committed (None: no batch yet)."""
    done = committed_offsets(settings, query)
    if done is None:
        return None
    ends = end_offsets(settings, settings.bronze_queries()[query])
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())


def bronze_lag(settings: Settings) -> int | None:
    """Records some bronze query has yet to commit (None: one has no batch yet)."""
    lags = [lag(settings, query) for query in settings.bronze_queries()]
    return None if None in lags else sum(lag for lag in lags if lag is not None)


def _instants(settings: Settings, table: str) -> list[str]:
    store = _Store(settings)
    return sorted(
        m.group(1)
        for n in store.list(f"{settings.table_path(table)}/.hoodie")
        if (m := _INSTANT.search(n))
    )


def completed_instants(settings: Settings, table: str) -> dict[str, int]:
    """Each completed commit of a Hudi table: its instant -> the epoch ms it completed."""
    done = {}
    for name in _Store(settings).list(f"{settings.table_path(table)}/.hoodie"):
        m = _INSTANT.search(name)
        if m and m.group(2):
            stamp = dt.datetime.strptime(m.group(2), "%Y%m%d%H%M%S%f").replace(tzinfo=dt.UTC)
            done[m.group(1)] = int(stamp.timestamp() * 1000)
    return done


def last_commit(settings: Settings, table: str) -> dt.datetime | None:
    instants = _instants(settings, table)
    if not instants:
        return None
    return dt.datetime.strptime(instants[-1], "%Y%m%d%H%M%S%f").replace(tzinfo=dt.UTC)


def commits_behind(settings: Settings, query: str, table: str) -> int | None:
    """Commits of Hudi `table` a query reading it as a stream has not committed yet.

    None before the query's first batch (a table with no commit is 0 behind).
    """
    store = _Store(settings)
    root = settings.checkpoint_path(query)
    _planned, commits = batches(settings, query)
    if not commits:
        return None if _instants(settings, table) else 0
    done = ""
    for line in store.read(f"{root}/offsets/{max(commits)}").decode().splitlines()[2:]:
        done = max(done, json.loads(line).get("offsetCommitTime", ""))
    return sum(1 for instant in _instants(settings, table) if instant > done)


def latest_rows(settings: Settings, table: str, partition: str) -> list[dict[str, Any]]:
    """The rows of one partition of a COPY_ON_WRITE table, read without Spark.

    Each file group's newest base file written by a completed commit holds
    its current rows (older files are versions the cleaner has not removed).
    """
    store = _Store(settings)
    root = settings.table_path(table)
    done = completed_instants(settings, table)
    newest: dict[str, tuple[str, str]] = {}
    for name in store.list(f"{root}/{partition}"):
        m = _BASE_FILE.fullmatch(name)
        if m and m.group(3) in done and m.group(3) > newest.get(m.group(1), ("", ""))[0]:
            newest[m.group(1)] = (m.group(3), name)
    rows: list[dict[str, Any]] = []
    for _instant, name in newest.values():
        data = pq.read_table(io.BytesIO(store.read(f"{root}/{partition}/{name}")))
        rows.extend(data.to_pylist())
    return rows


def partitions(settings: Settings, table: str) -> list[str]:
    names = _Store(settings).list(settings.table_path(table))
    return sorted({n.split("/", 1)[0] for n in names if "=" in n.split("/", 1)[0]})


def data_quality(settings: Settings) -> tuple[str, list[dict[str, Any]]] | None:
    """Today's gold_data_quality rows, else the latest day's: (day, rows)."""
    days = partitions(settings, DATA_QUALITY)
    if not days:
        return None
    today = f"day={dt.datetime.now(dt.UTC).date().isoformat()}"
    day = today if today in days else days[-1]
    return day.removeprefix("day="), latest_rows(settings, DATA_QUALITY, day)


def tables(settings: Settings) -> list[str]:
    store = _Store(settings)
    names = {
        n.split("/", 1)[0]
        for n in store.list(settings.table_path("").rstrip("/"))
        if "/.hoodie/" in n
    }
    return sorted(names)


GOLD_SOURCE = "silver_ohlcv"


def silver_source(settings: Settings) -> str:
    """The bronze table silver builds bars from (conf: streaming.silver.bars_from)."""
    return f"bronze_{settings.pipeline.streaming.silver.bars_from}"


def print_quality(day: str, rows: list[dict[str, Any]]) -> None:
    print(f"\nDATA QUALITY {day} (gold_data_quality)")
    columns = (
        ("SYMBOL", "symbol", 10),
        ("TRADES", "trades", 9),
        ("GAPS OPEN", "gaps_open", 9),
        ("MISSING", "missing_trades", 8),
        ("FILLED", "gaps_filled", 7),
        ("LATE", "late_trades", 6),
        ("QUARANTINED", "quarantined_total", 11),
        ("NO-TRADE MIN", "tradeless_minutes", 12),
        ("LAT P99 S", "latency_p99_s", 10),
        ("LAT MAX S", "latency_max_s", 10),
    )
    print(" ".join(f"{title:<{width}}" for title, _, width in columns))
    for row in sorted(rows, key=lambda r: str(r["symbol"])):
        cells = []
        for _, key, width in columns:
            value = row.get(key)
            text = "-" if value is None else f"{value:.1f}" if isinstance(value, float) else value
            cells.append(f"{text!s:<{width}}")
        print(" ".join(cells))


def main() -> int:
    settings = load_settings()
    try:
        print(f"{'QUERY':<12} {'LAG (records)':<14} CHECKPOINT")
        for query in settings.bronze_queries():
            behind = lag(settings, query)
            print(
                f"{query:<12} {'-' if behind is None else behind:<14} "
                f"{settings.checkpoint_path(query)}"
            )
        for query, source in (("silver", silver_source(settings)), ("gold", GOLD_SOURCE)):
            behind = commits_behind(settings, query, source)
            print(
                f"{query:<12} {'-' if behind is None else f'{behind} commits':<14} "
                f"{settings.checkpoint_path(query)} (reads {source})"
            )
        print(f"\n{'TABLE':<24} LAST COMMIT (UTC)")
        for table in tables(settings):
            when = last_commit(settings, table)
            print(f"{table:<24} {when.isoformat(timespec='seconds') if when else '-'}")
        quality = data_quality(settings)
        if quality is not None:
            print_quality(*quality)
    except (OSError, S3Error) as err:
        print(f"progress: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
