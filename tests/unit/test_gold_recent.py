"""Gold's held bars (streaming_jobs/gold/recent.py) against pandas' "latest version per bar"."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from streaming_jobs.gold import analytics as A
from streaming_jobs.gold.recent import COLUMNS, RecentBars

MIN = 60_000
KEY = ("BTCUSDT", "1m")


def bar(minute: int, version: int, close: str = "1") -> tuple[object, ...]:
    price = Decimal(close)
    return (minute * MIN, minute * MIN + MIN - 1, price, price, price, price,
            Decimal(version), Decimal(0), version % 2 == 0, version)  # fmt: skip


versions = st.lists(st.tuples(st.integers(0, 30), st.integers(1, 50)), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(loaded=versions, batches=st.lists(versions, max_size=6), since=st.integers(0, 30))
def test_held_bars_are_the_newest_version_of_each_bar(
    loaded: list[tuple[int, int]], batches: list[list[tuple[int, int]]], since: int
) -> None:
    """Whatever order versions come in (a replayed batch, a snapshot ahead of the
    checkpoint), each bar held is its version with the largest updated_ms."""
    recent = RecentBars({"1m": 10_000 * MIN})  # nothing trimmed here
    recent.load(KEY, 0, [bar(m, v) for m, v in loaded])
    for batch in batches:
        recent.update(KEY, [bar(m, v) for m, v in batch])
        recent.trim()
    every = [bar(m, v) for m, v in loaded + [x for b in batches for x in b]]
    oracle = (
        pd.DataFrame(every, columns=list(COLUMNS))
        .sort_values(["open_ms", "updated_ms"])
        .drop_duplicates("open_ms", keep="last")
    )
    oracle = oracle[oracle["open_ms"] >= since * MIN].reset_index(drop=True)
    held = recent.frame(KEY, since * MIN)
    assert held.to_dict("records") == oracle.to_dict("records")


def test_trim_keeps_the_window_and_asks_for_what_it_dropped() -> None:
    recent = RecentBars({"1m": 5 * MIN})
    assert recent.needs({KEY: 0}) == {KEY: 0}  # never met: read it
    recent.load(KEY, 0, [bar(m, 1) for m in range(10)])
    assert recent.needs({KEY: 0}) == {}
    recent.update(KEY, [bar(10, 2)])
    recent.trim()
    # Newest bar opens at minute 10: minutes 5..10 are held, and known complete from 5.
    assert list(recent.frame(KEY, 5 * MIN)["open_ms"]) == [m * MIN for m in range(5, 11)]
    assert recent.needs({KEY: 5 * MIN}) == {}
    assert recent.needs({KEY: 4 * MIN}) == {KEY: 4 * MIN}  # a correction further back
    with pytest.raises(ValueError, match="held from"):
        recent.frame(KEY, 4 * MIN)
    # Read again from there (as the job does from silver): held from 2 until the next trim.
    recent.load(KEY, 2 * MIN, [bar(m, 3) for m in range(2, 11)])
    assert list(recent.frame(KEY, 2 * MIN)["updated_ms"]) == [3] * 9
    recent.trim()
    assert recent.needs({KEY: 4 * MIN}) == {KEY: 4 * MIN}


HOUR = 3_600_000
HOURLY = ("BTCUSDT", "1h")


def hourly_bar(hour: int, version: int, close: int) -> tuple[object, ...]:
    price, volume = Decimal(close) / 7, Decimal(version) / 3
    quantize = Decimal("0.00000001")
    price, volume = price.quantize(quantize), volume.quantize(quantize)
    return (hour * HOUR, hour * HOUR + HOUR - 1, price, price + 1, price - 1, price,
            volume, (volume * price).quantize(quantize), False, version)  # fmt: skip


hourly_versions = st.lists(
    st.tuples(st.integers(0, 90), st.integers(1, 50), st.integers(1, 1_000)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    loaded=hourly_versions,
    batches=st.lists(hourly_versions, min_size=1, max_size=8),
    keep_hours=st.integers(3, 60),
)
def test_summary_of_held_bars_equals_a_summary_of_them_afresh(
    loaded: list[tuple[int, int, int]], batches: list[list[tuple[int, int, int]]], keep_hours: int
) -> None:
    """The columns a series keeps up to date between batches (bars changed anywhere,
    the oldest trimmed, window sums as differences of running sums) give every
    bar the summary that market_summary gives from the held bars read afresh
    (itself checked against pandas' rolling windows in test_gold_analytics)."""
    recent = RecentBars({"1h": keep_hours * HOUR})
    silver: dict[object, tuple[object, ...]] = {}  # the newest version of each bar

    def write(bars: list[tuple[object, ...]]) -> None:
        for bar in bars:
            if bar[0] not in silver or silver[bar[0]][-1] <= bar[-1]:  # type: ignore[operator]
                silver[bar[0]] = bar

    write([hourly_bar(*b) for b in loaded])
    recent.load(HOURLY, 0, list(silver.values()))
    for batch in map(lambda b: [hourly_bar(*x) for x in b], batches):
        write(batch)
        # As the job does: a change before the held bars reads the series from there.
        lo = min(b[0] for b in batch)
        if recent.needs({HOURLY: lo}):  # type: ignore[dict-item]
            recent.load(HOURLY, lo, [b for b in silver.values() if b[0] >= lo])  # type: ignore[arg-type, operator]
        recent.update(HOURLY, batch)
        recent.trim()
        series = recent[HOURLY]
        held = recent.frame(HOURLY, series.complete_from_ms)
        columns = series.columns()
        assert columns.opens == list(held["open_ms"])
        afresh = A.market_summary(held, HOUR, 5, 0).astype(object)
        afresh = afresh.where(pd.notna(afresh), None)
        kept = [A.summary_row(columns, i, HOUR, 5) for i in range(len(columns.opens))]
        assert kept == [tuple(row) for row in afresh.itertuples(index=False)]
