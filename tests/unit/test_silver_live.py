"""Silver's live path (silver/live.py) against the one-pass series (silver/series.py).

The real XRPETH aggTrades of 2019-10-11..13 (tests/fixtures/xrpeth/, 12,477
aggTrades, 1,091 trade-less minutes in their span) cut into batches at
arbitrary trades, a minute's trades often split over two batches: every row
the live path writes, the last version of each key, equals what
series.update_symbol computes in one pass over the whole series (bars of
six intervals, fills, roll-ups, indicators and their state; that pass is
tested against Binance's candles and TA-Lib). Then finality from the
exchange's sequence: gaps, the clock at the live edge, a gap given up.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import random
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from streaming_jobs.common.settings import INTERVAL_MS, PROJECT_ROOT
from streaming_jobs.silver import series
from streaming_jobs.silver.live import MINUTE_MS, Bar, Run, Sequence, SymbolState

AGG_TRADES = (
    PROJECT_ROOT
    / "tests"
    / "fixtures"
    / "xrpeth"
    / "XRPETH-aggTrades-2019-10-11T000011_2019-10-13T111928.csv.gz"
)
INTERVALS = [(i, INTERVAL_MS[i]) for i in ("1m", "5m", "15m", "1h", "4h", "1d")]
Trade = tuple[int, Decimal, Decimal, int, int, int, bool]  # a, p, q, f, l, T, m


@pytest.fixture(scope="module")
def trades() -> list[Trade]:
    with gzip.open(AGG_TRADES, "rt") as f:
        return [
            (int(a), Decimal(p), Decimal(q), int(fi), int(la), int(t), m == "True")
            for a, p, q, fi, la, t, m, _ in csv.reader(f)
        ]


def minute_aggregates(batch: list[Trade]) -> list[Bar]:
    """A batch's trades as one exact bar per minute (what silver's Spark job hands over)."""
    by_minute: dict[int, list[Trade]] = {}
    for trade in batch:
        by_minute.setdefault(trade[5] - trade[5] % MINUTE_MS, []).append(trade)
    out = []
    for start, group in sorted(by_minute.items()):
        group.sort(key=lambda t: t[3])
        taker = [t for t in group if not t[6]]
        out.append(
            Bar(
                start,
                group[0][1],
                max(t[1] for t in group),
                min(t[1] for t in group),
                group[-1][1],
                sum((t[2] for t in group), Decimal(0)),
                sum((t[1] * t[2] for t in group), Decimal(0)),
                sum(t[4] - t[3] + 1 for t in group),
                sum((t[2] for t in taker), Decimal(0)),
                sum((t[1] * t[2] for t in taker), Decimal(0)),
                group[0][3],
                group[-1][4],
                False,
            )
        )
    return out


def id_runs(batch: list[Trade]) -> list[Run]:
    runs: list[Run] = []
    for t in sorted(batch, key=lambda t: t[3]):
        if runs and runs[-1].last + 1 == t[3]:
            runs[-1] = Run(runs[-1].first, t[4], runs[-1].first_ms, t[5])
        else:
            runs.append(Run(t[3], t[4], t[5], t[5]))
    return runs


def live_table(state: SymbolState, batches: list[list[Trade]], clock: Any = None) -> pd.DataFrame:
    """The last row of each key; no key is written final twice (nothing comes late here)."""
    table: dict[tuple[str, int], dict[str, Any]] = {}
    finals: set[tuple[str, int]] = set()
    for batch in batches:
        now = clock(batch) if clock else None
        rows = state.update(minute_aggregates(batch), id_runs(batch), now, 2_000, 600_000)
        assert rows is not None
        for row in rows:
            key = (row["interval"], row["open_ms"])
            assert key not in finals, f"{key} written again after it was final"
            table[key] = row
            if row["is_final"]:
                finals.add(key)
    frame = pd.DataFrame(list(table.values()))
    return frame.sort_values(["interval", "open_ms"], ignore_index=True)


def one_pass(trades: list[Trade]) -> pd.DataFrame:
    real = pd.DataFrame([vars_of(b) for b in minute_aggregates(trades)])
    rows = series.update_symbol(
        real, pd.DataFrame(columns=list(series.ROW_COLUMNS)), INTERVALS, None
    )
    return rows.sort_values(["interval", "open_ms"], ignore_index=True)


def vars_of(bar: Bar) -> dict[str, Any]:
    return {"symbol": "XRPETH", **{f: getattr(bar, f) for f in series.BAR_COLUMNS[1:]}}


def comparable(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    columns = [c for c in series.ROW_COLUMNS if c != "is_final"]
    out = []
    for row in frame[columns].itertuples(index=False):
        out.append(
            tuple(None if (isinstance(v, float) and v != v) or v is pd.NA else v for v in row)
        )
    return out


def cuts(count: int, batches: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return sorted(rng.sample(range(1, count), batches - 1))


@pytest.mark.parametrize(
    "batches,seed,clocked", [(1, 0, False), (40, 1, False), (700, 2, False), (700, 3, True)]
)
def test_batches_of_trades_give_the_one_pass_series(
    trades: list[Trade], batches: int, seed: int, clocked: bool
) -> None:
    """`clocked`: the exchange clock (other symbols' trades) is just short of the symbol's
    next trade at each batch, so quiet minutes are final, and filled, before it comes."""
    bounds = [0, *cuts(len(trades), batches, seed), len(trades)]
    split = [trades[a:b] for a, b in itertools.pairwise(bounds)]
    ahead = {id(batch): after[0][5] - 1 for batch, after in itertools.pairwise(split)}
    state = SymbolState.new("XRPETH", INTERVALS)
    live = live_table(state, split, (lambda batch: ahead.get(id(batch))) if clocked else None)
    expected = one_pass(trades)
    assert len(live) == len(expected)
    assert comparable(live) == comparable(expected)
    assert (live["is_filled"] & (live["interval"] == "1m")).sum() == 1091


def test_finality_follows_the_sequence_then_the_clock(trades: list[Trade]) -> None:
    state = SymbolState.new("XRPETH", INTERVALS)
    head = trades[:200]
    rows = state.update(minute_aggregates(head), id_runs(head), None, 2_000, 600_000)
    assert rows is not None
    last_ms = head[-1][5]
    one_minute = {r["open_ms"]: r["is_final"] for r in rows if r["interval"] == "1m"}
    # Every minute that ended before the last trade is final; the last trade's is open.
    assert one_minute == {m: m + MINUTE_MS - 1 < last_ms for m in one_minute}
    assert not one_minute[last_ms - last_ms % MINUTE_MS]
    # The exchange clock passes three more minutes: filled, final, at the live edge.
    clock = last_ms - last_ms % MINUTE_MS + 4 * MINUTE_MS + 2_000
    rows = state.update([], [], clock, 2_000, 600_000)
    assert rows is not None
    edge = sorted(
        (r["open_ms"], r["is_filled"], r["is_final"]) for r in rows if r["interval"] == "1m"
    )
    start = last_ms - last_ms % MINUTE_MS
    assert edge == [
        (start, False, True),
        (start + MINUTE_MS, True, True),
        (start + 2 * MINUTE_MS, True, True),
        (start + 3 * MINUTE_MS, True, True),
    ]
    assert {r["close"] for r in rows if r["is_filled"]} == {head[-1][1]}


def test_an_open_gap_holds_finality_until_its_timeout() -> None:
    sequence = Sequence()
    sequence.add([Run(1, 10, 1_000, 10_000)])
    assert sequence.horizon(50_000, 2_000) == 48_000  # no gap: the clock
    sequence.add([Run(15, 20, 75_000, 80_000)])  # 11..14 missing
    assert sequence.gap_open()
    assert sequence.expire(80_000, 60_000) == 0
    assert sequence.horizon(90_000, 2_000) == 10_000  # held at the last trade below the gap
    sequence.add([Run(11, 12, 71_000, 72_000)])  # part of it arrives
    assert sequence.horizon(90_000, 2_000) == 72_000
    assert sequence.expire(130_000, 60_000) == 0  # ids missing since 80 s: 50 s
    assert sequence.expire(141_000, 60_000) == 2  # 13..14 given up: counted as lost
    assert (sequence.contiguous, sequence.lost, sequence.lost_spans) == (20, 2, [(72_000, 75_000)])
    assert sequence.horizon(141_000, 2_000) == 139_000


def test_a_minute_before_the_open_one_is_left_to_the_general_path(trades: list[Trade]) -> None:
    state = SymbolState.new("XRPETH", INTERVALS)
    assert state.update(minute_aggregates(trades[100:200]), id_runs(trades[100:200]), None, 0, 1)
    before = (state.series["1m"].current, state.series["1d"].index)
    assert state.update(minute_aggregates(trades[:10]), id_runs(trades[:10]), None, 0, 1) is None
    assert (state.series["1m"].current, state.series["1d"].index) == before


def test_a_bar_final_by_the_clock_is_written_once(trades: list[Trade]) -> None:
    """A quiet symbol's minute, final once the clock passes it, is not written again when
    the symbol's next trade closes it (a rewrite would make it look final only then)."""
    head = trades[:200]
    last_ms = head[-1][5]
    start = last_ms - last_ms % MINUTE_MS
    # The rest of that minute's trades, then the symbol's next ones, in later minutes.
    nxt = [t for t in trades[200:] if t[5] < start + MINUTE_MS]
    later = [t for t in trades[200:] if t[5] >= start + MINUTE_MS]
    state = SymbolState.new("XRPETH", INTERVALS)
    assert state.update(minute_aggregates(head + nxt), id_runs(head + nxt), None, 2_000, 600_000)
    ticked = state.update([], [], start + MINUTE_MS + 3_000, 2_000, 600_000)
    assert ticked is not None
    assert [(r["open_ms"], r["is_final"]) for r in ticked if r["interval"] == "1m"] == [
        (start, True)
    ]
    closed = state.update(
        minute_aggregates(later[:1]), id_runs(later[:1]), later[0][5], 2_000, 600_000
    )
    assert closed is not None
    assert start not in {r["open_ms"] for r in closed if r["interval"] == "1m"}
    assert [r["open_ms"] for r in closed if r["interval"] == "1m"] == [
        later[0][5] - later[0][5] % MINUTE_MS
    ]
