"""The replay exchange against a real WebSocket client (websocket-client) and real HTTP.

Every test starts its own exchange on a free loopback port (port 0), mostly at
speed=max so a test takes as long as the frames take to cross the socket, and
stops it (and closes its clients) before returning. Conditions are awaited with
a deadline, never slept for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websocket

from producer.replay.captures import Capture, data_bytes, read_capture
from producer.replay.exchange import (
    ReplayControlError,
    ReplayExchange,
    RunningExchange,
    start_in_thread,
)

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "producer" / "replay" / "captures"
AGG_TRADES = Path(
    "/work/shared/data/binance/trades_vs_klines/XRPETH_2019-10-11/"
    "XRPETH-aggTrades-2019-10-11T000011_2019-10-13T111928.csv.gz"
)
DEADLINE_S = 10.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def btc() -> Capture:
    return read_capture(CAPTURES / "spot_btcusdt_20240808.gz")


@pytest.fixture(scope="module")
def btc_head(btc: Capture) -> Capture:
    """The first ~80 s of the BTCUSDT capture: quicker where the whole file adds nothing."""
    return Capture(btc.frames[:8000], btc.snapshots, btc.sources)


@contextmanager
def exchange(capture: Capture, **options: Any) -> Iterator[RunningExchange]:
    options.setdefault("speed", None)
    with start_in_thread(ReplayExchange(capture, **options)) as running:
        yield running


@contextmanager
def clients(running: RunningExchange, *paths: str) -> Iterator[list[websocket.WebSocket]]:
    with ExitStack() as stack:
        sockets = []
        for path in paths:
            ws = websocket.create_connection(running.url_ws + path, timeout=DEADLINE_S)
            stack.callback(ws.close, timeout=1)
            sockets.append(ws)
        yield sockets


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def connection(running: RunningExchange, index: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = running.status()["connections"][index]
    return result


def receive(ws: websocket.WebSocket, count: int) -> list[bytes]:
    messages = [ws.recv() for _ in range(count)]
    return [m.encode() if isinstance(m, str) else m for m in messages]


def read_until_close(ws: websocket.WebSocket) -> int:
    """Read (answering pings) until the server's close frame; its close code."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            # websocket-client answered the close frame; end the TCP side too,
            # as a client does, instead of waiting for the server's timeout.
            ws.shutdown()  # type: ignore[no-untyped-call]
            return int.from_bytes(frame.data[:2], "big")
    raise AssertionError("the server did not close the connection")


def get(running: RunningExchange, path: str) -> tuple[int, dict[str, str], Any]:
    try:
        with _DIRECT.open(running.url_rest + path, timeout=DEADLINE_S) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


# --- streams -----------------------------------------------------------------


def test_trade_subscriber_gets_every_trade_frame_byte_identical_in_order(btc: Capture) -> None:
    expected = [f.raw for f in btc.frames if f.stream == "btcusdt@trade"]
    with exchange(btc) as running, clients(running, "/stream?streams=btcusdt@trade") as [ws]:
        assert receive(ws, len(expected)) == expected
        wait_until(lambda: running.status()["done"], "the end of playback")
        status = running.status()
        assert status["frames_total"] == status["frames_published"] == len(btc.frames)
        assert status["loops_done"] == 1
        assert connection(running)["frames_sent"] == len(expected)


def test_combined_subscription_gets_only_its_streams_and_raw_gets_the_data(
    btc_head: Capture,
) -> None:
    wanted = {"btcusdt@trade", "btcusdt@depth@100ms"}
    combined = [f.raw for f in btc_head.frames if f.stream in wanted]
    raw = [data_bytes(f) for f in btc_head.frames if f.stream == "btcusdt@bookTicker"]
    with (
        exchange(btc_head, start_on_connect=False) as running,
        clients(
            running, "/stream?streams=btcusdt@trade/btcusdt@depth@100ms", "/ws/btcusdt@bookTicker"
        ) as [ws_combined, ws_raw],
    ):
        assert not running.status()["started"]
        running.control("start")
        assert receive(ws_combined, len(combined)) == combined
        assert receive(ws_raw, len(raw)) == raw
        wait_until(lambda: running.status()["done"], "the end of playback")
        sent = [c["frames_sent"] for c in running.status()["connections"]]
        assert sent == [len(combined), len(raw)]


def test_late_client_only_gets_frames_from_then_on(btc_head: Capture) -> None:
    trades = sum(1 for f in btc_head.frames if f.stream == "btcusdt@trade")
    with exchange(btc_head) as running:
        with clients(running, "/stream?streams=btcusdt@trade") as [first]:
            receive(first, trades)
            wait_until(lambda: running.status()["done"], "the end of playback")
        with clients(running, "/stream?streams=btcusdt@trade"):
            wait_until(lambda: len(running.status()["closed_connections"]) == 1, "the first gone")
            wait_until(lambda: len(running.status()["connections"]) == 1, "the late client")
            assert connection(running)["frames_sent"] == 0


