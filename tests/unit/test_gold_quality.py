"""gold_data_quality's kept counts (streaming_jobs/gold/quality.py) against plain recounts:
Python sets, numpy's percentile, and the day's figures computed from every trade at once
the way a full count does (pandas, ids in order, each id against the one before)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from streaming_jobs.gold.quality import Histogram, IdSet, QualityCounts

DAY = dt.date(2024, 8, 8)


def consecutive_runs(ids: set[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 6)), max_size=30))
def test_id_set_is_the_set_of_ids_added(spans: list[tuple[int, int]]) -> None:
    ids, oracle = IdSet(), set()
    for lo, length in spans:
        ids.add(lo, lo + length)
        oracle |= set(range(lo, lo + length + 1))
    assert ids.runs() == consecutive_runs(oracle)
    assert len(ids) == len(oracle)
    assert (ids.first, ids.last) == ((min(oracle), max(oracle)) if oracle else (None, None))


def test_id_set_refuses_an_empty_run() -> None:
    with pytest.raises(ValueError, match="empty run"):
        IdSet().add(5, 4)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(-5, 400).map(float), st.integers(1, 40), min_size=1, max_size=25),
    st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
)
def test_histogram_percentile_is_numpy_linear_over_the_counted_values(
    counts: dict[float, int], p: float
) -> None:
    histogram = Histogram()
    for value, n in counts.items():
        histogram.add(value, n, value)
    expanded = np.repeat(list(counts), list(counts.values()))
    assert histogram.percentile(p) == pytest.approx(np.percentile(expanded, p * 100), abs=1e-9)
    assert histogram.max_ms == max(counts)
    assert Histogram().percentile(0.99) is None


def recount(trades: pd.DataFrame) -> dict[str, Any]:
    """A day's figures from all its trades at once (the full count's rules)."""
    t = trades.sort_values("trade_id")
    step = t["trade_id"].diff()
    previous_backfill = t["backfill"].shift(1, fill_value=False).astype(bool)
    backfill_run = t["backfill"] & (~previous_backfill | (step > 1))
    missing = (step - 1).where(step > 1)
    latency = t.loc[~t["backfill"], "bucket"]
    return {
        "trades": len(t),
        "first_trade_id": int(t["trade_id"].min()),
        "last_trade_id": int(t["trade_id"].max()),
        "gaps_open": int(missing.count()),
        "missing_trades": int(missing.sum()),
        "gaps_filled": int(backfill_run.sum()),
        "backfilled_trades": int(t["backfill"].sum()),
        "late_trades": int(t["late"].sum()),
        "latency_max_s": t.loc[~t["backfill"], "latency"].max() / 1000 if len(latency) else None,
        "latency_p99_s": np.percentile(latency, 99) / 1000 if len(latency) else None,
    }


def runs_of(trades: pd.DataFrame) -> list[tuple[str, dt.date, bool, int, int]]:
    """What the job hands over for a batch's rows: runs of consecutive ids per flag."""
    out = []
    for backfill, group in trades.groupby("backfill"):
        for lo, hi in consecutive_runs(set(group["trade_id"])):
            out.append(("BTCUSDT", DAY, bool(backfill), lo, hi))
    return out


def buckets_of(trades: pd.DataFrame) -> list[tuple[Any, ...]]:
    out = []
    bucket = trades["bucket"].where(~trades["backfill"])
    for value, group in trades.assign(b=bucket).groupby("b", dropna=False):
        live = group.loc[~group["backfill"], "latency"]
        out.append(
            (
                "BTCUSDT",
                DAY,
                None if pd.isna(value) else float(value),
                len(group),
                int(group["late"].sum()),
                float(live.max()) if len(live) else None,
            )
        )
    return out


trade = st.tuples(
    st.integers(0, 120),  # trade id
    st.booleans(),  # backfill
    st.booleans(),  # late
    st.integers(0, 50),  # latency bucket (its max one above it)
    st.integers(0, 4),  # the commit that holds it
)


@settings(max_examples=200, deadline=None)
@given(st.lists(trade, min_size=1, max_size=80, unique_by=lambda t: t[0]))
def test_a_day_added_commit_by_commit_counts_what_a_full_count_gives(
    rows: list[tuple[int, bool, bool, int, int]],
) -> None:
    """Bronze's trades are immutable: each id is in one commit. Adding the commits in
    any number of batches gives the figures of counting the whole day at once."""
    trades = pd.DataFrame(rows, columns=["trade_id", "backfill", "late", "bucket", "commit"])
    trades["latency"] = trades["bucket"] + 0.5
    counts = QualityCounts()
    assert counts.meet([("BTCUSDT", DAY)]) == [("BTCUSDT", DAY)]
    assert counts.meet([("BTCUSDT", DAY)]) == []
    for commit in sorted(trades["commit"].unique()):
        batch = trades[trades["commit"] == commit]
        counts.add_runs(runs_of(batch))
        counts.add_latencies(buckets_of(batch))
        counts.done([f"c{c}" for c in range(commit + 1)])
    assert counts.new_commits(["c0", "c9"]) == ["c9"]
    got = counts.rows([("BTCUSDT", DAY)])[("BTCUSDT", DAY)]
    want = recount(trades)
    for key in ("latency_max_s", "latency_p99_s"):
        g, w = got.pop(key), want.pop(key)
        assert (g is None) == (w is None)
        assert g is None or g == pytest.approx(w)
    assert got == want


def test_days_older_than_kept_are_forgotten_and_met_again_in_full() -> None:
    counts = QualityCounts(keep_days=2)
    days = [DAY + dt.timedelta(days=d) for d in range(3)]
    assert counts.meet([("BTCUSDT", d) for d in days[:2]] + [("ETHUSDT", days[0])]) == [
        ("BTCUSDT", days[0]),
        ("BTCUSDT", days[1]),
        ("ETHUSDT", days[0]),
    ]
    counts.meet([("BTCUSDT", days[2])])
    counts.trim()
    assert counts.held() == {("BTCUSDT", days[1]), ("BTCUSDT", days[2]), ("ETHUSDT", days[0])}
    assert counts.meet([("BTCUSDT", days[0])]) == [("BTCUSDT", days[0])]
