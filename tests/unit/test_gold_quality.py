"""gold_data_quality's kept counts (streaming_jobs/gold/quality.py) against plain recounts:
Python sets, numpy's percentile, and the day's figures computed from every trade at once
the way a full count does (pandas, ids in order, each id against the one before)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from streaming_jobs.gold.quality import (
    Histogram,
    IdSet,
    QualityCounts,
    latency_bucket,
    trade_figures,
)

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


def bucket_by_text(ms: float) -> float:
    """Toward zero to three significant digits of whole ms, on the integer's text."""
    text = str(int(abs(ms)))
    kept = int(text[:3]) * 10 ** max(len(text) - 3, 0)
    return math.copysign(float(kept), ms) if ms else 0.0


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.floats(-1e9, 1e12, allow_nan=False),
        st.integers(0, 12).map(lambda n: float(10**n)),  # 1000 has four digits
        st.integers(0, 12).map(lambda n: float(10**n) - 0.5),
    )
)
def test_latency_bucket_keeps_three_significant_digits_of_whole_ms(ms: float) -> None:
    assert latency_bucket(np.array([ms]))[0] == bucket_by_text(ms)


def test_latency_bucket_keeps_nan() -> None:
    assert np.isnan(latency_bucket(np.array([np.nan]))[0])


DAYS = (DAY, DAY + dt.timedelta(days=1))
bronze_trade = st.tuples(
    st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    st.sampled_from(DAYS),
    st.integers(0, 90),  # trade id
    st.booleans(),  # backfill
    st.integers(0, 3),  # the commit that holds it (3: not listed, so no latency)
    st.integers(0, 12_000_000),  # receipt after the trade, us (watermark 5 s)
    # Commit after receipt, ns; whole ms, the precision of a double near 1.7e12 ms
    # being 0.24 us (Spark's formula computes in doubles the same way).
    st.integers(1, 3_000).map(lambda ms: ms * 1_000_000),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(bronze_trade, min_size=1, max_size=60), st.integers(0, 3))
def test_trade_figures_of_bronze_rows_count_what_a_recount_gives(
    rows: list[tuple[str, dt.date, int, bool, int, int, int]], repeated: int
) -> None:
    """Rows as hudi-rs gives them (Arrow: timestamps in us, the commit's instant), one
    trade repeated (a file read twice), through trade_figures into QualityCounts: each
    day's figures equal a recount of its distinct trades with latency, lateness and
    bucket computed here from the same numbers another way."""
    watermark_ms = 5_000
    distinct = {(s, t): row for row in rows for s, _, t, *_ in [row]}
    trades = list(distinct.values())
    trades += trades[:1] * repeated
    completed = {f"2024080800000000{c}": 1_723_075_200_000 + 60_000 * c for c in range(3)}
    commits = [f"2024080800000000{c}" for c in range(4)]
    epoch_us = {d: int(dt.datetime.combine(d, dt.time(), dt.UTC).timestamp() * 1e6) for d in DAYS}
    table = pa.table(
        {
            "_hoodie_commit_time": [commits[r[4]] for r in trades],
            "symbol": [r[0] for r in trades],
            "date": pa.array([r[1] for r in trades], pa.date32()),
            "trade_id": pa.array([r[2] for r in trades], pa.int64()),
            "backfill": [r[3] for r in trades],
            "recv_time": pa.array(
                [epoch_us[r[1]] + 1_000 + r[5] for r in trades], pa.timestamp("us", "UTC")
            ),
            "trade_time": pa.array(
                [epoch_us[r[1]] + 1_000 for r in trades], pa.timestamp("us", "UTC")
            ),
            "recv_ns": pa.array(
                [completed.get(commits[r[4]], 0) * 1_000_000 - r[6] for r in trades], pa.int64()
            ),
        }
    )
    counts = QualityCounts()
    pairs = sorted({(s, d) for s, d, *_ in distinct.values()})
    counts.meet(pairs)
    runs, buckets = trade_figures(table, completed, watermark_ms)
    counts.add_runs(runs)
    counts.add_latencies(buckets)
    for pair in pairs:
        day = pd.DataFrame(
            [r for r in distinct.values() if (r[0], r[1]) == pair],
            columns=["symbol", "date", "trade_id", "backfill", "commit", "waited_us", "lag_ns"],
        )
        day["late"] = day["waited_us"] // 1000 > watermark_ms  # both times whole ms apart
        listed = day["commit"] < 3
        day["latency"] = (day["lag_ns"] / 1e6).where(listed)  # completion - receipt
        day["bucket"] = [bucket_by_text(x) if x == x else np.nan for x in day["latency"]]
        want = recount(day.assign(backfill=day["backfill"] | ~listed))
        want["backfilled_trades"] = int(day["backfill"].sum())
        want["gaps_filled"] = recount(day)["gaps_filled"]
        got = counts.rows([pair])[pair]
        for key in ("latency_max_s", "latency_p99_s"):
            g, w = got.pop(key), want.pop(key)
            assert (g is None) == (w is None)
            assert g is None or g == pytest.approx(w, abs=1e-9)
        assert got == want