def test_subscribe_and_list_over_the_connection(btc_head: Capture) -> None:
    with (
        exchange(btc_head, start_on_connect=False) as running,
        clients(running, "/stream?streams=btcusdt@trade") as [ws],
    ):
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1}))
        assert json.loads(ws.recv()) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert json.loads(ws.recv()) == {
            "result": ["btcusdt@bookTicker", "btcusdt@trade"],
            "id": 2,
        }


def test_server_ping_answered_by_the_client_counts_in_pongs_ok(btc_head: Capture) -> None:
    with (
        exchange(btc_head, start_on_connect=False, ping_interval=0.05) as running,
        clients(running, "/stream?streams=btcusdt@trade") as [ws],
    ):
        opcode, frame = ws.recv_data_frame(control_frame=True)  # websocket-client pongs it
        assert opcode == websocket.ABNF.OPCODE_PING and len(frame.data) == 8
        wait_until(lambda: connection(running)["pongs_ok"] >= 1, "an answered ping")
        assert connection(running)["pings_sent"] >= 1


def test_missed_pong_closes_the_connection_after_pong_timeout(btc_head: Capture) -> None:
    with (
        exchange(btc_head, start_on_connect=False, ping_interval=0.05, pong_timeout=0.3) as running,
        clients(running, "/stream?streams=btcusdt@trade") as [ws],
    ):
        ws.recv_data_frame(control_frame=True)
        wait_until(lambda: connection(running)["pongs_ok"] >= 1, "an answered ping")
        assert running.control("miss_pongs") == {"connections": 1}
        started = time.monotonic()
        assert read_until_close(ws) == 1008
        assert time.monotonic() - started >= 0.25
        wait_until(lambda: running.status()["connections"] == [], "the server to drop it")
        (closed,) = running.status()["closed_connections"]
        assert closed["open"] is False and closed["pongs_ok"] >= 1


def test_more_than_1024_streams_or_a_bad_list_is_refused_with_400(btc_head: Capture) -> None:
    names = [f"sym{i}usdt@depth20@100ms" for i in range(1025)]
    with exchange(btc_head, start_on_connect=False) as running:
        for query, code in (
            ("/".join(names), -1101),
            ("", -1101),
            ("BTCUSDT@trade", -1121),
            ("btcusdt@trade//btcusdt@bookTicker", -1121),
        ):
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(f"{running.url_ws}/stream?streams={query}", timeout=5)
            assert refused.value.status_code == 400
            assert refused.value.resp_body is not None
            assert json.loads(refused.value.resp_body)["code"] == code
        with clients(running, "/stream?streams=" + "/".join(names[:1024])):
            wait_until(lambda: running.status()["connections"][0]["streams"] == 1024, "1024")


def test_loops_continue_ids_and_times_and_feed_rest(btc_head: Capture) -> None:
    trades = [f for f in btc_head.frames if f.stream == "btcusdt@trade"]
    with (
        exchange(btc_head, loops=2) as running,
        clients(running, "/stream?streams=btcusdt@trade") as [ws],
    ):
        received = [json.loads(m)["data"] for m in receive(ws, 2 * len(trades))]
        assert [json.dumps(d, separators=(",", ":")).encode() for d in received[: len(trades)]] == [
            data_bytes(f) for f in trades
        ]
        ids = [d["t"] for d in received]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # loop 1 continues loop 0
        minute = 60_000
        shift = received[len(trades)]["T"] - received[0]["T"]
        assert shift > 0 and shift % minute == 0
        wait_until(lambda: running.status()["done"], "the end of both loops")
        assert running.status()["loops_done"] == 2
        latest = get(running, "/api/v3/historicalTrades?symbol=BTCUSDT&limit=1")[2]
        assert latest[0]["id"] == ids[-1]


def test_speed_spaces_frames_by_their_recorded_times(btc: Capture) -> None:
    # The whole capture spans ~346 s of receive time: at 1000x, ~0.35 s.
    span_s = (btc.frames[-1].recv_ns - btc.frames[0].recv_ns) / 1e9
    with exchange(btc, speed=1000.0, start_on_connect=False) as running:
        started = time.monotonic()
        running.control("start")
        wait_until(lambda: running.status()["done"], "the end of playback")
        assert time.monotonic() - started >= span_s / 1000 * 0.9


# --- chaos controls ----------------------------------------------------------


