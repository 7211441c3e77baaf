"""Recorded Binance market data, read into one timeline of frames for the replay exchange.

This module owns the capture formats and what a frame is: the combined-stream
JSON text exactly as Binance sent it, with the time it was received. It reads
the three formats the project has real data in (hftbacktest / our own
recorder, cryptofeed's sample sessions, the data.binance.vision trade and
aggTrade archives), merges several files into one receive-time order, and
shifts frames for the loops of a sustained replay (ids and times moved by
whole spans so that loop 1 continues loop 0 like a real exchange would).
Captures are trusted input, but a malformed line fails loudly with the file
and line number.
"""

from __future__ import annotations

import csv
import decimal
import gzip
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

NS_PER_MS = 1_000_000
MINUTE_MS = 60_000

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
# `spot_btcusdt_20240808.gz` (hftbacktest, renamed) or `btcusdt_20240808.gz`.
_HFT_NAME_RE = re.compile(r"(?:^|_)([a-z0-9]+)_[0-9]{8}(?:\.|$)", re.IGNORECASE)
# `BTCUSDT-trades-2025-01-02.csv`, `XRPETH-aggTrades-2019-10-11T..._....csv.gz`.
_ARCHIVE_NAME_RE = re.compile(r"^([A-Z0-9]+)-(trades|aggTrades)-")
_HFT_LINE_RE = re.compile(rb"^[0-9]+ [{]")
_CRYPTOFEED_LINE_RE = re.compile(rb"^[0-9]+(?:\.[0-9]+)?: [{]")
_CSV_LINE_RE = re.compile(rb"^[0-9]+,")
# Recorded frames start like this, so the `data` payload can be sliced out of
# the raw bytes instead of being re-serialised (raw streams need exact bytes).
_COMBINED_PREFIX_RE = re.compile(rb'^\{"stream":"([^"\\]+)","data":')
_US_THRESHOLD = 10**15  # 16-digit archive timestamps are microseconds (2025+)


class CaptureError(ValueError):
    """A capture file that cannot be read: names the file and, when known, the line."""


@dataclass(frozen=True)
class Frame:
    """One WebSocket message as received: combined-stream JSON bytes, never re-serialised."""

    recv_ns: int  # local receive time, ns since the epoch
    stream: str  # combined-stream name, e.g. "btcusdt@trade"
    raw: bytes  # {"stream":...,"data":...} exactly as recorded


@dataclass(frozen=True)
class Snapshot:
    """A REST depth snapshot (`/api/v3/depth` answer) recorded between the frames."""

    recv_ns: int
    symbol: str | None  # upper case, None when the capture does not say
    raw: bytes  # {"lastUpdateId":...,"bids":...,"asks":...} exactly as recorded


@dataclass(frozen=True)
class Capture:
    """Frames and snapshots of one or more capture files, each list in timeline order."""

    frames: list[Frame] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    sources: tuple[Path, ...] = ()


def stream_symbol(stream: str) -> str | None:
    """BTCUSDT for "btcusdt@trade"; None for market-wide streams such as "!ticker@arr"."""
    if stream.startswith("!") or "@" not in stream:
        return None
    return stream.split("@", 1)[0].upper()


def data_bytes(frame: Frame) -> bytes:
    """The `data` value of a combined frame, as the raw `/ws/<stream>` endpoint sends it."""
    match = _COMBINED_PREFIX_RE.match(frame.raw)
    if match is not None and frame.raw.endswith(b"}"):
        return frame.raw[match.end() : -1]
    # Not laid out like Binance's own frames (cannot happen for recorded
    # frames, only for hand-made ones): fall back to re-serialising.
    return _dumps(json.loads(frame.raw)["data"])


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --- reading files -----------------------------------------------------------


def _open_bytes(path: Path) -> tuple[str, bytes]:
    """(member name, decompressed content): gzip and single-member zip are unpacked."""
    try:
        content = path.read_bytes()
        if content.startswith(_GZIP_MAGIC):
            return path.name.removesuffix(".gz"), gzip.decompress(content)
        if content.startswith(_ZIP_MAGIC):
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise CaptureError(f"{path}: expected one file in the zip, found {names}")
                return names[0], archive.read(names[0])
    except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        raise CaptureError(f"{path}: cannot read: {exc}") from exc
    return path.name, content


