"""Hudi COPY_ON_WRITE tables read from their files, without Spark.

For `make status`, the `lakehouse` CLI and the demo's report, which must
answer in a second, not after a JVM starts: a table's completed commits are
the `<requested>_<completed>.commit` files of its timeline, and its current
rows are, per file group, the newest base file a completed commit wrote
(older files are versions the cleaner has not removed yet). Works on both
storage profiles (local files, or MinIO through the S3 API). Every table of
this lake is COPY_ON_WRITE (streaming_jobs/*/tables.py); Spark's snapshot read
(`./spark-submit.sh sql`) is the reference these readers are tested against.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streaming_jobs.common.s3 import S3Client
from streaming_jobs.common.settings import Settings

# Completed instants: <requested>_<completed>.commit in Hudi 1.x timelines.
# Base files: <file id>_<write token>_<instant>.parquet.
_BASE_FILE = re.compile(r"([0-9a-f-]+-[0-9]+)_([0-9-]+)_([0-9]{17})\.parquet")
_INSTANT = re.compile(r"(?:^|/)([0-9]{17})(?:_([0-9]{17}))?\.(commit|deltacommit|replacecommit)$")
# Writes begun: <instant>.commit.requested, then <instant>.inflight (1.x names).
_PENDING = re.compile(
    r"(?:^|/)([0-9]{17})\.(?:inflight|(?:commit|deltacommit|replacecommit)\.(?:requested|inflight))$"
)


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
        """Every file under uri (path relative to it) with its size in bytes."""
        if self._s3 is None:
            root = Path(uri.removeprefix("file://"))
            if not root.exists():
                return {}
            return {
                str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()
            }
        bucket, prefix = self._split(uri)
        prefix = prefix.rstrip("/") + "/"
        return {k.removeprefix(prefix): n for k, n in self._s3.list_sizes(bucket, prefix).items()}

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


def pending_instants(settings: Settings, table: str) -> list[str]:
    """Commits of a table begun and neither completed nor rolled back: a write in flight."""
    names = Store(settings).list(f"{settings.table_path(table)}/.hoodie")
    done = {m.group(1) for n in names if (m := _INSTANT.search(n))}
    return sorted({m.group(1) for n in names if (m := _PENDING.search(n))} - done)


def completed_instants(settings: Settings, table: str) -> dict[str, int]:
    """Each completed commit of a Hudi table: its instant -> the epoch ms it completed."""
    done = {}
    for name in Store(settings).list(f"{settings.table_path(table)}/.hoodie"):
        m = _INSTANT.search(name)
        if m and m.group(2):
            stamp = dt.datetime.strptime(m.group(2), "%Y%m%d%H%M%S%f").replace(tzinfo=dt.UTC)
            done[m.group(1)] = int(stamp.timestamp() * 1000)
    return done


def last_commit(settings: Settings, table: str) -> dt.datetime | None:
    done = instants(settings, table)
    if not done:
        return None
    return dt.datetime.strptime(done[-1], "%Y%m%d%H%M%S%f").replace(tzinfo=dt.UTC)


def current_files(settings: Settings, table: str, partition: str = "") -> dict[str, int]:
    """The base files holding a COPY_ON_WRITE table's current rows: path -> bytes.

    Each file group's newest base file written by a completed commit holds
    its current rows (older files are versions the cleaner has not removed).
    """
    root = settings.table_path(table) + (f"/{partition}" if partition else "")
    done = completed_instants(settings, table)
    newest: dict[str, tuple[str, str, int]] = {}
    for name, size in Store(settings).sizes(root).items():
        m = _BASE_FILE.fullmatch(name.rsplit("/", 1)[-1])
        if m and m.group(3) in done and m.group(3) > newest.get(m.group(1), ("", "", 0))[0]:
            newest[m.group(1)] = (m.group(3), name, size)
    return {f"{root}/{name}": size for _instant, name, size in newest.values()}


def latest_rows(settings: Settings, table: str, partition: str = "") -> list[dict[str, Any]]:
    """The current rows of a COPY_ON_WRITE table (or one partition), read without Spark."""
    store = Store(settings)
    rows: list[dict[str, Any]] = []
    for path in current_files(settings, table, partition):
        # ParquetFile, not pq.read_table: the dataset API's thread pools abort
        # the interpreter at exit ("terminate called without an active
        # exception") with pyarrow 17 here, most runs.
        rows.extend(pq.ParquetFile(io.BytesIO(store.read(path))).read().to_pylist())
    return rows


@dataclass(frozen=True)
class TableStats:
    rows: int
    files: int
    bytes: int
    last_commit: dt.datetime | None


def table_stats(settings: Settings, table: str) -> TableStats:
    """Row count from the Parquet footers of the current files (only their tails are read)."""
    store = Store(settings)
    files = current_files(settings, table)
    rows = 0
    for path in files:
        tail = store.read(path, tail=8)
        footer = int.from_bytes(tail[:4], "little") + 8
        rows += pq.read_metadata(pa.BufferReader(b"PAR1" + store.read(path, tail=footer))).num_rows
    return TableStats(rows, len(files), sum(files.values()), last_commit(settings, table))


def partitions(settings: Settings, table: str) -> list[str]:
    names = Store(settings).list(settings.table_path(table))
    return sorted({n.split("/", 1)[0] for n in names if "=" in n.split("/", 1)[0]})


def tables(settings: Settings) -> list[str]:
    store = Store(settings)
    names = {
        n.split("/", 1)[0]
        for n in store.list(settings.table_path("").rstrip("/"))
        if "/.hoodie/" in n
    }
    return sorted(names)