def test_drop_aborts_connections_without_a_close_frame(btc_head: Capture) -> None:
    with (
        exchange(btc_head, start_on_connect=False) as running,
        clients(running, "/stream?streams=btcusdt@trade", "/ws/btcusdt@trade") as sockets,
    ):
        assert running.control("drop") == {"dropped": 2}
        for ws in sockets:
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
                ws.recv_data_frame(control_frame=True)
        wait_until(lambda: len(running.status()["closed_connections"]) == 2, "both gone")
        assert running.status()["connections"] == []


def test_shutdown_announces_server_shutdown_then_closes_after_grace(btc_head: Capture) -> None:
    with (
        exchange(btc_head, start_on_connect=False) as running,
        clients(running, "/stream?streams=btcusdt@trade", "/ws/btcusdt@trade") as [combined, raw],
    ):
        assert running.control("shutdown", grace=0.2)["notified"] == 2
        notice = json.loads(combined.recv())
        assert notice["stream"] == "!serverShutdown"
        assert notice["data"]["e"] == "serverShutdown"
        assert isinstance(notice["data"]["E"], int)
        assert json.loads(raw.recv()) == notice["data"]
        assert read_until_close(combined) == 1001
        assert read_until_close(raw) == 1001


def test_stall_loses_the_frames_due_for_the_stalled_connection(btc_head: Capture) -> None:
    trades = [f.raw for f in btc_head.frames if f.stream == "btcusdt@trade"]
    with (
        exchange(btc_head, start_on_connect=False, ping_interval=0.05) as running,
        clients(running, "/stream?streams=btcusdt@trade"),  # the stalled one
    ):
        assert running.control("stall", seconds=60)["stalled"] == 1
        with clients(running, "/stream?streams=btcusdt@trade") as [fresh]:
            running.control("start")
            assert receive(fresh, len(trades)) == trades  # opened during the stall
            wait_until(lambda: running.status()["done"], "the end of playback")
            opcode, _ = fresh.recv_data_frame(control_frame=True)  # pinged, and answers
            assert opcode == websocket.ABNF.OPCODE_PING
            wait_until(lambda: connection(running, 1)["pongs_ok"] >= 1, "the fresh one's pong")
            status = running.status()["connections"]
            assert status[0]["open"] and status[0]["frames_sent"] == 0
            assert status[0]["frames_lost"] == len(trades)
            assert status[0]["pings_sent"] == 0  # nothing at all, pings included
            assert status[1]["frames_lost"] == 0


def test_inject_sends_padded_bytes_as_they_are(btc_head: Capture) -> None:
    """A 1 MB frame of invalid UTF-8 reaches the client byte for byte (a broken proxy)."""
    with exchange(btc_head, start_on_connect=False) as running:
        ws = websocket.create_connection(
            running.url_ws + "/stream?streams=btcusdt@trade",
            timeout=DEADLINE_S,
            skip_utf8_validation=True,
        )
        try:
            sent = running.control(
                "inject", frame_hex=b'{"x":'.hex(), pad_hex="ff01", pad_count=2**19
            )
            assert sent == {"sent_to": 1, "bytes": 5 + 2**20}
            opcode, data = ws.recv_data()
            assert opcode == websocket.ABNF.OPCODE_TEXT and data == b'{"x":' + b"\xff\x01" * 2**19
        finally:
            ws.close(timeout=1)
        with pytest.raises(ReplayControlError, match="at most"):
            running.control("inject", pad_hex="00", pad_count=5 * 2**20)


def test_finish_ends_an_endless_playback_after_the_current_loop(btc_head: Capture) -> None:
    head = Capture(btc_head.frames[:500], btc_head.snapshots, btc_head.sources)
    with exchange(head, loops=0, speed=20.0) as running:
        running.control("start")
        wait_until(lambda: running.status()["loops_done"] >= 1, "a first loop")
        assert running.control("finish")["done"] is False
        wait_until(lambda: running.status()["done"], "the end of playback")
        status = running.status()
        assert status["finishing"] and status["frames_published"] == status["loops_done"] * 500


# --- REST --------------------------------------------------------------------


