"""Silver's running state: each symbol's open bars, indicator state and trade sequence.

Pure Python, no Spark. A batch of new trades touches, for most symbols,
only the minute that is open and maybe the next few. Instead of reading
those minutes' trades and the stored bars around them again (what
series.update_symbol does from the table), a `SymbolState` keeps, per
interval, the bar that is open (an exact aggregate: decimal sums, first and
last trade ids) and what its indicators continue from (the state of the bar
before it and the closes the SMA window needs), and merges the batch's
per-minute aggregates of new trades into it:

- a minute's new trades merge into the open bar of every interval (sums
  add, the high and low widen, the close is the trade with the larger id);
- a later minute closes the open bars it leaves behind (their indicators
  are then final values of the series), fills the trade-less minutes in
  between with the previous close, as Binance does, and opens new bars.

Equal, row for row, to update_symbol run once over the whole series (bars,
roll-ups, indicators and their state: tests/unit/test_silver_live.py); a
batch with a trade in a minute before the open one (a backfilled gap, a
late trade) is not for this path: `update` answers None and the job takes
the general path for that symbol.

Finality comes from the exchange's own sequence, not a fixed delay. Trade
ids are gap-free per symbol and grow with time, so every minute ending
before the time of the latest trade with no gap below it is complete
(`Sequence`); while no gap is open, time without trades is complete up to
the exchange clock (the latest trade time of any symbol) minus a grace, so
trade-less minutes at the live edge are filled and final as the clock
passes them. A gap open longer than `gap_timeout_ms` on the exchange clock
is given up: its ids are counted as lost, and the bars it spans are final
but flagged incomplete.
"""

from __future__ import annotations

import decimal
import itertools
import math
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from streaming_jobs.silver import indicators as ind
from streaming_jobs.silver.series import BAR_COLUMNS

MINUTE_MS = 60_000
# Sums of decimal(38, s) values need at most 39 digits; trap anything inexact.
_EXACT = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation])
_ZERO = Decimal(0)
# A batch's noted bars by (interval, open_ms): the row, or None while the bar is open
# (made at the batch's end, SymbolState._settle).
_Noted = dict[tuple[str, int], dict[str, Any] | None]


@dataclass(frozen=True)
class Bar:
    """One bar of an interval, exact: real (from trades) or filled (a carried close)."""

    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int
    taker_buy_base: Decimal
    taker_buy_quote: Decimal
    first_trade_id: int | None
    last_trade_id: int | None
    is_filled: bool

    @staticmethod
    def filled(open_ms: int, close: Decimal) -> Bar:
        return Bar(
            open_ms, close, close, close, close, _ZERO, _ZERO, 0, _ZERO, _ZERO, None, None, True
        )

    def at(self, open_ms: int) -> Bar:
        """The same values as the bar of a longer interval starting at open_ms."""
        return replace(self, open_ms=open_ms)

    def merged(self, other: Bar) -> Bar:
        """This bar with `other`'s trades (a bar of the same bucket) added, exactly.

        Prices come from real bars only; a filled bar contributes nothing but
        its (zero) sums, and a bucket of filled bars only keeps its close.
        """
        if other.is_filled:
            return self
        if self.is_filled:
            return other.at(self.open_ms)
        with decimal.localcontext(_EXACT):
            first = self if _le(self.first_trade_id, other.first_trade_id) else other
            last = other if _le(self.last_trade_id, other.last_trade_id) else self
            return Bar(
                self.open_ms,
                first.open,
                max(self.high, other.high),
                min(self.low, other.low),
                last.close,
                self.volume + other.volume,
                self.quote_volume + other.quote_volume,
                self.trade_count + other.trade_count,
                self.taker_buy_base + other.taker_buy_base,
                self.taker_buy_quote + other.taker_buy_quote,
                _min(self.first_trade_id, other.first_trade_id),
                _max(self.last_trade_id, other.last_trade_id),
                False,
            )


def _le(a: int | None, b: int | None) -> bool:
    return a is not None and (b is None or a <= b)


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class Series:
    """One interval's series of a symbol: the open bar, and what its indicators continue from.

    `closes` holds the closes of the bars before the open one: all of them
    while the series is shorter than the warm-up, then the SMA window's
    last SMA_N - 1, with `prior` the state of the bar just before.
    """

    step: int
    current: Bar | None = None
    index: int = -1
    prior: ind.State | None = None
    closes: list[float] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        """The open bar's indicators and state (outputs and ind.STATE)."""
        assert self.current is not None
        x = float(self.current.close)
        if self.prior is not None:
            out = ind.compute([x], self.prior, self.closes[-(ind.SMA_N - 1) :])
        else:
            out = ind.compute([*self.closes, x])
        # Undefined (the warm-up) is null in the table, as from the general path, never NaN.
        values: dict[str, Any] = {
            name: None if math.isnan(column[-1]) else float(column[-1])
            for name, column in out.items()
        }
        values["bar_index"] = int(values["bar_index"])
        return values

    def advance(self, bar: Bar) -> None:
        """Close the open bar (its values are final values of the series) and open `bar`."""
        if self.current is not None:
            values = self.values()
            if self.index >= ind.WARM:
                self.prior = _state(values, float(self.current.close))
            self.closes.append(float(self.current.close))
            if self.prior is not None:
                del self.closes[: -(ind.SMA_N - 1)]
        self.current = bar
        self.index += 1


