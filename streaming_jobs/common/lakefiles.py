"""Hudi tables read without Spark: their timelines, current rows and sizes.

For `make status`, the `lakehouse` CLI and the demo's report, which must
answer in a second, not after a JVM starts. A table's completed commits are
the `<requested>_<completed>.<action>` files of its timeline (read here
from the listing). Its current rows come from hudi-rs (the `hudi` package,
Apache Hudi's own reader in Rust): the latest file slice of every file group
a completed commit left and no clustering replaced, merged with its log
files on a merge-on-read table, filtered by partition and by the files'
column statistics before any row is read. Works on both storage profiles
(local files, or MinIO through the S3 API). Spark's snapshot read
(`./spark-submit.sh sql`) is the reference these readers are tested against.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hudi import HudiQueryType, HudiReadOptions, HudiTableBuilder

from streaming_jobs.common.s3 import S3Client
from streaming_jobs.common.settings import Settings

_INSTANT_FORMAT = "%Y%m%d%H%M%S%f"  # an instant's time, as Hudi names its files
# Completed instants: <requested>_<completed>.commit in Hudi 1.x timelines.
_INSTANT = re.compile(r"(?:^|/)([0-9]{17})(?:_([0-9]{17}))?\.(commit|deltacommit|replacecommit)$")
# Writes begun: <instant>.commit.requested, then <instant>.inflight (1.x names); inline
# compaction: <instant>.compaction.requested|inflight. Not clustering: it brings no
# rows, and its plans wait for the layer's upkeep (common/upkeep.py), so a stopped
# layer may leave one planned or half run, to be run by its next driver.
_PENDING = re.compile(
    r"(?:^|/)([0-9]{17})\.(?:inflight|"
    r"(?:commit|deltacommit|replacecommit|compaction)\.(?:requested|inflight))$"
)
# A clustering run begun (its plan is <instant>.clustering.requested), completed as a
# replacecommit of the same instant.
_CLUSTERING = re.compile(r"(?:^|/)([0-9]{17})\.clustering\.inflight$")


class Store:
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

    def sizes(self, uri: str) -> dict[str, int]:
        """Every file under uri (path relative to it) with its size in bytes.

        A lake is listed while its writers work: a file or folder removed
        during the walk (a commit's markers under .hoodie/.temp, a cleaned
        file) is left out, not an error.
        """
        if self._s3 is None:
            root = Path(uri.removeprefix("file://"))
            out = {}
            # os.walk skips a folder it can no longer open (onerror unset).
            for folder, _subfolders, names in os.walk(root):
                for name in names:
                    path = Path(folder, name)
                    try:
                        out[str(path.relative_to(root))] = path.stat().st_size
                    except FileNotFoundError:
                        continue
            return out
        bucket, prefix = self._split(uri)
        prefix = prefix.rstrip("/") + "/"
        return {k.removeprefix(prefix): n for k, n in self._s3.list_sizes(bucket, prefix).items()}

    def folders_holding(self, uri: str, marker: str) -> list[str]:
        """The folders directly under uri that hold the file `marker` (a relative path)."""
        if self._s3 is None:
            # One look a folder, not a listing of every file under uri.
            root = Path(uri.removeprefix("file://"))
            names = [p.name for p in root.iterdir()] if root.is_dir() else []
            return sorted(n for n in names if (root / n / marker).is_file())
        return sorted({n.split("/", 1)[0] for n in self.list(uri) if n.endswith(f"/{marker}")})

    def list(self, uri: str) -> list[str]:
        return list(self.sizes(uri))

    def read(self, uri: str, tail: int | None = None) -> bytes:
        """The file, or only its last `tail` bytes."""
        if self._s3 is None:
            with Path(uri.removeprefix("file://")).open("rb") as f:
                if tail:
                    f.seek(max(0, f.seek(0, io.SEEK_END) - tail))
                return f.read()
        return self._s3.get(*self._split(uri), tail=tail)


def instants(settings: Settings, table: str) -> list[str]:
    store = Store(settings)
    return sorted(
        m.group(1)
        for n in store.list(f"{settings.table_path(table)}/.hoodie")
        if (m := _INSTANT.search(n))
    )


@dataclass(frozen=True)
class Timeline:
    """A table's commits from one listing of its timeline."""

    completed: dict[str, int]  # instant -> the epoch ms it completed
    pending: frozenset[str]  # begun, neither completed nor rolled back: a write in flight
    clustering: frozenset[str]  # clustering runs begun and not completed (or left by a kill)


def timeline(settings: Settings, table: str) -> Timeline:
    names = Store(settings).list(f"{settings.table_path(table)}/.hoodie")
    completed, done = {}, set()
    for name in names:
        m = _INSTANT.search(name)
        if not m:
            continue
        done.add(m.group(1))
        if m.group(2):
            stamp = dt.datetime.strptime(m.group(2), _INSTANT_FORMAT).replace(tzinfo=dt.UTC)
            completed[m.group(1)] = int(stamp.timestamp() * 1000)
    pending = {m.group(1) for n in names if (m := _PENDING.search(n))} - done
    clustering = {m.group(1) for n in names if (m := _CLUSTERING.search(n))} - done
    return Timeline(completed, frozenset(pending), frozenset(clustering))


