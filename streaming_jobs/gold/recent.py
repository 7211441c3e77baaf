"""Gold's copy of silver's recent bars: each series' last day, kept between batches.

Pure Python, no Spark. The market summary of a changed bar needs the bars
of its series over the 24 hours (and the volatility window) before it.
Reading them from silver for every batch is a scan of silver's files, a
cached frame and a Python worker round trip each 15 s, for a few changed
bars. `RecentBars` keeps, per (symbol, interval), the bars from a point
on (`Series.complete_from_ms`: every bar of the series opening at or after
it is held), and each batch's changed bars are upserted into it:

- a bar is replaced only by a version of it at least as new (silver's
  `updated_ms`): a batch replayed after a restart, or a snapshot read ahead
  of the checkpoint, never makes a bar older;
- after each batch, bars older than `keep_ms` before a series' newest are
  dropped (`trim`), and its `complete_from_ms` moves up with them;
- a change further back than the held bars reach (a backfill, a late
  correction of an old bar) is for `needs`: the job reads that series from
  silver again, from the point it asks (`load`).

A restart starts empty and reads every series it meets from silver, so
nothing is lost with the driver.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from streaming_jobs.gold.analytics import SeriesColumns

Key = tuple[str, str]  # (symbol, interval)
# The columns of a held bar, in this order.
COLUMNS = (
    "open_ms",
    "close_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "is_final",
    "updated_ms",
)
# Positions in a held bar, for readers of its tuple (the job too).
OPEN, CLOSE_MS, CLOSE, FINAL, UPDATED = (
    COLUMNS.index(c) for c in ("open_ms", "close_ms", "close", "is_final", "updated_ms")
)
# What the summary's columns take of a bar, in SeriesColumns.append's order.
_SUMMED = tuple(
    COLUMNS.index(c) for c in ("open", "high", "low", "close", "volume", "quote_volume")
)


@dataclass
class Series:
    """One series' held bars: every bar opening at or after `complete_from_ms`.

    Besides the bars by open time, their open times in order and the summary's
    columns (analytics.SeriesColumns), kept up to date from the first bar that
    changed: a batch that changes the newest bar or two redoes those, not the day.
    """

    complete_from_ms: int
    bars: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    opens: list[int] = field(default_factory=list)
    _columns: SeriesColumns = field(default_factory=SeriesColumns)
    _stale_from: int | None = None  # the index from which _columns are out of date

    def upsert(self, bar: tuple[Any, ...]) -> None:
        open_ms = bar[OPEN]
        held = self.bars.get(open_ms)
        if held is not None and held[UPDATED] > bar[UPDATED]:
            return
        self.bars[open_ms] = bar
        at = bisect.bisect_left(self.opens, open_ms)
        if held is None:
            self.opens.insert(at, open_ms)
        self._stale_from = at if self._stale_from is None else min(self._stale_from, at)

    def columns(self) -> SeriesColumns:
        """The summary's columns of every held bar, in open-time order."""
        if self._stale_from is not None:
            self._columns.truncate(self._stale_from)
            for open_ms in self.opens[self._stale_from :]:
                bar = self.bars[open_ms]
                self._columns.append(open_ms, *(bar[i] for i in _SUMMED))
            self._stale_from = None
        return self._columns

    def drop_before(self, bound: int) -> None:
        """Forget the bars opening before `bound`."""
        cut = bisect.bisect_left(self.opens, bound)
        if not cut:
            return
        self.columns().drop_first(cut)
        for open_ms in self.opens[:cut]:
            del self.bars[open_ms]
        del self.opens[:cut]


class RecentBars:
    """The last `keep_ms(interval)` of bars of every series met."""

    def __init__(self, keep_ms: Mapping[str, int]):
        self._keep_ms = dict(keep_ms)
        self._series: dict[Key, Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def __getitem__(self, key: Key) -> Series:
        return self._series[key]

    def needs(self, wanted: Mapping[Key, int]) -> dict[Key, int]:
        """Of `wanted` (series -> the first open time a batch reads), those not held from there."""
        return {
            key: lo
            for key, lo in wanted.items()
            if key not in self._series or self._series[key].complete_from_ms > lo
        }

    def load(self, key: Key, from_ms: int, bars: Iterable[tuple[Any, ...]]) -> None:
        """Every bar of a series opening at or after `from_ms`, as silver holds it."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series(from_ms)
        series.complete_from_ms = min(series.complete_from_ms, from_ms)
        for bar in sorted(bars, key=lambda b: b[OPEN]):
            series.upsert(bar)

    def update(self, key: Key, bars: Iterable[tuple[Any, ...]]) -> None:
        """A batch's changed bars of a series held (after `needs` and `load`)."""
        series = self._series[key]
        for bar in bars:
            series.upsert(bar)

    def trim(self) -> None:
        """Drop the bars older than keep_ms before their series' newest (after a batch)."""
        for (_, interval), series in self._series.items():
            if not series.opens:
                continue
            bound = series.opens[-1] - self._keep_ms[interval]
            if series.complete_from_ms < bound:
                series.drop_before(bound)
                series.complete_from_ms = bound

    def frame(self, key: Key, from_ms: int) -> pd.DataFrame:
        """The series' bars opening at or after `from_ms` (held from there), by open time."""
        series = self._series[key]
        if series.complete_from_ms > from_ms:
            raise ValueError(f"{key}: held from {series.complete_from_ms}, asked from {from_ms}")
        start = bisect.bisect_left(series.opens, from_ms)
        rows = [series.bars[t] for t in series.opens[start:]]
        return pd.DataFrame(rows, columns=list(COLUMNS))