def _state(values: dict[str, Any], close: float) -> ind.State:
    return ind.State(
        bar_index=int(values["bar_index"]),
        close=close,
        ema_12=values["ema_12"],
        ema_26=values["ema_26"],
        macd_fast_ema=values["macd_fast_ema"],
        macd_signal=values["macd_signal"],
        rsi_avg_gain=values["rsi_avg_gain"],
        rsi_avg_loss=values["rsi_avg_loss"],
    )


@dataclass(frozen=True)
class Run:
    """Trade ids first..last all seen (a batch's contiguous ids), with their times."""

    first: int
    last: int
    first_ms: int
    last_ms: int


@dataclass
class Sequence:
    """A symbol's trade ids: the highest with no gap below it, and the runs seen above it."""

    contiguous: int | None = None
    contiguous_ms: int | None = None
    runs: list[Run] = field(default_factory=list)
    # Since when (exchange clock) ids have been missing above `contiguous`.
    stalled_ms: int | None = None
    lost: int = 0  # ids given up after gap_timeout
    # Time spans [from, to] of gaps given up: the bars they touch are incomplete.
    lost_spans: list[tuple[int, int]] = field(default_factory=list)

    def add(self, runs: list[Run]) -> None:
        if self.contiguous is None and runs:
            first = min(runs, key=lambda r: r.first)
            self.contiguous, self.contiguous_ms = first.first - 1, first.first_ms
        self.runs = sorted([*self.runs, *runs], key=lambda r: r.first)
        self._close_up()

    def _close_up(self) -> None:
        assert self.contiguous is not None
        while self.runs and self.runs[0].first <= self.contiguous + 1:
            run = self.runs.pop(0)
            if run.last > self.contiguous:
                self.contiguous, self.contiguous_ms = run.last, run.last_ms
        if not self.runs:
            self.stalled_ms = None

    def gap_open(self) -> bool:
        return bool(self.runs)

    def covers(self, run: Run) -> bool:
        """Whether every id of `run` has been seen."""
        if self.contiguous is not None and run.last <= self.contiguous:
            return True
        return any(r.first <= run.first and run.last <= r.last for r in self.runs)

    def repeats(self, runs: list[Run]) -> bool:
        """Whether some id of a batch's runs was seen before, or comes twice in them."""
        ordered = sorted(runs, key=lambda r: r.first)
        for before, after in itertools.pairwise(ordered):
            if after.first <= before.last:
                return True
        for run in ordered:
            if self.contiguous is not None and run.first <= self.contiguous:
                return True
            if any(run.first <= r.last and r.first <= run.last for r in self.runs):
                return True
        return False

    def expire(self, clock_ms: int, timeout_ms: int) -> int:
        """Give up the lowest gap once ids have been missing for timeout_ms; ids lost now."""
        if not self.runs:
            return 0
        assert self.contiguous is not None and self.contiguous_ms is not None
        if self.stalled_ms is None:
            self.stalled_ms = clock_ms
        if clock_ms - self.stalled_ms <= timeout_ms:
            return 0
        run = self.runs[0]
        lost = run.first - self.contiguous - 1
        self.lost += lost
        self.lost_spans.append((self.contiguous_ms, run.first_ms))
        self.contiguous, self.contiguous_ms = run.first - 1, run.first_ms
        self.stalled_ms = None
        self._close_up()
        return lost + self.expire(clock_ms, timeout_ms)

    def horizon(self, clock_ms: int | None, grace_ms: int) -> int | None:
        """Bars ending before this (epoch ms) are complete."""
        if self.contiguous_ms is None:
            return None
        if self.runs or clock_ms is None:
            return self.contiguous_ms
        return max(self.contiguous_ms, clock_ms - grace_ms)