def pending_instants(settings: Settings, table: str) -> list[str]:
    """Commits of a table begun and neither completed nor rolled back: a write in flight."""
    return sorted(timeline(settings, table).pending)


def completed_instants(settings: Settings, table: str) -> dict[str, int]:
    """Each completed commit of a Hudi table: its instant -> the epoch ms it completed."""
    return timeline(settings, table).completed


def last_commit(settings: Settings, table: str) -> dt.datetime | None:
    done = instants(settings, table)
    if not done:
        return None
    return dt.datetime.strptime(done[-1], _INSTANT_FORMAT).replace(tzinfo=dt.UTC)


# A filter on a column: (name, "=" | "!=" | "<" | "<=" | ">" | ">=" | "IN", value as text).
Filter = tuple[str, str, str]


def _hudi_table(settings: Settings, table: str) -> Any:
    uri = settings.table_path(table)
    builder = HudiTableBuilder.from_base_uri(uri.replace("s3a://", "s3://").removeprefix("file://"))
    if settings.storage_profile == "minio":
        credentials = settings.s3_credentials()
        for key, value in {
            "aws_access_key_id": credentials.access_key,
            "aws_secret_access_key": credentials.secret_key,
            "aws_region": "us-east-1",
            "aws_endpoint": settings.s3_endpoint,
            "aws_allow_http": str(settings.s3_endpoint.startswith("http://")).lower(),
        }.items():
            builder = builder.with_storage_option(key, value)
    return builder.build()


def current_files(settings: Settings, table: str) -> dict[str, int]:
    """The files holding a table's current rows (base and log files): path -> bytes."""
    root = settings.table_path(table)
    files = {}
    for piece in _hudi_table(settings, table).get_file_slices():
        folder = f"{root}/{piece.partition_path}" if piece.partition_path else root
        files[f"{folder}/{piece.base_file_name}"] = piece.base_file_size
        for name, size in zip(piece.log_file_names, piece.log_file_sizes, strict=True):
            files[f"{folder}/{name}"] = size
    return files


def latest_rows(
    settings: Settings,
    table: str,
    filters: list[Filter] | None = None,
    columns: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The current rows of a table (those that pass `filters`), read without Spark."""
    options = HudiReadOptions(filters=filters or [], projection=columns)
    batches = _hudi_table(settings, table).read(options)
    if not batches:
        return []
    rows: list[dict[str, Any]] = pa.Table.from_batches(batches).to_pylist()
    return rows


def row_batches(
    settings: Settings, table: str, filters: list[Filter], columns: list[str]
) -> Iterator[pa.RecordBatch]:
    """The current rows of a table that pass `filters`, a few at a time (a file slice
    is read as it is consumed, so a whole day never sits in memory at once)."""
    options = HudiReadOptions(filters=filters, projection=columns)
    yield from _hudi_table(settings, table).read_stream(options)


def rows_since(
    settings: Settings, table: str, instant: str, columns: list[str]
) -> list[pa.RecordBatch]:
    """The rows of the files that commits from `instant` on wrote (an incremental query).

    Every row of those commits, and more: a file a commit rewrote (or clustering
    packed) also holds rows of older commits; callers keep the ones they want
    by `_hoodie_commit_time`.
    """
    before = dt.datetime.strptime(instant, _INSTANT_FORMAT) - dt.timedelta(milliseconds=1)
    options = (
        HudiReadOptions(projection=columns)
        .with_query_type(HudiQueryType.Incremental)
        .with_start_timestamp(before.strftime(_INSTANT_FORMAT)[:17])
    )
    batches: list[pa.RecordBatch] = _hudi_table(settings, table).read(options)
    return batches


@dataclass(frozen=True)
class TableStats:
    rows: int
    files: int
    bytes: int
    last_commit: dt.datetime | None


def table_stats(settings: Settings, table: str) -> TableStats:
    """Rows from the Parquet footers of the current base files (only their tails are
    read), or from the merged rows where a slice has log files."""
    hudi_table = _hudi_table(settings, table)
    pieces = hudi_table.get_file_slices()
    files = current_files(settings, table)
    if any(p.log_file_names for p in pieces):
        rows = sum(
            b.num_rows for b in hudi_table.read(HudiReadOptions(projection=["_hoodie_record_key"]))
        )
    else:
        store = Store(settings)
        rows = 0
        for path in files:
            tail = store.read(path, tail=8)
            footer = int.from_bytes(tail[:4], "little") + 8
            meta = pq.read_metadata(pa.BufferReader(b"PAR1" + store.read(path, tail=footer)))
            rows += meta.num_rows
    return TableStats(rows, len(files), sum(files.values()), last_commit(settings, table))


def partitions(settings: Settings, table: str) -> list[str]:
    """The table's partition paths that hold current files (e.g. interval=1m/period=2024-08-08)."""
    return sorted({p.partition_path for p in _hudi_table(settings, table).get_file_slices()})


def tables(settings: Settings) -> list[str]:
    """The tables Hudi has created: a .hoodie without hoodie.properties is a creation
    under way or cut short (common/hudi.clear_cut_short_creation), not yet a table."""
    lake = settings.table_path("").rstrip("/")
    return Store(settings).folders_holding(lake, ".hoodie/hoodie.properties")