def _lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(content.splitlines(), start=1):
        line = line.rstrip(b"\r")
        if line.strip():
            yield number, line


def _detect(path: Path, content: bytes) -> str:
    for number, line in _lines(content):
        if line.startswith(b"#") or _HFT_LINE_RE.match(line):
            return "hftbacktest"
        if line.startswith((b"wss://", b"ws://", b"configuration:")) or _CRYPTOFEED_LINE_RE.match(
            line
        ):
            return "cryptofeed"
        if _CSV_LINE_RE.match(line):
            return "archive"
        raise CaptureError(f"{path}:{number}: unknown capture format: {line[:80]!r}")
    raise CaptureError(f"{path}: empty capture")


def _load_json(path: Path, number: int, text: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise CaptureError(f"{path}:{number}: invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise CaptureError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
    return obj


class _Builder:
    """Collects one file's frames and snapshots; a snapshot's symbol may come from its frames."""

    def __init__(self, path: Path, file_symbol: str | None) -> None:
        self.path = path
        self.file_symbol = file_symbol
        self.frames: list[Frame] = []
        self.snapshots: list[Snapshot] = []

    def add_json(self, number: int, recv_ns: int, text: bytes, symbol: str | None = None) -> None:
        obj = _load_json(self.path, number, text)
        stream = obj.get("stream")
        if isinstance(stream, str) and "data" in obj:
            self.frames.append(Frame(recv_ns, stream, text))
        elif "lastUpdateId" in obj and "bids" in obj and "asks" in obj:
            self.snapshots.append(Snapshot(recv_ns, symbol or self.file_symbol, text))
        else:
            raise CaptureError(
                f"{self.path}:{number}: neither a combined-stream frame nor a depth snapshot"
            )

    def build(self) -> Capture:
        symbols = {stream_symbol(f.stream) for f in self.frames} - {None}
        only = next(iter(symbols)) if len(symbols) == 1 else None
        snapshots = [
            s if s.symbol is not None else Snapshot(s.recv_ns, only, s.raw) for s in self.snapshots
        ]
        return Capture(self.frames, snapshots, (self.path,))


def _read_hftbacktest(path: Path, name: str, content: bytes) -> Capture:
    match = _HFT_NAME_RE.search(name)
    builder = _Builder(path, match.group(1).upper() if match else None)
    for number, line in _lines(content):
        if line.startswith(b"#"):
            continue
        stamp, sep, text = line.partition(b" ")
        if not sep or not stamp.isdigit():
            raise CaptureError(f"{path}:{number}: expected '<receive ns> <json>': {line[:80]!r}")
        builder.add_json(number, int(stamp), text)
    return builder.build()


def _epoch_s_to_ns(path: Path, number: int, stamp: bytes) -> int:
    try:
        # Decimal, not float: 1633998512.0633569 must not lose its last digits.
        return int(Decimal(stamp.decode()) * 1_000_000_000)
    except (decimal.InvalidOperation, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}:{number}: bad receive time {stamp[:40]!r}") from exc


def _read_cryptofeed(path: Path, name: str, content: bytes) -> Capture:
    builder = _Builder(path, None)
    for number, line in _lines(content):
        # Connection lines (`wss://... <-> <time>`) and the session's
        # configuration carry no market data.
        if line.startswith((b"wss://", b"ws://", b"configuration:")):
            continue
        symbol = None
        if line.startswith((b"https://", b"http://")):
            # `https://.../depth?symbol=ZILUSDT&limit=1000 -> <time>: <snapshot>`
            url, sep, line = line.partition(b" -> ")
            if not sep:
                raise CaptureError(f"{path}:{number}: REST line without ' -> ': {url[:80]!r}")
            query = parse_qs(urlsplit(url.decode("ascii", "replace")).query)
            symbol = query.get("symbol", [None])[0]
        stamp, sep, text = line.partition(b": ")
        if not sep:
            raise CaptureError(f"{path}:{number}: expected '<receive s>: <json>': {line[:80]!r}")
        builder.add_json(number, _epoch_s_to_ns(path, number, stamp), text, symbol)
    return builder.build()


_BOOLS = {"True": True, "False": False, "true": True, "false": False}


def _archive_time(value: str) -> tuple[int, int]:
    """(event ms, receive ns) of an archive timestamp in ms, or in us when 16 digits."""
    stamp = int(value)
    if stamp >= _US_THRESHOLD:
        return stamp // 1000, stamp * 1000
    return stamp, stamp * NS_PER_MS


def _trade_row(symbol: str, row: list[str]) -> tuple[int, dict[str, Any]]:
    trade_id, price, qty, _quote_qty, time, maker, best = row
    ms, recv_ns = _archive_time(time)
    data = {
        "e": "trade",
        "E": ms,
        "s": symbol,
        "t": int(trade_id),
        "p": price,
        "q": qty,
        "T": ms,
        "m": _BOOLS[maker],
        "M": _BOOLS[best],
    }
    return recv_ns, data


def _agg_trade_row(symbol: str, row: list[str]) -> tuple[int, dict[str, Any]]:
    agg_id, price, qty, first_id, last_id, time, maker, best = row
    ms, recv_ns = _archive_time(time)
    data = {
        "e": "aggTrade",
        "E": ms,
        "s": symbol,
        "a": int(agg_id),
        "p": price,
        "q": qty,
        "f": int(first_id),
        "l": int(last_id),
        "T": ms,
        "m": _BOOLS[maker],
        "M": _BOOLS[best],
    }
    return recv_ns, data


# archive dataset -> (stream suffix, columns, row -> (recv_ns, data))
_RowConverter = Callable[[str, list[str]], tuple[int, dict[str, Any]]]
_ARCHIVE_KINDS: dict[str, tuple[str, int, _RowConverter]] = {
    "trades": ("trade", 7, _trade_row),
    "aggTrades": ("aggTrade", 8, _agg_trade_row),
}


def _read_archive(path: Path, name: str, content: bytes) -> Capture:
    match = _ARCHIVE_NAME_RE.match(name) or _ARCHIVE_NAME_RE.match(path.name)
    if match is None:
        raise CaptureError(
            f"{path}: archive CSV must be named <SYMBOL>-trades-... or <SYMBOL>-aggTrades-..."
        )
    symbol, dataset = match.group(1), match.group(2)
    suffix, columns, convert = _ARCHIVE_KINDS[dataset]
    stream = f"{symbol.lower()}@{suffix}"
    frames = []
    for number, line in _lines(content):
        row = next(csv.reader([line.decode("ascii", "replace")]))
        try:
            if len(row) != columns:
                raise ValueError(f"expected {columns} columns, got {len(row)}")
            recv_ns, data = convert(symbol, row)
        except (ValueError, KeyError) as exc:
            raise CaptureError(f"{path}:{number}: bad {dataset} row {line[:80]!r}: {exc}") from exc
        frames.append(Frame(recv_ns, stream, _dumps({"stream": stream, "data": data})))
    return Capture(frames, [], (path,))


_READERS: dict[str, Callable[[Path, str, bytes], Capture]] = {
    "hftbacktest": _read_hftbacktest,
    "cryptofeed": _read_cryptofeed,
    "archive": _read_archive,
}


def read_capture(path: Path | str) -> Capture:
    """Read one capture file, detecting its format; frames and snapshots stay in file order."""
    path = Path(path)
    name, content = _open_bytes(path)
    return _READERS[_detect(path, content)](path, name, content)


def merge_captures(paths: Sequence[Path | str]) -> Capture:
    """Several files in one receive-time order; ties keep the order of `paths`, then of lines."""
    captures = [read_capture(p) for p in paths]
    # sorted() is stable, so concatenating in argument order gives the tie rule.
    frames = sorted((f for c in captures for f in c.frames), key=lambda f: f.recv_ns)
    snapshots = sorted((s for c in captures for s in c.snapshots), key=lambda s: s.recv_ns)
    return Capture(frames, snapshots, tuple(p for c in captures for p in c.sources))


# --- looping -----------------------------------------------------------------


@dataclass(frozen=True)
class ShiftPlan:
    """How far loop 1 moves everything: ids by their per-symbol span, times by whole minutes."""

    time_span_ms: int  # a multiple of one minute, so 1m klines stay aligned
    # symbol -> span of trade ids (trade t, aggTrade f/l, kline f/L; ticker F/L move too)
    trade_ids: Mapping[str, int] = field(default_factory=dict)
    agg_ids: Mapping[str, int] = field(default_factory=dict)  # symbol -> span of a
    book_ids: Mapping[str, int] = field(default_factory=dict)  # symbol -> span of U,u,lastUpdateId

    @property
    def time_span_ns(self) -> int:
        return self.time_span_ms * NS_PER_MS


class _Ranges:
    def __init__(self) -> None:
        self.bounds: dict[str, tuple[int, int]] = {}

    def add(self, symbol: str, *values: Any) -> None:
        for value in values:
            # Klines and tickers of a quiet window carry -1 for "no trade".
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                low, high = self.bounds.get(symbol, (value, value))
                self.bounds[symbol] = (min(low, value), max(high, value))

    def spans(self) -> dict[str, int]:
        return {symbol: high - low + 1 for symbol, (low, high) in self.bounds.items()}


def _event_kind(data: Mapping[str, Any]) -> str:
    """The payload type: Binance's `e`, or the shape of the two payloads that have none."""
    kind = data.get("e")
    if isinstance(kind, str):
        return kind
    if "lastUpdateId" in data:
        return "partialDepth"
    if "u" in data and "b" in data:
        return "bookTicker"
    return "unknown"


def _payload(frame: Frame) -> tuple[str | None, Mapping[str, Any]]:
    data = json.loads(frame.raw).get("data")
    return stream_symbol(frame.stream), data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class _Measure:
    trades: _Ranges = field(default_factory=_Ranges)
    aggs: _Ranges = field(default_factory=_Ranges)
    books: _Ranges = field(default_factory=_Ranges)


def _kline_ids(m: _Measure, symbol: str, data: Mapping[str, Any]) -> None:
    # A kline's first trade can precede the capture's first trade; counting
    # it keeps loop 1's klines from reusing loop 0's trade ids.
    k = data.get("k")
    if isinstance(k, dict):
        m.trades.add(symbol, k.get("f"), k.get("L"))


def _agg_trade_ids(m: _Measure, symbol: str, data: Mapping[str, Any]) -> None:
    m.aggs.add(symbol, data.get("a"))
    m.trades.add(symbol, data.get("f"), data.get("l"))


# payload type -> which id family its ids belong to (plan_shifts)
_MEASURERS: dict[str, Callable[[_Measure, str, Mapping[str, Any]], None]] = {
    "trade": lambda m, s, d: m.trades.add(s, d.get("t")),
    "aggTrade": _agg_trade_ids,
    "depthUpdate": lambda m, s, d: m.books.add(s, d.get("U"), d.get("u")),
    "partialDepth": lambda m, s, d: m.books.add(s, d.get("lastUpdateId")),
    "bookTicker": lambda m, s, d: m.books.add(s, d.get("u")),
    "kline": _kline_ids,
}


def plan_shifts(capture: Capture) -> ShiftPlan:
    """Measure the spans once: per symbol, max - min + 1 of each id family; the duration."""
    measure = _Measure()
    times: list[int] = []
    for frame in capture.frames:
        symbol, data = _payload(frame)
        event_ms = data.get("E")
        if isinstance(event_ms, int):
            times.append(event_ms * NS_PER_MS)
        measurer = _MEASURERS.get(_event_kind(data))
        if symbol is not None and measurer is not None:
            measurer(measure, symbol, data)
    books = measure.books
    for snapshot in capture.snapshots:
        if snapshot.symbol is not None:
            books.add(snapshot.symbol, json.loads(snapshot.raw).get("lastUpdateId"))
    recv = [f.recv_ns for f in capture.frames] + [s.recv_ns for s in capture.snapshots]
    duration_ns = max(
        (max(recv) - min(recv)) if recv else 0,
        (max(times) - min(times)) if times else 0,
    )
    # Strictly longer than the capture, in whole minutes: loop 1's first frame
    # comes after loop 0's last one and a 1m kline of loop 1 opens on a minute.
    minutes = duration_ns // (MINUTE_MS * NS_PER_MS) + 1
    return ShiftPlan(
        minutes * MINUTE_MS, measure.trades.spans(), measure.aggs.spans(), books.spans()
    )


def _add(data: dict[str, Any], keys: Iterable[str], delta: int) -> None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            data[key] = value + delta


@dataclass(frozen=True)
class _Deltas:
    time_ms: int
    trade: int
    agg: int
    book: int


def _shift_trade(data: dict[str, Any], d: _Deltas) -> None:
    _add(data, ("E", "T"), d.time_ms)
    _add(data, ("t",), d.trade)


def _shift_agg_trade(data: dict[str, Any], d: _Deltas) -> None:
    _add(data, ("E", "T"), d.time_ms)
    _add(data, ("a",), d.agg)
    _add(data, ("f", "l"), d.trade)


def _shift_depth_update(data: dict[str, Any], d: _Deltas) -> None:
    _add(data, ("E", "T"), d.time_ms)
    _add(data, ("U", "u", "pu"), d.book)


def _shift_partial_depth(data: dict[str, Any], d: _Deltas) -> None:
    _add(data, ("E", "T"), d.time_ms)
    _add(data, ("lastUpdateId",), d.book)


def _shift_book_ticker(data: dict[str, Any], d: _Deltas) -> None:
    # bookTicker's u is the order book update id, the same sequence as depth's.
    _add(data, ("E", "T"), d.time_ms)
    _add(data, ("u",), d.book)


def _shift_kline(data: dict[str, Any], d: _Deltas) -> None:
    _add(data, ("E",), d.time_ms)
    k = data.get("k")
    if isinstance(k, dict):
        _add(k, ("t", "T"), d.time_ms)
        _add(k, ("f", "L"), d.trade)


def _shift_ticker(data: dict[str, Any], d: _Deltas) -> None:
    _add(data, ("E", "O", "C"), d.time_ms)
    _add(data, ("F", "L"), d.trade)


def _shift_time_only(data: dict[str, Any], d: _Deltas) -> None:
    _add(data, ("E",), d.time_ms)


_SHIFTERS: dict[str, Callable[[dict[str, Any], _Deltas], None]] = {
    "trade": _shift_trade,
    "aggTrade": _shift_agg_trade,
    "depthUpdate": _shift_depth_update,
    "partialDepth": _shift_partial_depth,
    "bookTicker": _shift_book_ticker,
    "kline": _shift_kline,
    "24hrTicker": _shift_ticker,
    "24hrMiniTicker": _shift_time_only,
}


def _deltas(symbol: str | None, loop: int, plan: ShiftPlan) -> _Deltas:
    key = symbol or ""
    return _Deltas(
        time_ms=loop * plan.time_span_ms,
        trade=loop * plan.trade_ids.get(key, 0),
        agg=loop * plan.agg_ids.get(key, 0),
        book=loop * plan.book_ids.get(key, 0),
    )


def shifted(frame: Frame, loop: int, plan: ShiftPlan) -> Frame:
    """The frame as loop `loop` plays it; loop 0 is the frame itself, same bytes."""
    if loop == 0:
        return frame
    obj = json.loads(frame.raw)
    data = obj.get("data")
    if isinstance(data, dict):
        shift = _SHIFTERS.get(_event_kind(data), _shift_time_only)
        shift(data, _deltas(stream_symbol(frame.stream), loop, plan))
    return Frame(frame.recv_ns + loop * plan.time_span_ns, frame.stream, _dumps(obj))


def shifted_snapshot(snapshot: Snapshot, loop: int, plan: ShiftPlan) -> Snapshot:
    """A REST depth snapshot as loop `loop` serves it (lastUpdateId moved like depth's ids)."""
    if loop == 0:
        return snapshot
    obj = json.loads(snapshot.raw)
    _shift_partial_depth(obj, _deltas(snapshot.symbol, loop, plan))
    return Snapshot(snapshot.recv_ns + loop * plan.time_span_ns, snapshot.symbol, _dumps(obj))