@dataclass
class SymbolState:
    """Everything the live path keeps of one symbol."""

    symbol: str
    series: dict[str, Series]
    sequence: Sequence = field(default_factory=Sequence)
    # Rows written and not final yet, per (interval, open_ms): rewritten when they ripen.
    pending: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    # Rows written final whose bar is still its interval's open one: the clock made it
    # final at a quiet symbol's live edge, and the minute that closes it notes it again.
    written_final: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def new(symbol: str, intervals: list[tuple[str, int]]) -> SymbolState:
        return SymbolState(symbol, {name: Series(ms) for name, ms in intervals})

    def update(
        self,
        minutes: list[Bar],
        runs: list[Run],
        clock_ms: int | None,
        grace_ms: int,
        gap_timeout_ms: int,
    ) -> list[dict[str, Any]] | None:
        """The rows a batch's new trades (per-minute aggregates, id runs) make; None when a
        minute lies before the open 1m bar (the general path's case: nothing is changed)."""
        m1 = self.series["1m"]
        minutes = sorted(minutes, key=lambda b: b.open_ms)
        if minutes and m1.current is not None and minutes[0].open_ms < m1.current.open_ms:
            return None
        changed: _Noted = {}
        for minute in minutes:
            self._take(minute, changed)
        self.sequence.add(runs)
        if clock_ms is not None:
            self.sequence.expire(clock_ms, gap_timeout_ms)
        horizon = self.sequence.horizon(clock_ms, grace_ms)
        if horizon is not None and m1.current is not None:
            # Trade-less minutes the clock has passed: filled, and final.
            edge = m1.current.open_ms + MINUTE_MS
            while edge + MINUTE_MS - 1 < horizon:
                self._take(Bar.filled(edge, m1.current.close), changed)
                edge += MINUTE_MS
        return self._finish(self._settle(changed), horizon)

    def _take(self, minute: Bar, changed: _Noted) -> None:
        """One minute's bar (new trades of a minute, or a filled minute) into every series."""
        m1 = self.series["1m"]
        if m1.current is not None and minute.open_ms == m1.current.open_ms:
            for name, series in self.series.items():
                assert series.current is not None
                series.current = series.current.merged(minute)
                self._note(name, series, changed)
            return
        if m1.current is not None:
            # Trade-less minutes between the open one and this one carry its close.
            close = m1.current.close
            for gap in range(m1.current.open_ms + MINUTE_MS, minute.open_ms, MINUTE_MS):
                self._open(Bar.filled(gap, close), changed)
        self._open(minute, changed)

    def _open(self, minute: Bar, changed: _Noted) -> None:
        """A minute after the open 1m bar: it opens a bar, or joins its interval's open one."""
        for name, series in self.series.items():
            start = minute.open_ms - minute.open_ms % series.step
            if series.current is not None and series.current.open_ms == start:
                series.current = series.current.merged(minute)
            else:
                if series.current is not None:
                    self._note(name, series, changed, closing=True)  # its final values
                series.advance(minute.at(start))
            self._note(name, series, changed)

    def _note(
        self,
        name: str,
        series: Series,
        changed: _Noted,
        closing: bool = False,
    ) -> None:
        """The series' open bar changed. Its row is made when it closes, or at the batch's
        end (_settle): a backfill notes a day's bar once a minute, 1,440 times, and its
        indicators are one row's work."""
        assert series.current is not None
        changed[(name, series.current.open_ms)] = self._row(name, series) if closing else None

    def _row(self, name: str, series: Series) -> dict[str, Any]:
        assert series.current is not None
        bar = series.current
        return {
            "symbol": self.symbol,
            **{f: getattr(bar, f) for f in _BAR_FIELDS},
            "interval": name,
            **series.values(),
        }

    def _settle(self, changed: _Noted) -> dict[tuple[str, int], dict[str, Any]]:
        """Every noted bar's row: an open bar's as it stands (a bar that closed since it
        was noted was noted again as it closed, under the same key)."""
        out = {}
        for (name, open_ms), row in changed.items():
            if row is None:
                series = self.series[name]
                assert series.current is not None and series.current.open_ms == open_ms
                row = self._row(name, series)
            out[(name, open_ms)] = row
        return out

    def _finish(
        self, changed: dict[tuple[str, int], dict[str, Any]], horizon: int | None
    ) -> list[dict[str, Any]]:
        steps = {name: s.step for name, s in self.series.items()}
        self.pending.update(changed)
        out = []
        for key, row in list(self.pending.items()):
            final = horizon is not None and row["open_ms"] + steps[key[0]] - 1 < horizon
            if final and self.written_final.get(key) == row:
                # Final and written as it is: the minute that closed it noted it again.
                del self.pending[key]
                continue
            if key in changed or final:
                out.append({**row, "is_final": final})
            if final:
                del self.pending[key]
                self.written_final[key] = row
        self.written_final = {
            key: row
            for key, row in self.written_final.items()
            if (current := self.series[key[0]].current) is not None and key[1] >= current.open_ms
        }
        return out


_BAR_FIELDS = BAR_COLUMNS[1:]  # symbol apart
