"""A whole spot market of real shape for the replay exchange: N symbols, trades and 1m klines.

Binance spot lists about 2,000 symbols; all of them together trade about
1,000 times a second on a daily average, and each symbol's `kline_1m` stream
pushes every 2 s. There is no recording of that (nor could one be shipped), so
this module builds one from real frames, the way the benchmarks may
(synthetic load of real frames' shape):

- trades are the real BTCUSDT and ETHUSDT trades of the shipped capture, in
  their recorded order, with their exact price, quantity and maker strings;
  each synthetic symbol walks through one of the two real series from its own
  starting point, so its prices move as a real market's did;
- how often a symbol trades follows Zipf's law over the symbols (the most
  active symbol has about 1/H(N) of all trades, ~12 % for 2,000; the least
  active a trade every few seconds), as on the exchange; arrivals in
  aggregate are the real capture's inter-arrival gaps scaled to the rate;
- every symbol's kline pushes every 2 s (phases spread over the 2 s), each
  the bar of its minute so far computed from the symbol's own trades in
  decimals, laid out like a recorded push (all nine fields, Binance's
  8-decimal strings); the first push of a minute closes the previous one
  (`x` true); a minute without trades repeats the previous close with zero
  volume, as Binance does.

Ids are contiguous per symbol and the timeline spans just under a whole
number of minutes, so the replay exchange's loops (producer/replay/captures.py)
continue it seamlessly. The file is in the hftbacktest layout the replay
reads: `<receive ns> <combined-stream JSON>` per line, gzipped.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from producer.replay.captures import NS_PER_MS, merge_captures

MINUTE_MS = 60_000
KLINE_EVERY_MS = 2_000
EIGHT = Decimal("0.00000001")
SOURCES = ("BTCUSDT", "ETHUSDT")


@dataclass(frozen=True)
class RealTrade:
    price: str
    qty: str
    maker: bool
    gap_ns: int  # to the next trade of the whole recording


def real_trades(captures: list[Path]) -> dict[str, list[RealTrade]]:
    """The captures' trades per source symbol, with the recording's gaps between trades."""
    frames = [f for f in merge_captures(captures).frames if f.stream.endswith("@trade")]
    out: dict[str, list[RealTrade]] = {s: [] for s in SOURCES}
    for frame, after in zip(frames, [*frames[1:], frames[0]], strict=True):
        data = json.loads(frame.raw)["data"]
        gap = max(0, after.recv_ns - frame.recv_ns)
        if data["s"] in out:
            out[data["s"]].append(RealTrade(data["p"], data["q"], data["m"], gap))
    return out


def symbol_names(count: int) -> list[str]:
    """Upper-case letters and digits, bounded length, as the settings require."""
    return [f"M{i:04d}USDT" for i in range(count)]


@dataclass
class _Bar:
    """One symbol's current minute, in decimals."""

    open_ms: int
    first_id: int = -1
    last_id: int = -1
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    close: Decimal | None = None
    volume: Decimal = field(default_factory=Decimal)
    quote: Decimal = field(default_factory=Decimal)
    count: int = 0
    taker_base: Decimal = field(default_factory=Decimal)
    taker_quote: Decimal = field(default_factory=Decimal)

    def add(self, trade_id: int, price: Decimal, qty: Decimal, maker: bool) -> None:
        if self.open is None:
            self.open = self.high = self.low = price
            self.first_id = trade_id
        assert self.high is not None and self.low is not None
        self.high, self.low, self.close = max(self.high, price), min(self.low, price), price
        self.last_id = trade_id
        self.volume += qty
        self.quote += price * qty
        self.count += 1
        if not maker:  # the buyer took liquidity
            self.taker_base += qty
            self.taker_quote += price * qty


def _s(value: Decimal) -> str:
    return format(value.quantize(EIGHT), "f")  # "0.00000000", never "0E-8"


@dataclass
class _Symbol:
    name: str
    series: list[RealTrade]
    cursor: int
    next_id: int
    last_close: Decimal
    bar: _Bar | None = None
    closing: _Bar | None = None  # the minute that ended, its closing push not sent yet

    def kline(self, bar: _Bar, event_ms: int, closed: bool) -> bytes:
        price = bar.close or self.last_close
        k = {
            "t": bar.open_ms,
            "T": bar.open_ms + MINUTE_MS - 1,
            "s": self.name,
            "i": "1m",
            "f": bar.first_id,
            "L": bar.last_id,
            "o": _s(bar.open or price),
            "c": _s(price),
            "h": _s(bar.high or price),
            "l": _s(bar.low or price),
            "v": _s(bar.volume),
            "n": bar.count,
            "x": closed,
            "q": _s(bar.quote),
            "V": _s(bar.taker_base),
            "Q": _s(bar.taker_quote),
            "B": "0",
        }
        data = {"e": "kline", "E": event_ms, "s": self.name, "k": k}
        return _frame(f"{self.name.lower()}@kline_1m", data)


