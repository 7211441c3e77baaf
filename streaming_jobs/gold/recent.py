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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

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
_OPEN, _UPDATED = COLUMNS.index("open_ms"), COLUMNS.index("updated_ms")


@dataclass
class Series:
    """One series' held bars: every bar opening at or after `complete_from_ms`."""

    complete_from_ms: int
    bars: dict[int, tuple[Any, ...]] = field(default_factory=dict)

    def upsert(self, bar: tuple[Any, ...]) -> None:
        held = self.bars.get(bar[_OPEN])
        if held is None or held[_UPDATED] <= bar[_UPDATED]:
            self.bars[bar[_OPEN]] = bar


class RecentBars:
    """The last `keep_ms(interval)` of bars of every series met."""

    def __init__(self, keep_ms: Mapping[str, int]):
        self._keep_ms = dict(keep_ms)
        self._series: dict[Key, Series] = {}

    def __len__(self) -> int:
        return len(self._series)

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
        for bar in bars:
            series.upsert(bar)

    def update(self, key: Key, bars: Iterable[tuple[Any, ...]]) -> None:
        """A batch's changed bars of a series held (after `needs` and `load`)."""
        series = self._series[key]
        for bar in bars:
            series.upsert(bar)

    def trim(self) -> None:
        """Drop the bars older than keep_ms before their series' newest (after a batch)."""
        for (_, interval), series in self._series.items():
            if not series.bars:
                continue
            bound = max(series.bars) - self._keep_ms[interval]
            if series.complete_from_ms < bound:
                for open_ms in [t for t in series.bars if t < bound]:
                    del series.bars[open_ms]
                series.complete_from_ms = bound

    def frame(self, key: Key, from_ms: int) -> pd.DataFrame:
        """The series' bars opening at or after `from_ms` (held from there), by open time."""
        series = self._series[key]
        if series.complete_from_ms > from_ms:
            raise ValueError(f"{key}: held from {series.complete_from_ms}, asked from {from_ms}")
        rows = [series.bars[t] for t in sorted(series.bars) if t >= from_ms]
        return pd.DataFrame(rows, columns=list(COLUMNS))
