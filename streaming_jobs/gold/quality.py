"""gold_data_quality's trade counts, kept per (symbol, UTC day) between batches.

Pure Python, no Spark. Counting a day's trades again every minute reads the
whole day from bronze, and that read grows until midnight: at 1,000 trades/s
it took 25 s of the gold driver a minute (make bench-live), beside the
analytics a reader waits for. Bronze's trades are immutable (bulk-inserted,
a duplicate dropped before it is written: bronze/tables.py), so each row
appears in exactly one commit, and a day's figures are the sum of its
commits' figures, except for the ones that depend on the order of the ids:

- `IdSet`: the trade ids held, as disjoint runs of consecutive ids. Counts,
  first and last id, open gaps and missing trades come from it; a backfill
  run is a run of `IdSet` of the backfilled ids. An id met twice counts once.
- `Histogram`: ingest latency (commit completed - producer receipt) in
  buckets of three significant digits of whole milliseconds (at most 1 ms
  or 1% below the value; the job's `latency_bucket` rounds), so the day's
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Pair = tuple[str, dt.date]  # (symbol, UTC day)


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