def _frame(stream: str, data: dict[str, object]) -> bytes:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":")).encode()


def zipf_weights(count: int) -> list[float]:
    return [1.0 / (rank + 1) for rank in range(count)]


def generate(
    captures: list[Path],
    symbols: int,
    trades_per_s: float,
    minutes: int,
    start_ms: int,
    seed: int = 2000,
) -> Iterator[tuple[int, bytes]]:
    """(receive ns, frame) in time order over just under `minutes` minutes from `start_ms`."""
    if start_ms % MINUTE_MS:
        raise ValueError("start_ms must be on a whole minute")
    rng = random.Random(seed)
    real = real_trades(captures)
    gaps = [t.gap_ns for s in SOURCES for t in real[s]]
    scale = 1e9 / trades_per_s / (sum(gaps) / len(gaps))  # the mean gap becomes 1/rate
    names = symbol_names(symbols)
    state = []
    for i, name in enumerate(names):
        series = real[SOURCES[i % len(SOURCES)]]
        cursor = rng.randrange(len(series))
        state.append(_Symbol(name, series, cursor, 1, Decimal(series[cursor].price)))
    weights = zipf_weights(symbols)
    rng.shuffle(weights)  # which names are busy is arbitrary
    cumulative = list(itertools.accumulate(weights))
    # Every tick of every symbol's kline clock, spread over the 2 s.
    phases = [(i * KLINE_EVERY_MS * NS_PER_MS) // symbols for i in range(symbols)]
    end_ns = (start_ms + minutes * MINUTE_MS - 1_000) * NS_PER_MS  # just under whole minutes
    start_ns = start_ms * NS_PER_MS
    trade_ns = start_ns + 5 * NS_PER_MS  # its trade time is still in the first minute
    gap_index = rng.randrange(len(gaps))
    tick = 0  # kline ticks: every symbol once per KLINE_EVERY_MS
    while True:
        kline_ns = (
            start_ns + (tick // symbols) * KLINE_EVERY_MS * NS_PER_MS + phases[tick % symbols]
        )
        if min(trade_ns, kline_ns) >= end_ns:
            return
        if trade_ns <= kline_ns:
            symbol = state[rng.choices(range(symbols), cum_weights=cumulative)[0]]
            yield trade_ns, _trade(symbol, trade_ns)
            trade_ns += max(1, int(gaps[gap_index % len(gaps)] * scale))
            gap_index += 1
        else:
            symbol = state[tick % symbols]
            tick += 1
            yield kline_ns, _push(symbol, kline_ns)


def _trade(symbol: _Symbol, recv_ns: int) -> bytes:
    real = symbol.series[symbol.cursor % len(symbol.series)]
    symbol.cursor += 1
    trade_ms = recv_ns // NS_PER_MS - 3  # a few ms on the wire
    minute = trade_ms - trade_ms % MINUTE_MS
    if symbol.bar is None or symbol.bar.open_ms != minute:
        _roll(symbol, minute)
    assert symbol.bar is not None
    trade_id = symbol.next_id
    symbol.next_id += 1
    symbol.bar.add(trade_id, Decimal(real.price), Decimal(real.qty), real.maker)
    data = {
        "e": "trade",
        "E": trade_ms + 1,
        "s": symbol.name,
        "t": trade_id,
        "p": real.price,
        "q": real.qty,
        "T": trade_ms,
        "m": real.maker,
        "M": True,
    }
    return _frame(f"{symbol.name.lower()}@trade", data)


def _roll(symbol: _Symbol, minute: int) -> None:
    """A new minute: the old one awaits its closing push (a trade may come first)."""
    if symbol.bar is not None:
        symbol.closing = symbol.bar
        if symbol.bar.close is not None:
            symbol.last_close = symbol.bar.close
    symbol.bar = _Bar(minute)


def _push(symbol: _Symbol, push_ns: int) -> bytes:
    """The first push of a minute closes the one before, then each shows the minute so far."""
    push_ms = push_ns // NS_PER_MS
    minute = push_ms - push_ms % MINUTE_MS
    if symbol.bar is None or symbol.bar.open_ms < minute:
        _roll(symbol, minute)
    closing, symbol.closing = symbol.closing, None
    if closing is not None:  # its close, or (no trades) the close before it
        return symbol.kline(closing, push_ms, closed=True)
    assert symbol.bar is not None
    return symbol.kline(symbol.bar, push_ms, closed=False)


def write(path: Path, frames: Iterator[tuple[int, bytes]]) -> int:
    """The frames as an hftbacktest-layout capture; returns how many."""
    count = 0
    with gzip.open(path, "wb", compresslevel=1) as out:
        for recv_ns, raw in frames:
            out.write(b"%d %s\n" % (recv_ns, raw))
            count += 1
    return count
