"""Pure producer logic: routing and quarantine, id continuity, backoff, stream groups."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from producer.binance.client import AttemptLimiter, backoff_delay
from producer.binance.streams import stream_groups
from producer.gaps import Gap, GapTracker
from producer.router import Control, Quarantined, Routed, Router
from streaming_jobs.common.settings import PROJECT_ROOT, Symbol, load_settings

SETTINGS = load_settings(PROJECT_ROOT / "conf", {"ACTIVE_SYMBOLS": "BTCUSDT,ETHUSDT"})
# Real frames from ../shared/data/binance/ws/hftbacktest/spot_btcusdt_20240808.gz.
TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
    b'"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}'
)
BOOK = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000",'
    b'"B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}'
)


@pytest.fixture
def router() -> Router:
    subscribed = frozenset(
        [*SETTINGS.symbols[0].stream_names(), *SETTINGS.symbols[1].stream_names()]
    )
    return Router(SETTINGS, subscribed)


def test_trade_routes_byte_identical_with_headers(router: Router) -> None:
    route = router.route(TRADE, 1723161254087896568, "g0-1")
    assert isinstance(route, Routed)
    assert route.record.value is TRADE
    assert (route.record.topic, route.record.key) == ("binance.trade", b"BTCUSDT")
    assert dict(route.record.headers) == {
        "recv_ns": b"1723161254087896568",
        "connection": b"g0-1",
        "stream": b"btcusdt@trade",
        "backfill": b"0",
        "clock_offset_ns": b"0",
    }
    assert (route.kind, route.symbol, dict(route.ids)) == ("trade", "BTCUSDT", {"t": 3735683259})


def test_book_ticker_routes(router: Router) -> None:
    route = router.route(BOOK, 1, "g0-1")
    assert isinstance(route, Routed)
    assert route.record.topic == "binance.book_ticker"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"stream":"btcusdt@trade","data":{"t":1', "not_json"),
        (b"\xff\xfe not utf-8", "not_utf8"),
        (b"[1,2,3]", "bad_shape"),
        (b'{"stream":"btcusdt@trade"}', "bad_shape"),
        (b'{"stream":"dogeusdt@trade","data":{"t":1}}', "unknown_stream"),
        (b'{"stream":"btcusdt@trade","data":{"s":"ETHUSDT","t":1}}', "symbol_mismatch"),
        (b'{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","t":"12"}}', "bad_id_t"),
        (b'{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","t":NaN}}', "bad_id_t"),
        (b'{"stream":"btcusdt@aggTrade","data":{"s":"BTCUSDT","a":5,"f":-1,"l":2}}', "bad_id_f"),
    ],
)
def test_bad_frames_are_quarantined_with_a_reason(router: Router, raw: bytes, reason: str) -> None:
    route = router.route(raw, 7, "g0-2")
    assert isinstance(route, Quarantined)
    assert route.reason == reason
    assert route.record.topic == "binance.quarantine"
    assert route.record.value == raw
    assert dict(route.record.headers)["reason"] == reason.encode()


def test_server_shutdown_is_a_control_event(router: Router) -> None:
    raw = json.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1}})
    assert router.route(raw.encode(), 1, "g0-1") == Control("serverShutdown")


def test_gap_tracker_duplicates_gaps_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    tracker = GapTracker(state)
    assert tracker.observe("trade", "BTCUSDT", 100) == (True, None)
    assert tracker.observe("trade", "BTCUSDT", 101) == (True, None)
    assert tracker.observe("trade", "BTCUSDT", 101) == (False, None)
    assert tracker.observe("trade", "BTCUSDT", 105) == (True, Gap("trade", "BTCUSDT", 102, 104))
    assert tracker.observe("depth", "BTCUSDT", 10, 12) == (True, None)
    assert tracker.observe("depth", "BTCUSDT", 13, 20) == (True, None)
    assert tracker.observe("depth", "BTCUSDT", 25, 30)[1] == Gap("depth", "BTCUSDT", 21, 24)
    tracker.delivered("trade", "BTCUSDT", 101)
    tracker.save()

    # Restart: continue from the last *delivered* id; the unfilled gap is still owed.
    restarted = GapTracker(state)
    assert restarted.pending_gaps() == [Gap("trade", "BTCUSDT", 102, 104)]
    assert restarted.observe("trade", "BTCUSDT", 108) == (True, Gap("trade", "BTCUSDT", 102, 107))
    restarted.filled(Gap("trade", "BTCUSDT", 102, 104))
    restarted.save()
    assert [g.first_id for g in GapTracker(state).pending_gaps()] == [102]


def test_catch_up_owes_what_the_exchange_published_while_down(tmp_path: Path) -> None:
    """Found by the chaos suite: trades published while the producer was down, after which
    the symbol went quiet, were never backfilled (no later live frame showed the gap)."""
    state = tmp_path / "state.json"
    tracker = GapTracker(state)
    tracker.observe("trade", "BTCUSDT", 100)
    tracker.delivered("trade", "BTCUSDT", 100)
    tracker.save()
    restarted = GapTracker(state)
    assert restarted.resumed() == [("trade", "BTCUSDT")]
    assert restarted.catch_up("trade", "BTCUSDT", 100) is None  # nothing new
    gap = restarted.catch_up("trade", "BTCUSDT", 110)
    assert gap == Gap("trade", "BTCUSDT", 101, 110) and restarted.pending_gaps() == [gap]
    # A live frame inside the gap is new once (and no longer owed); after it, none is a gap.
    assert restarted.observe("trade", "BTCUSDT", 105) == (True, None)
    assert restarted.observe("trade", "BTCUSDT", 105) == (False, None)
    assert restarted.observe("trade", "BTCUSDT", 111) == (True, None)
    assert restarted.unfilled(gap) == 9
    assert restarted.catch_up("trade", "ETHUSDT", 5) is None  # never seen: nothing to owe


def test_corrupt_state_file_is_ignored_loudly(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    assert GapTracker(state).pending_gaps() == []


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 1.0, 60.0, rng) for n in range(12) for _ in range(50)]
    assert max(delays) <= 60.0
    assert min(delays) >= 0.0
    assert len({round(d, 6) for d in delays}) > 500  # jittered, not a fixed ladder


def test_attempt_limiter_stays_under_the_window_limit() -> None:
    limiter = AttemptLimiter(3, window_s=300)
    for t in (0.0, 1.0, 2.0):
        assert limiter.wait_time(t) == 0
        limiter.record(t)
    assert limiter.wait_time(10.0) == pytest.approx(290.0)
    assert limiter.wait_time(300.0) == 0


def test_1500_streams_need_two_connections() -> None:
    symbols = [
        Symbol(f"SYM{i:04d}USDT", 2, ("trade", "kline_1m", "bookTicker")) for i in range(500)
    ]
    groups = stream_groups(symbols, 1024)
    assert [len(g.streams) for g in groups] == [1024, 476]
    assert (
        groups[0]
        .url("ws://127.0.0.1:1")
        .startswith("ws://127.0.0.1:1/stream?streams=sym0000usdt@trade/sym0000usdt@kline_1m/")
    )


def test_a_slower_connection_fills_what_a_faster_one_skipped(tmp_path: Path) -> None:
    tracker = GapTracker(tmp_path / "state.json")
    tracker.observe("trade", "BTCUSDT", 100)
    gap = Gap("trade", "BTCUSDT", 101, 104)
    assert tracker.observe("trade", "BTCUSDT", 105) == (True, gap)  # the new connection, ahead
    assert tracker.observe("trade", "BTCUSDT", 102) == (True, None)  # the old one catching up
    assert tracker.observe("trade", "BTCUSDT", 102) == (False, None)
    assert tracker.claim("trade", "BTCUSDT", 101) is True  # backfill takes only what is missing
    assert tracker.claim("trade", "BTCUSDT", 102) is False
    assert tracker.unfilled(gap) == 2
    assert tracker.pending_gaps() == [gap]  # owed until its backfill is acknowledged
    tracker.filled(gap)
    assert tracker.pending_gaps() == []
