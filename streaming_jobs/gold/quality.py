"""gold_data_quality's trade counts, kept per (symbol, UTC day) between batches.

Pure Python (pandas over the Arrow rows hudi-rs reads from bronze), no Spark:
Spark took 11-21 s of a minute to count a minute's commits at 1,000 trades/s
(make bench-live, 2026-12-06). Counting a day's trades again every minute
reads the whole day from bronze, and that read grows until midnight: at
1,000 trades/s it took 25 s of the gold driver a minute (make bench-live),
beside the analytics a reader waits for. Bronze's trades are immutable (bulk-inserted,
a duplicate dropped before it is written: bronze/tables.py), so each row
appears in exactly one commit, and a day's figures are the sum of its
commits' figures, except for the ones that depend on the order of the ids:

- `IdSet`: the trade ids held, as disjoint runs of consecutive ids. Counts,
  first and last id, open gaps and missing trades come from it; a backfill
  run is a run of `IdSet` of the backfilled ids. An id met twice counts once.
- `Histogram`: ingest latency (commit completed - producer receipt) in
  buckets of three significant digits of whole milliseconds (at most 1 ms
  or 1% below the value; `latency_bucket` rounds), so the day's
  p99 comes from counts, not from every trade's latency; the maximum is
  kept exactly.

`DayCounts` holds both for one (symbol, day); `QualityCounts` holds the days
met and which of bronze's commits have been added. A day met for the first
time is counted in full from bronze, then only the commits that completed
since are added. A restart starts empty and counts each day in full again,
so nothing depends on the driver's memory surviving.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

Pair = tuple[str, dt.date]  # (symbol, UTC day)
Run = tuple[str, dt.date, bool, int, int]  # (symbol, day, backfill, lo, hi)
# (symbol, day, latency bucket, trades, late trades, max latency ms)
Bucket = tuple[str, dt.date, float | None, int, int, float | None]

# What of bronze_trades the counts read.
TRADE_COLUMNS = [
    "_hoodie_commit_time",
    "symbol",
    "date",
    "trade_id",
    "backfill",
    "recv_time",
    "trade_time",
    "recv_ns",
]
_POWERS_OF_TEN = 10.0 ** np.arange(1, 19)


def latency_bucket(ms: np.ndarray) -> np.ndarray:
    """Latencies in ms rounded toward zero to three significant digits of whole ms
    (Histogram's buckets; NaN stays NaN): digits counted against powers of ten, no
    logarithm, so 1000 has four digits however it is represented."""
    magnitude = np.abs(ms)
    digits = 1 + np.searchsorted(_POWERS_OF_TEN, np.floor(magnitude), side="right")
    width = 10.0 ** np.maximum(digits - 3, 0)
    out: np.ndarray = np.sign(ms) * np.floor(magnitude / width) * width
    return out


def trade_figures(
    trades: pa.Table, completed: Mapping[str, int], watermark_ms: int
) -> tuple[list[Run], list[Bucket]]:
    """Bronze trade rows (TRADE_COLUMNS) -> what `QualityCounts.add_runs` and
    `add_latencies` take: their runs of consecutive ids, and their latencies (the
    commit's completion in `completed` - the producer's receipt; none for a backfilled
    trade or a commit not listed) by bucket. A trade met twice counts once."""
    if trades.num_rows == 0:
        return [], []
    frame = pd.DataFrame(
        {
            "symbol": trades["symbol"].to_pandas(),
            "date": trades["date"].to_pandas(date_as_object=True),
            "trade_id": trades["trade_id"].to_pandas(),
            "backfill": trades["backfill"].to_pandas(),
            "recv_us": trades["recv_time"].cast(pa.int64()).to_pandas(),
            "trade_us": trades["trade_time"].cast(pa.int64()).to_pandas(),
            "recv_ns": trades["recv_ns"].to_pandas(),
            "commit": trades["_hoodie_commit_time"].to_pandas(),
        }
    ).drop_duplicates(["symbol", "trade_id"])
    # Whole ms of each time (as Spark's unix_millis), then their difference.
    waited = np.floor(frame["recv_us"] / 1000) - np.floor(frame["trade_us"] / 1000)
    frame["late"] = (waited > watermark_ms).astype(int)
    # In whole ns first: a receipt in ns (about 1.7e18) is not exact as a double.
    committed_ms = frame["commit"].map(completed).astype("Int64")
    lag_ns = committed_ms * 1_000_000 - frame["recv_ns"].astype("Int64")
    latency = (lag_ns / 1e6).where(~frame["backfill"]).to_numpy(float, na_value=np.nan)
    frame["latency"] = latency
    frame["bucket"] = latency_bucket(latency)
    # Runs of consecutive ids: id - its rank among its flag's ids is constant along a run.
    series = ["symbol", "date", "backfill"]
    ordered = frame.sort_values([*series, "trade_id"])
    ordered["run"] = ordered["trade_id"] - ordered.groupby(series, sort=False).cumcount()
    runs = ordered.groupby([*series, "run"], sort=False)["trade_id"].agg(["min", "max"])
    buckets = frame.groupby(["symbol", "date", "bucket"], dropna=False, sort=False).agg(
        trades=("trade_id", "size"), late=("late", "sum"), max_ms=("latency", "max")
    )
    return (
        [
            (s, d, bool(b), int(lo), int(hi))
            for (s, d, b, _), lo, hi in zip(runs.index, runs["min"], runs["max"], strict=True)
        ],
        [
            (s, d, _value(bucket), int(n), int(late), _value(max_ms))
            for (s, d, bucket), n, late, max_ms in zip(
                buckets.index, buckets["trades"], buckets["late"], buckets["max_ms"], strict=True
            )
        ],
    )


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class IdSet:
    """A set of integer ids as sorted, disjoint, non-adjacent closed runs [lo, hi]."""

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        """Add the ids lo..hi (inclusive); runs that overlap or touch it merge."""
        if hi < lo:
            raise ValueError(f"empty run {lo}..{hi}")
        # The first run that could merge: its hi reaches lo - 1.
        first = bisect.bisect_left(self._hi, lo - 1)
        last = first
        while last < len(self._lo) and self._lo[last] <= hi + 1:
            last += 1
        if first < last:
            lo = min(lo, self._lo[first])
            hi = max(hi, self._hi[last - 1])
        self._lo[first:last] = [lo]
        self._hi[first:last] = [hi]

    def runs(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    def __len__(self) -> int:
        """How many ids (not runs)."""
        return sum(hi - lo + 1 for lo, hi in zip(self._lo, self._hi, strict=True))

    @property
    def first(self) -> int | None:
        return self._lo[0] if self._lo else None

    @property
    def last(self) -> int | None:
        return self._hi[-1] if self._hi else None


@dataclass
class Histogram:
    """Counts of latencies by bucket, and the exact maximum."""

    counts: dict[float, int] = field(default_factory=dict)
    max_ms: float | None = None

    def add(self, bucket: float, count: int, max_ms: float) -> None:
        self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.max_ms = max_ms if self.max_ms is None else max(self.max_ms, max_ms)

    def percentile(self, p: float) -> float | None:
        """As Spark's `percentile` (linear between the two closest ranks) over the buckets."""
        n = sum(self.counts.values())
        if n == 0:
            return None
        rank = p * (n - 1)
        below = math.floor(rank)
        fraction = rank - below
        values = sorted(self.counts)
        seen = 0
        for i, value in enumerate(values):
            seen += self.counts[value]
            if seen > below:
                if fraction == 0 or seen > below + 1:
                    return value
                return value + fraction * (values[i + 1] - value)
        raise AssertionError("unreachable: below < n")


@dataclass
class DayCounts:
    """One (symbol, UTC day)'s trades as far as they have been added."""

    ids: IdSet = field(default_factory=IdSet)
    backfilled: IdSet = field(default_factory=IdSet)
    late_trades: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def row(self) -> dict[str, Any]:
        """gold_data_quality's trade columns (latencies in seconds)."""
        runs = self.ids.runs()
        trades = len(self.ids)
        p99 = self.latency.percentile(0.99)
        return {
            "trades": trades,
            "first_trade_id": self.ids.first,
            "last_trade_id": self.ids.last,
            "gaps_open": max(len(runs) - 1, 0),
            "missing_trades": (runs[-1][1] - runs[0][0] + 1 - trades) if runs else 0,
            "gaps_filled": len(self.backfilled.runs()),
            "backfilled_trades": len(self.backfilled),
            "late_trades": self.late_trades,
            "latency_max_s": None if self.latency.max_ms is None else self.latency.max_ms / 1000,
            "latency_p99_s": None if p99 is None else p99 / 1000,
        }


class QualityCounts:
    """The days met, and the commits of bronze's trades table added to them.

    A batch, from one listing of bronze's timeline: `new_commits` says which
    commits to add to the days `held`, `meet` which days to count in full; the
    job reads those rows and hands their runs and latencies to `add_runs` and
    `add_latencies`; `done` records the listed commits as added.
    """

    def __init__(self, keep_days: int = 2):
        self._keep_days = keep_days
        self._days: dict[Pair, DayCounts] = {}
        self._added: set[str] = set()

    def held(self) -> set[Pair]:
        return set(self._days)

    def new_commits(self, completed: Iterable[str]) -> list[str]:
        """The completed commits not yet added to the days held."""
        return sorted(set(completed) - self._added)

    def meet(self, pairs: Iterable[Pair]) -> list[Pair]:
        """Start holding `pairs`; returns those not held before (to count in full)."""
        fresh = sorted(p for p in set(pairs) if p not in self._days)
        for pair in fresh:
            self._days[pair] = DayCounts()
        return fresh

    def add_runs(self, runs: Iterable[tuple[str, dt.date, bool, int, int]]) -> None:
        """(symbol, day, backfill, lo, hi): the consecutive trade ids lo..hi were added."""
        for symbol, day, backfill, lo, hi in runs:
            counts = self._days[(symbol, day)]
            counts.ids.add(lo, hi)
            if backfill:
                counts.backfilled.add(lo, hi)

    def add_latencies(
        self, buckets: Iterable[tuple[str, dt.date, float | None, int, int, float | None]]
    ) -> None:
        """(symbol, day, latency bucket, trades, late trades, max latency ms) of added trades;
        a null bucket holds the trades without a latency (backfilled, or of an archived commit)."""
        for symbol, day, bucket, trades, late, max_ms in buckets:
            counts = self._days[(symbol, day)]
            counts.late_trades += late
            if bucket is not None and max_ms is not None:
                counts.latency.add(bucket, trades, max_ms)

    def done(self, completed: Iterable[str]) -> None:
        """Every commit in `completed` (the listing the batch used) is added to every day held;
        commits no longer listed (archived) are forgotten."""
        self._added = set(completed)

    def rows(self, pairs: Iterable[Pair]) -> dict[Pair, dict[str, Any]]:
        return {pair: self._days[pair].row() for pair in pairs if pair in self._days}

    def trim(self) -> None:
        """Forget the days older than `keep_days` before each symbol's newest; a late
        trade on one of them has its day counted in full again."""
        newest: dict[str, dt.date] = {}
        for symbol, day in self._days:
            newest[symbol] = max(newest.get(symbol, day), day)
        bound = {s: d - dt.timedelta(days=self._keep_days - 1) for s, d in newest.items()}
        for symbol, day in [p for p in self._days if p[1] < bound[p[0]]]:
            del self._days[(symbol, day)]