def test_historical_trades_and_depth_shapes_paging_and_errors(btc_head: Capture) -> None:
    trades = [json.loads(f.raw)["data"] for f in btc_head.frames if f.stream == "btcusdt@trade"]
    first_id = trades[0]["t"]
    with exchange(btc_head, start_on_connect=False) as running:
        # Nothing published yet: no trades, but the recorded snapshot is served early.
        assert get(running, "/api/v3/historicalTrades?symbol=BTCUSDT")[2] == []
        running.control("start")
        wait_until(lambda: running.status()["done"], "the end of playback")

        status, headers, page = get(
            running, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={first_id}&limit=2"
        )
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "50"
        t = trades[0]
        assert page[0] == {
            "id": t["t"],
            "price": t["p"],
            "qty": t["q"],
            "quoteQty": page[0]["quoteQty"],
            "time": t["T"],
            "isBuyerMaker": t["m"],
            "isBestMatch": t["M"],
        }
        assert Decimal(page[0]["quoteQty"]) == Decimal(t["p"]) * Decimal(t["q"])
        assert [p["id"] for p in page] == [first_id, first_id + 1]
        next_page = get(
            running, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={first_id + 2}&limit=3"
        )[2]
        assert [p["id"] for p in next_page] == [first_id + 2, first_id + 3, first_id + 4]
        latest = get(running, "/api/v3/historicalTrades?symbol=BTCUSDT")[2]
        assert len(latest) == 500 and latest[-1]["id"] == trades[-1]["t"]

        _, _, book = get(running, "/api/v3/depth?symbol=BTCUSDT&limit=5")
        recorded = json.loads(btc_head.snapshots[0].raw)
        assert book == {
            "lastUpdateId": recorded["lastUpdateId"],
            "bids": recorded["bids"][:5],
            "asks": recorded["asks"][:5],
        }
        assert get(running, "/api/v3/aggTrades?symbol=BTCUSDT")[2] == []

        for path, status_code, code in (
            ("/api/v3/historicalTrades?symbol=ETHUSDT", 400, -1121),
            ("/api/v3/depth?symbol=XRPETH", 400, -1121),
            ("/api/v3/historicalTrades", 400, -1102),
            ("/api/v3/historicalTrades?symbol=BTCUSDT&limit=1001", 400, -1130),
            ("/api/v3/aggTrades?symbol=BTCUSDT&fromId=x", 400, -1100),
            ("/api/v3/nope", 404, -1000),
        ):
            status, _, body = get(running, path)
            assert (status, body["code"]) == (status_code, code), path
        assert get(running, "/api/v3/ping")[2] == {}
        server_time = get(running, "/api/v3/time")[2]["serverTime"]
        assert server_time == btc_head.frames[-1].recv_ns // 1_000_000


@pytest.mark.skipif(not AGG_TRADES.exists(), reason="shared Binance fixtures absent")
def test_agg_trades_pages_by_from_id() -> None:
    capture = read_capture(AGG_TRADES)
    first = json.loads(capture.frames[0].raw)["data"]
    with exchange(capture, start_on_connect=False) as running:
        running.control("start")
        wait_until(lambda: running.status()["done"], "the end of playback")
        _, headers, page = get(
            running, f"/api/v3/aggTrades?symbol=XRPETH&fromId={first['a']}&limit=1000"
        )
        assert headers["X-MBX-USED-WEIGHT-1M"] == "4"
        assert len(page) == 1000
        assert page[0] == {k: first[k] for k in ("a", "p", "q", "f", "l", "T", "m", "M")}
        assert [p["a"] for p in page] == list(range(first["a"], first["a"] + 1000))
        assert len(get(running, "/api/v3/aggTrades?symbol=XRPETH")[2]) == 500


def test_rate_limit_control_and_request_weight_give_429_with_retry_after(
    btc_head: Capture,
) -> None:
    with exchange(btc_head, start_on_connect=False) as running:
        running.control("rate_limit", count=2, retry_after=7)
        for _ in range(2):
            status, headers, body = get(running, "/api/v3/historicalTrades?symbol=BTCUSDT")
            assert (status, headers["Retry-After"], body["code"]) == (429, "7", -1003)
        assert get(running, "/api/v3/ping")[0] == 200
        # The ping weighed 1, so 239 requests of 25 fit in the minute's 6000 and
        # the 240th does not.
        for _ in range(239):
            assert get(running, "/api/v3/historicalTrades?symbol=BTCUSDT&limit=1")[0] == 200
        status, headers, _ = get(running, "/api/v3/historicalTrades?symbol=BTCUSDT&limit=1")
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        assert headers["X-MBX-USED-WEIGHT-1M"] == "5976"
        assert get(running, "/api/v3/ping")[0] == 200  # weight 1 still fits
        status_page = running.status()
        assert status_page["rate_limited"] == 3
        assert status_page["rest_requests"] == 2 + 1 + 239 + 1 + 1


# --- command line ------------------------------------------------------------


def test_cli_prints_its_urls_and_exits_0_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "producer.replay", "--port", "0", "--speed", "max"]
    bad = subprocess.run(
        [*command, "--capture", str(CAPTURES / "absent.gz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "absent.gz" in bad.stderr
    bad = subprocess.run([*command, "--speed", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "speed" in bad.stderr

    process = subprocess.Popen(
        [*command, "--capture", str(CAPTURES / "BINANCE.ws.1.0.gz")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("replay exchange: ws://127.0.0.1:") and "rest: http://" in line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
