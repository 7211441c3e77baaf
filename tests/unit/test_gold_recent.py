"""Gold's held bars (streaming_jobs/gold/recent.py) against pandas' "latest version per bar"."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

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
