"""Capture readers, merging and loop shifting of the replay exchange, on real recorded files."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from producer.replay.captures import (
    Capture,
    CaptureError,
    Frame,
    data_bytes,
    merge_captures,
    plan_shifts,
    read_capture,
    shifted,
    shifted_snapshot,
)

CAPTURES = Path(__file__).resolve().parents[2] / "producer" / "replay" / "captures"
SHARED = Path("/work/shared/data/binance")
BTC_0808 = CAPTURES / "spot_btcusdt_20240808.gz"
ETH_0808 = CAPTURES / "spot_ethusdt_20240808.gz"
CRYPTOFEED = CAPTURES / "BINANCE.ws.1.0.gz"
BTC_0809 = SHARED / "ws" / "hftbacktest" / "spot_btcusdt_20240809.gz"
CRYPTOFEED_REST = SHARED / "ws" / "cryptofeed" / "BINANCE-b38f7c.0.gz"
TRADES_US = SHARED / "klines" / "BTCUSDT-trades-2025-01-02.head32.csv"
AGG_TRADES_MS = (
    SHARED
    / "trades_vs_klines"
    / "XRPETH_2019-10-11"
    / "XRPETH-aggTrades-2019-10-11T000011_2019-10-13T111928.csv.gz"
)

needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="shared Binance fixtures absent")


def _lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def _data(frame: Frame) -> dict[str, object]:
    data = json.loads(frame.raw)["data"]
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def btc() -> Capture:
    return read_capture(BTC_0808)


def _count(capture: Capture, suffix: str) -> int:
    return sum(1 for f in capture.frames if f.stream.endswith(suffix))


# --- hftbacktest / recorder format -------------------------------------------


def test_hftbacktest_counts_and_first_frame_byte_identical(btc: Capture) -> None:
    assert len(btc.frames) == 41_248
    assert (_count(btc, "@trade"), _count(btc, "@bookTicker"), _count(btc, "@depth@100ms")) == (
        9_757,
        28_040,
        3_451,
    )
    stamp, raw = _lines(BTC_0808)[0].split(b" ", 1)
    assert btc.frames[0] == Frame(int(stamp), "btcusdt@depth@100ms", raw)


def test_hftbacktest_rest_snapshot_kept_with_the_file_symbol(btc: Capture) -> None:
    stamp, raw = _lines(BTC_0808)[7].split(b" ", 1)  # line 8 has no "stream" key
    assert len(btc.snapshots) == 1
    snapshot = btc.snapshots[0]
    assert (snapshot.recv_ns, snapshot.symbol, snapshot.raw) == (int(stamp), "BTCUSDT", raw)
    assert json.loads(snapshot.raw)["lastUpdateId"] == 50093239218


def test_eth_file_trade_count() -> None:
    eth = read_capture(ETH_0808)
    assert _count(eth, "@trade") == 6_106
    assert [s.symbol for s in eth.snapshots] == ["ETHUSDT"]


@needs_shared
def test_the_readme_trade_count_is_both_files_together(btc: Capture) -> None:
    next_day = read_capture(BTC_0809)
    assert _count(next_day, "@trade") == 10_147
    assert _count(btc, "@trade") + _count(next_day, "@trade") == 19_904


def test_recorder_comment_lines_are_skipped_and_symbol_comes_from_frames(
    tmp_path: Path, btc: Capture
) -> None:
    path = tmp_path / "session.txt"  # no symbol in the name
    body = [b"# lakehouse capture v1 streams=btcusdt@trade"]
    body += [b"%d %s" % (f.recv_ns, f.raw) for f in btc.frames[:10]]
    body += [b"%d %s" % (btc.snapshots[0].recv_ns, btc.snapshots[0].raw)]
    path.write_bytes(b"\n".join(body) + b"\n")
    capture = read_capture(path)
    assert capture.frames == btc.frames[:10]
    assert [s.symbol for s in capture.snapshots] == ["BTCUSDT"]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "spot_btcusdt_20240808.txt"
    path.write_bytes(b'1 {"stream":"btcusdt@trade","data":{}}\n2 {"stream":\n')
    with pytest.raises(CaptureError, match=r"spot_btcusdt_20240808\.txt:2: invalid JSON"):
        read_capture(path)


def test_unknown_format_and_missing_file_fail_loudly(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(CaptureError, match=r"notes\.txt:1: unknown capture format"):
        read_capture(path)
    with pytest.raises(CaptureError, match="cannot read"):
        read_capture(tmp_path / "absent.gz")


# --- cryptofeed --------------------------------------------------------------


def test_cryptofeed_frames_and_exact_receive_time() -> None:
    capture = read_capture(CRYPTOFEED)
    assert len(capture.frames) == 265
    assert _count(capture, "@aggTrade") == 2
    assert _count(capture, "@kline_1m") == 2
    assert capture.snapshots == []
    stamp, raw = _lines(CRYPTOFEED)[1].split(b": ", 1)
    assert stamp == b"1633998512.0633569"
    assert capture.frames[0] == Frame(1_633_998_512_063_356_900, "nknusdt@depth@100ms", raw)


@needs_shared
def test_cryptofeed_rest_snapshots_take_the_symbol_of_their_url() -> None:
    capture = read_capture(CRYPTOFEED_REST)
    assert len(capture.frames) == 11_357
    assert len(capture.snapshots) == 10
    assert capture.snapshots[0].symbol == "ZILUSDT"
    assert json.loads(capture.snapshots[0].raw)["lastUpdateId"] == 499822895


# --- data.binance.vision archives --------------------------------------------


@needs_shared
def test_archive_trades_in_microseconds_become_millisecond_frames() -> None:
    capture = read_capture(TRADES_US)
    assert len(capture.frames) == 32
    first = capture.frames[0]
    # 4361451942,94591.78000000,0.00015000,14.18876700,1735776000113701,True,True
    assert first.raw == (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1735776000113,"s":"BTCUSDT",'
        b'"t":4361451942,"p":"94591.78000000","q":"0.00015000","T":1735776000113,'
        b'"m":true,"M":true}}'
    )
    assert first.recv_ns == 1_735_776_000_113_701_000
    assert _data(capture.frames[2])["m"] is False


@needs_shared
def test_archive_agg_trades_in_milliseconds() -> None:
    capture = read_capture(AGG_TRADES_MS)
    assert len(capture.frames) == 12_477
    assert capture.frames[0].raw == (
        b'{"stream":"xrpeth@aggTrade","data":{"e":"aggTrade","E":1570752011620,"s":"XRPETH",'
        b'"a":13519807,"p":"0.00141342","q":"23.00000000","f":15373518,"l":15373518,'
        b'"T":1570752011620,"m":true,"M":true}}'
    )
    assert capture.frames[0].recv_ns == 1_570_752_011_620 * 1_000_000
    trades = sum(int(d["l"]) - int(d["f"]) + 1 for d in map(_data, capture.frames))  # type: ignore[call-overload]
    assert trades == 14_672


def test_archive_zip_and_bad_row(tmp_path: Path) -> None:
    row = "7,1.50,2.00,3.00,1570752011620,False,True\n"
    path = tmp_path / "ABCUSDT-trades-2019-10-11.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ABCUSDT-trades-2019-10-11.csv", row + row.replace("False", "Maybe"))
    with pytest.raises(CaptureError, match=r"ABCUSDT-trades-2019-10-11\.zip:2: bad trades row"):
        read_capture(path)
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ABCUSDT-trades-2019-10-11.csv", row)
    (frame,) = read_capture(path).frames
    assert _data(frame) == {
        "e": "trade",
        "E": 1570752011620,
        "s": "ABCUSDT",
        "t": 7,
        "p": "1.50",
        "q": "2.00",
        "T": 1570752011620,
        "m": False,
        "M": True,
    }


# --- merging -----------------------------------------------------------------


def test_merge_orders_by_receive_time_and_keeps_ties_stable(tmp_path: Path, btc: Capture) -> None:
    eth = read_capture(ETH_0808)
    merged = merge_captures([BTC_0808, ETH_0808])
    assert len(merged.frames) == len(btc.frames) + len(eth.frames)
    times = [f.recv_ns for f in merged.frames]
    assert times == sorted(times)
    assert [s.symbol for s in merged.snapshots] == ["ETHUSDT", "BTCUSDT"]  # by receive time

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b'5 {"stream":"x@trade","data":{"i":"a1"}}\n9 {"stream":"x@trade","data":{}}\n')
    b.write_bytes(b'5 {"stream":"x@trade","data":{"i":"b1"}}\n1 {"stream":"x@trade","data":{}}\n')
    order = [(f.recv_ns, f.raw) for f in merge_captures([a, b]).frames]
    assert [t for t, _ in order] == [1, 5, 5, 9]
    assert b'"a1"' in order[1][1] and b'"b1"' in order[2][1]


# --- raw payloads ------------------------------------------------------------


def test_data_bytes_is_a_slice_of_the_recorded_frame(btc: Capture) -> None:
    frame = btc.frames[3]
    payload = data_bytes(frame)
    assert frame.raw == b'{"stream":"btcusdt@trade","data":' + payload + b"}"
    assert json.loads(payload) == _data(frame)


# --- looping -----------------------------------------------------------------


def test_loop_zero_is_the_same_frame(btc: Capture) -> None:
    plan = plan_shifts(btc)
    assert shifted(btc.frames[0], 0, plan) is btc.frames[0]


def test_loop_one_shifts_ids_and_times_by_the_spans(btc: Capture) -> None:
    plan = plan_shifts(btc)
    # 23:54:13.9 .. 23:59:59.9 receive, event times 1.27 s later: 6 whole minutes.
    assert plan.time_span_ms == 6 * 60_000
    assert plan.trade_ids["BTCUSDT"] == 3735693015 - 3735683259 + 1 == 9_757
    trade = next(f for f in btc.frames if f.stream == "btcusdt@trade")
    moved = shifted(trade, 1, plan)
    before, after = _data(trade), _data(moved)
    assert after["t"] == before["t"] + 9_757  # type: ignore[operator]
    assert after["E"] == before["E"] + 360_000  # type: ignore[operator]
    assert after["T"] == before["T"] + 360_000  # type: ignore[operator]
    assert moved.recv_ns == trade.recv_ns + 360_000 * 1_000_000
    assert list(after) == list(before)  # key order kept
    assert moved.raw == json.dumps(json.loads(moved.raw), separators=(",", ":")).encode()
    assert (after["p"], after["q"]) == (before["p"], before["q"])

    # Loop 1's first trade follows loop 0's last without a gap.
    trades = [f for f in btc.frames if f.stream == "btcusdt@trade"]
    assert _data(shifted(trades[0], 1, plan))["t"] == _data(trades[-1])["t"] + 1  # type: ignore[operator]

    # bookTicker and depth share the order book update id sequence.
    book_span = plan.book_ids["BTCUSDT"]
    ticker = next(f for f in btc.frames if f.stream == "btcusdt@bookTicker")
    depth = btc.frames[0]
    assert _data(shifted(ticker, 1, plan))["u"] == _data(ticker)["u"] + book_span  # type: ignore[operator]
    assert _data(shifted(depth, 2, plan))["U"] == _data(depth)["U"] + 2 * book_span  # type: ignore[operator]
    snapshot = shifted_snapshot(btc.snapshots[0], 1, plan)
    assert (
        json.loads(snapshot.raw)["lastUpdateId"]
        == json.loads(btc.snapshots[0].raw)["lastUpdateId"] + book_span
    )


def test_loop_one_keeps_klines_on_minute_boundaries_and_shifts_agg_ids() -> None:
    capture = read_capture(CRYPTOFEED)
    plan = plan_shifts(capture)
    assert plan.time_span_ms % 60_000 == 0
    kline = next(f for f in capture.frames if f.stream.endswith("@kline_1m"))
    k0 = _data(kline)["k"]
    k1 = _data(shifted(kline, 1, plan))["k"]
    assert isinstance(k0, dict) and isinstance(k1, dict)
    assert k1["t"] % 60_000 == 0 and k1["T"] % 60_000 == 59_999
    assert k1["t"] == k0["t"] + plan.time_span_ms
    symbol = kline.stream.split("@")[0].upper()
    assert k1["f"] == k0["f"] + plan.trade_ids[symbol]
    agg = next(f for f in capture.frames if f.stream.endswith("@aggTrade"))
    a0, a1 = _data(agg), _data(shifted(agg, 3, plan))
    symbol = agg.stream.split("@")[0].upper()
    assert a1["a"] == a0["a"] + 3 * plan.agg_ids[symbol]  # type: ignore[operator]
    assert a1["f"] == a0["f"] + 3 * plan.trade_ids[symbol]  # type: ignore[operator]
