"""The replay exchange: a local Binance spot market-data server fed by a recorded capture.

This module owns the server side of Binance's protocol as the producer sees
it, on one port: WebSocket streams (`/stream?streams=a/b`, `/ws/<stream>`,
server pings with a payload and a pong deadline, `serverShutdown`), the REST
endpoints a client backfills from (`/api/v3/historicalTrades`, `aggTrades`,
`depth`, `time`, `ping`) with Binance's weights, error shape and 429s, and
`/control/*` endpoints that let tests and chaos runs break things on purpose
(drop, stall, missed pongs, forced rate limits, shutdown notices, injected
frames, finishing an endless playback). There is
one global timeline, as on a real exchange: playback starts with the first
WebSocket client (or `/control/start`), every frame goes out at its recorded
time (scaled by `speed`) with its exact recorded bytes, and a late client only
gets what is published after it joined. `start_in_thread` runs it next to
blocking test code; `ReplayClient` drives one running anywhere (`python -m
producer.replay`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import decimal
import email.utils
import http
import json
import logging
import math
import re
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets import http11
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from producer.replay.captures import (
    NS_PER_MS,
    Capture,
    Frame,
    ShiftPlan,
    Snapshot,
    data_bytes,
    plan_shifts,
    shifted,
    shifted_snapshot,
    stream_symbol,
)

log = logging.getLogger(__name__)

MAX_STREAMS = 1024  # per connection, as on Binance
WEIGHT_LIMIT_1M = 6000  # REQUEST_WEIGHT per minute
WEIGHT_WINDOW_S = 60.0
MAX_PAGE = 1000  # historicalTrades / aggTrades limit
HISTORY_LIMIT = 200_000  # trades kept per symbol for REST (endless loops must not grow forever)
CLOSE_TIMEOUT_S = 2.0
MAX_INJECTED = 4 * 2**20  # bytes of one /control/inject frame
# Without a yield now and then, playback at speed=max (or behind schedule) with
# nobody listening would hold the event loop and starve REST and control.
YIELD_EVERY = 64

# 1024 real stream names (`btcusdt@depth20@100ms/` ...) make a request line of
# ~20 KiB, beyond websockets' 8 KiB default; Binance accepts them, so must we.
http11.MAX_LINE_LENGTH = max(http11.MAX_LINE_LENGTH, 64 * 1024)

_STREAM_NAME_RE = re.compile(r"^(?:[a-z0-9]+|![A-Za-z]+)@[A-Za-z0-9_]+(?:@[0-9]+ms|@arr)?$")
# Enough precision that price * qty of two decimal strings is always exact.
_EXACT = decimal.Context(prec=200)


# --- HTTP replies ------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An HTTP answer before it becomes a websockets Response."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def with_headers(self, *headers: tuple[str, str]) -> Reply:
        return Reply(self.status, self.body, self.headers + headers)


def _json(obj: object, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj, separators=(",", ":")).encode())


def _error(code: int, msg: str, status: int = 400) -> Reply:
    """Binance's error shape: {"code": -1121, "msg": "Invalid symbol."}."""
    return _json({"code": code, "msg": msg}, status)


class _Rejected(Exception):
    """A request answered with an error reply instead of data."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.body.decode())
        self.reply = reply


def _params(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _int_param(
    params: Mapping[str, str], name: str, default: int | None, low: int, high: int | None = None
) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if not value.isdigit() or len(value) > 20:
        legal = "'^[0-9]{1,20}$'"
        message = f"Illegal characters found in parameter '{name}'; legal range is {legal}."
        raise _Rejected(_error(-1100, message))
    number = int(value)
    if number < low or (high is not None and number > high):
        raise _Rejected(_error(-1130, f"Data sent for parameter '{name}' is not valid."))
    return number


def _float_param(params: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(params.get(name, default))
    except ValueError:
        raise _Rejected(_error(-1100, f"Parameter '{name}' must be a number.")) from None
    if not math.isfinite(value) or value < 0:
        raise _Rejected(_error(-1130, f"Data sent for parameter '{name}' is not valid."))
    return value


def _depth_weight(params: Mapping[str, str]) -> int:
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        return 5
    for bound, weight in ((100, 5), (500, 25), (1000, 50)):
        if limit <= bound:
            return weight
    return 250


# --- subscriptions -----------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """What a WebSocket URL asks for: stream names, and whether frames come raw (`/ws/`)."""

    streams: frozenset[str]
    raw: bool


class SubscriptionError(ValueError):
    """A stream list Binance would refuse: the handshake is answered with HTTP 400."""


def parse_subscription(path: str) -> Subscription | None:
    """The subscription of `/stream?streams=a/b` or `/ws/a`; None for any other path."""
    split = urlsplit(path)
    if split.path in ("/stream", "/stream/"):
        names = _params(split.query).get("streams", "")
        raw = False
    elif split.path == "/ws" or split.path.startswith("/ws/"):
        names = split.path[len("/ws/") :]
        raw = True
    else:
        return None
    streams = names.split("/") if names else []
    if not streams:
        raise SubscriptionError("No stream requested.")
    if len(streams) > MAX_STREAMS:
        raise SubscriptionError(
            f"Too many streams: {len(streams)} requested, at most {MAX_STREAMS} per connection."
        )
    bad = [s for s in streams if not _STREAM_NAME_RE.match(s)]
    if bad:
        raise SubscriptionError(f"Invalid stream name {bad[0]!r}.")
    return Subscription(frozenset(streams), raw)


# --- state -------------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    """One WebSocket connection. Mutable on purpose: its counters are the status page."""

    id: int
    ws: ServerConnection
    peer: str
    streams: set[str]
    raw: bool
    frames_sent: int = 0
    frames_lost: int = 0  # due while the connection was stalled
    pings_sent: int = 0
    pongs_ok: int = 0
    stalled_until: float = 0.0  # event-loop time
    miss_next_pong: bool = False
    open: bool = True

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "peer": self.peer,
            "open": self.open,
            "raw": self.raw,
            "streams": len(self.streams),
            "frames_sent": self.frames_sent,
            "frames_lost": self.frames_lost,
            "pings_sent": self.pings_sent,
            "pongs_ok": self.pongs_ok,
        }


@dataclass
class _History:
    """Published records of one symbol, ids ascending, already serialised for REST pages."""

    ids: list[int] = field(default_factory=list)
    items: list[bytes] = field(default_factory=list)

    def append(self, record_id: int, item: bytes) -> None:
        self.ids.append(record_id)
        self.items.append(item)
        if len(self.ids) > HISTORY_LIMIT:
            # Drop the oldest half at once: amortised O(1) per record.
            del self.ids[: HISTORY_LIMIT // 2], self.items[: HISTORY_LIMIT // 2]

    def page(self, from_id: int | None, limit: int) -> bytes:
        start = (
            max(0, len(self.ids) - limit)
            if from_id is None
            else bisect.bisect_left(self.ids, from_id)
        )
        return b"[" + b",".join(self.items[start : start + limit]) + b"]"


def _trade_record(data: Mapping[str, Any]) -> tuple[int, bytes]:
    price, qty = data["p"], data["q"]
    quote = _EXACT.multiply(Decimal(price), Decimal(qty))
    record = {
        "id": data["t"],
        "price": price,
        "qty": qty,
        "quoteQty": format(quote, "f"),
        "time": data["T"],
        "isBuyerMaker": data["m"],
        "isBestMatch": data.get("M", True),
    }
    return int(data["t"]), json.dumps(record, separators=(",", ":")).encode()


def _agg_trade_record(data: Mapping[str, Any]) -> tuple[int, bytes]:
    record = {k: data[k] for k in ("a", "p", "q", "f", "l", "T", "m")}
    record["M"] = data.get("M", True)
    return int(data["a"]), json.dumps(record, separators=(",", ":")).encode()


# stream suffix -> REST record of its payload (which history it feeds)
_Recorder = Callable[[Mapping[str, Any]], tuple[int, bytes]]
_RECORDERS: dict[str, _Recorder] = {
    "trade": _trade_record,
    "aggTrade": _agg_trade_record,
}


# --- the exchange ------------------------------------------------------------


Handler = Callable[[Mapping[str, str]], Reply]


@dataclass(frozen=True)
class _Endpoint:
    handler: Handler
    weight: Callable[[Mapping[str, str]], int]
    data: bool  # market data: subject to /control/rate-limit


class ReplayExchange:
    """Serves one capture as Binance would; run it with `run()` or `start_in_thread()`."""

    def __init__(
        self,
        capture: Capture,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float | None = 1.0,
        loops: int = 1,
        ping_interval: float = 20.0,
        pong_timeout: float = 60.0,
        start_on_connect: bool = True,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be positive or None (as fast as possible), got {speed}")
        if loops < 0:
            raise ValueError(f"loops must be 0 (forever) or more, got {loops}")
        if not ping_interval > 0 or not pong_timeout > 0:
            raise ValueError("ping_interval and pong_timeout must be positive")
        if not capture.frames:
            raise ValueError("the capture has no frames")
        self.capture = capture
        self.host = host
        self.port = port
        self.speed = speed
        self.loops = loops
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.start_on_connect = start_on_connect

        # One timeline of frames and snapshots; sorted() is stable, so a
        # snapshot recorded at the same ns as a frame comes after it.
        self._timeline: list[Frame | Snapshot] = sorted(
            [*capture.frames, *capture.snapshots], key=lambda item: item.recv_ns
        )
        self._base_ns = self._timeline[0].recv_ns
        self._plan: ShiftPlan | None = plan_shifts(capture) if loops != 1 else None
        self._symbols = {s for f in capture.frames if (s := stream_symbol(f.stream))} | {
            s.symbol for s in capture.snapshots if s.symbol
        }
        self._first_snapshot: dict[str, Snapshot] = {}
        for snapshot in capture.snapshots:
            if snapshot.symbol:
                self._first_snapshot.setdefault(snapshot.symbol, snapshot)

        self._clients: dict[int, _Client] = {}
        self._closed_clients: deque[_Client] = deque(maxlen=100)
        self._next_client_id = 1
        self._histories: dict[str, dict[str, _History]] = {kind: {} for kind in _RECORDERS}
        self._depth: dict[str, Snapshot] = {}
        self._weights: deque[tuple[float, int]] = deque()
        self._weight_used = 0
        self._forced_429 = 0
        self._forced_retry_after = 0
        self.frames_published = 0
        self.loops_done = 0
        self.rest_requests = 0
        self.rate_limited = 0
        self.done = False
        self.finishing = False  # /control/finish: the current loop is the last
        self._clock_ns = self._base_ns
        self._t0: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._endpoints: dict[tuple[str, str], _Endpoint] = {
            ("GET", "/api/v3/ping"): _Endpoint(lambda p: _json({}), lambda p: 1, False),
            ("GET", "/api/v3/time"): _Endpoint(
                lambda p: _json({"serverTime": self.clock_ms()}), lambda p: 1, False
            ),
            ("GET", "/api/v3/historicalTrades"): _Endpoint(
                self._historical_trades, lambda p: 25, True
            ),
            ("GET", "/api/v3/aggTrades"): _Endpoint(self._agg_trades, lambda p: 4, True),
            ("GET", "/api/v3/depth"): _Endpoint(self._depth_snapshot, _depth_weight, True),
        }
        self._controls: dict[tuple[str, str], Handler] = {
            ("POST", "/control/start"): self._control_start,
            ("POST", "/control/drop"): self._control_drop,
            ("POST", "/control/shutdown"): self._control_shutdown,
            ("POST", "/control/stall"): self._control_stall,
            ("POST", "/control/miss-pongs"): self._control_miss_pongs,
            ("POST", "/control/rate-limit"): self._control_rate_limit,
            ("POST", "/control/inject"): self._control_inject,
            ("POST", "/control/finish"): self._control_finish,
            ("GET", "/control/status"): lambda p: _json(self.status()),
        }

    # -- lifecycle --

    async def run(self, ready: Callable[[ReplayExchange], None] | None = None) -> None:
        """Serve until `request_stop()`; `ready` is called once the port is bound."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            # Our own keepalive below: Binance's ping/pong rules, and a pong
            # the control endpoint can make go missing.
            ping_interval=None,
            close_timeout=CLOSE_TIMEOUT_S,
            max_size=2**20,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            player = self._spawn(self._play())
            log.info("replay exchange listening on %s:%d", self.host, self.port)
            if ready is not None:
                ready(self)
            await self._stop.wait()
            log.info("replay exchange stopping")
            player.cancel()
            for task in list(self._tasks):
                task.cancel()
            # A close cancelled above may leave its connection half-closed with
            # nobody enforcing the close timeout: end those now. Leaving `serve`
            # closes the open ones (1001) and waits for their handlers.
            for client in list(self._clients.values()):
                if client.ws.state is not State.OPEN:
                    client.ws.transport.abort()

    def request_stop(self) -> None:
        """Ask `run()` to return; safe to call from any thread, more than once."""
        loop, stop = self._loop, self._stop
        if loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(stop.set)

    def start(self) -> None:
        """Start the timeline now (idempotent)."""
        if self._started is not None and not self._started.is_set():
            log.info("playback starts: %d frames per loop", len(self.capture.frames))
            self._started.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the timeline --

    def clock_ms(self) -> int:
        """Replay time: the capture's receive clock as far as playback has gone."""
        loop = self._loop
        if self.speed is None or self._t0 is None or loop is None:
            return self._clock_ns // NS_PER_MS
        elapsed_ns = int((loop.time() - self._t0) * self.speed * 1e9)
        return max(self._clock_ns, self._base_ns + elapsed_ns) // NS_PER_MS

    async def _play(self) -> None:
        assert self._started is not None
        await self._started.wait()
        loop = asyncio.get_running_loop()
        self._t0 = t0 = loop.time()
        loop_index = 0
        while (self.loops == 0 or loop_index < self.loops) and not (
            self.finishing and loop_index > 0
        ):
            for count, item in enumerate(self._timeline, start=1):
                item = self._shift(item, loop_index)
                if self.speed is not None:
                    delay = t0 + (item.recv_ns - self._base_ns) / 1e9 / self.speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                self._clock_ns = max(self._clock_ns, item.recv_ns)
                if isinstance(item, Frame):
                    await self._publish(item)
                else:
                    self._publish_snapshot(item)
            loop_index += 1
            self.loops_done = loop_index
            log.info("loop %d done: %d frames published", loop_index, self.frames_published)
        self.done = True

    def _shift(self, item: Frame | Snapshot, loop_index: int) -> Frame | Snapshot:
        if loop_index == 0 or self._plan is None:
            return item
        if isinstance(item, Frame):
            return shifted(item, loop_index, self._plan)
        return shifted_snapshot(item, loop_index, self._plan)

    def _publish_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.symbol:
            self._depth[snapshot.symbol] = snapshot

    async def _publish(self, frame: Frame) -> None:
        self.frames_published += 1
        recorder = _RECORDERS.get(frame.stream.partition("@")[2])
        if recorder is not None:
            self._record(frame, recorder)
        await self._broadcast(frame)

    def _record(
        self, frame: Frame, recorder: Callable[[Mapping[str, Any]], tuple[int, bytes]]
    ) -> None:
        symbol = stream_symbol(frame.stream)
        try:
            record_id, item = recorder(json.loads(frame.raw)["data"])
        except (KeyError, TypeError, ValueError, decimal.InvalidOperation) as exc:
            log.warning("frame of %s not kept for REST: %r", frame.stream, exc)
            return
        if symbol is not None:
            kind = frame.stream.partition("@")[2]
            self._histories[kind].setdefault(symbol, _History()).append(record_id, item)

    async def _broadcast(self, frame: Frame) -> None:
        now = asyncio.get_running_loop().time()
        payload: bytes | None = None
        for client in list(self._clients.values()):
            if frame.stream not in client.streams:
                continue
            if client.stalled_until > now:
                client.frames_lost += 1
                continue
            if client.raw:
                payload = payload if payload is not None else data_bytes(frame)
                message = payload
            else:
                message = frame.raw
            try:
                # Awaiting each send is the backpressure: at speed=max a
                # single client sees every frame instead of a full buffer.
                await client.ws.send(message, text=True)
            except ConnectionClosed:
                continue
            client.frames_sent += 1

    # -- WebSocket connections --

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        subscription = parse_subscription(ws.request.path)
        assert subscription is not None  # _process_request let only these through
        client = _Client(
            id=self._next_client_id,
            ws=ws,
            peer=f"{ws.remote_address[0]}:{ws.remote_address[1]}",
            streams=set(subscription.streams),
            raw=subscription.raw,
        )
        self._next_client_id += 1
        self._clients[client.id] = client
        log.info(
            "client %d connected from %s: %d streams (%s)%s",
            client.id,
            client.peer,
            len(client.streams),
            ",".join(sorted(client.streams)[:5]),
            " raw" if client.raw else "",
        )
        if self.start_on_connect:
            self.start()
        keepalive = self._spawn(self._keepalive(client))
        try:
            async for message in ws:
                await self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            keepalive.cancel()
            client.open = False
            self._clients.pop(client.id, None)
            self._closed_clients.append(client)
            log.info(
                "client %d disconnected (close code %s): %d frames sent, %d lost",
                client.id,
                ws.close_code,
                client.frames_sent,
                client.frames_lost,
            )

    async def _on_message(self, client: _Client, message: str | bytes) -> None:
        """SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, answered like Binance."""
        try:
            request = json.loads(message)
            method, request_id = request["method"], request.get("id")
            params = request.get("params", [])
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise TypeError("params must be a list of stream names")
        except (ValueError, KeyError, TypeError, AttributeError):
            await client.ws.send(json.dumps({"error": {"code": 2, "msg": "Invalid request"}}))
            return
        action = _METHODS.get(method)
        answer: dict[str, Any]
        if action is None:
            answer = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}}
        else:
            try:
                answer = {"result": action(client, params)}
            except SubscriptionError as exc:
                answer = {"error": {"code": 2, "msg": f"Invalid request: {exc}"}}
        answer["id"] = request_id
        await client.ws.send(json.dumps(answer))

    async def _keepalive(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            # A stalled connection gets nothing, pings included.
            stall = client.stalled_until - loop.time()
            if stall > 0:
                await asyncio.sleep(stall)
            payload = struct.pack(">Q", time.time_ns())
            try:
                waiter = asyncio.ensure_future(await client.ws.ping(payload))
            except ConnectionClosed:
                return
            # Retrieve the outcome even if nobody awaits it (missed pong, close).
            waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
            client.pings_sent += 1
            miss, client.miss_next_pong = client.miss_next_pong, False
            self._spawn(self._await_pong(client, waiter, miss))

    async def _await_pong(self, client: _Client, waiter: asyncio.Future[float], miss: bool) -> None:
        try:
            if miss:
                await asyncio.sleep(self.pong_timeout)
            else:
                await asyncio.wait_for(asyncio.shield(waiter), self.pong_timeout)
                client.pongs_ok += 1
                return
        except TimeoutError:
            pass
        except ConnectionClosed:
            return
        if client.open:
            log.warning("client %d: no pong within %.1f s, closing", client.id, self.pong_timeout)
            await client.ws.close(1008, "pong timeout")

    # -- HTTP --

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        try:
            if parse_subscription(request.path) is not None:
                return None  # a WebSocket handshake: websockets takes it from here
        except SubscriptionError as exc:
            log.info("handshake refused: %s", exc)
            return _response(_error(-1121 if "name" in str(exc) else -1101, str(exc)))
        params = _params(split.query)
        key = (request.method, split.path)
        endpoint = self._endpoints.get(key)
        if endpoint is not None:
            return _response(self._api(endpoint, params))
        control = self._controls.get(key)
        try:
            if control is not None:
                return _response(control(params))
        except _Rejected as exc:
            return _response(exc.reply)
        known = {path for _method, path in (*self._endpoints, *self._controls)}
        if split.path in known:
            return _response(_error(-1014, "Unsupported method.", 405))
        return _response(_error(-1000, f"Unknown path {split.path}.", 404))

    def _api(self, endpoint: _Endpoint, params: Mapping[str, str]) -> Reply:
        self.rest_requests += 1
        if endpoint.data and self._forced_429 > 0:
            self._forced_429 -= 1
            return self._too_many(self._forced_retry_after)
        now = asyncio.get_running_loop().time()
        while self._weights and self._weights[0][0] <= now - WEIGHT_WINDOW_S:
            self._weight_used -= self._weights.popleft()[1]
        weight = endpoint.weight(params)
        if self._weight_used + weight > WEIGHT_LIMIT_1M:
            oldest = self._weights[0][0] if self._weights else now
            return self._too_many(max(1, math.ceil(oldest + WEIGHT_WINDOW_S - now)))
        self._weights.append((now, weight))
        self._weight_used += weight
        try:
            reply = endpoint.handler(params)
        except _Rejected as exc:
            reply = exc.reply
        return reply.with_headers(("X-MBX-USED-WEIGHT-1M", str(self._weight_used)))

    def _too_many(self, retry_after: int) -> Reply:
        self.rate_limited += 1
        return _error(
            -1003,
            f"Too much request weight used; current limit is {WEIGHT_LIMIT_1M} request weight "
            "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
            429,
        ).with_headers(
            ("Retry-After", str(retry_after)),
            ("X-MBX-USED-WEIGHT-1M", str(self._weight_used)),
        )

    def _symbol(self, params: Mapping[str, str]) -> str:
        symbol = params.get("symbol", "")
        if not symbol:
            raise _Rejected(
                _error(
                    -1102,
                    "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                )
            )
        if symbol not in self._symbols:
            raise _Rejected(_error(-1121, "Invalid symbol."))
        return symbol

    def _page(self, kind: str, params: Mapping[str, str]) -> Reply:
        symbol = self._symbol(params)
        limit = _int_param(params, "limit", 500, 1, MAX_PAGE)
        from_id = _int_param(params, "fromId", None, 0)
        assert limit is not None
        history = self._histories[kind].get(symbol, _History())
        return Reply(200, history.page(from_id, limit))

    def _historical_trades(self, params: Mapping[str, str]) -> Reply:
        return self._page("trade", params)

    def _agg_trades(self, params: Mapping[str, str]) -> Reply:
        return self._page("aggTrade", params)

    def _depth_snapshot(self, params: Mapping[str, str]) -> Reply:
        symbol = self._symbol(params)
        limit = _int_param(params, "limit", 100, 1, 5000)
        assert limit is not None
        # Before the first recorded snapshot is due, serve it early: a snapshot
        # a little ahead of the stream is what a real client usually gets.
        snapshot = self._depth.get(symbol) or self._first_snapshot.get(symbol)
        if snapshot is None:
            log.warning("depth for %s asked, but the capture has no snapshot of it", symbol)
            raise _Rejected(_error(-1121, "Invalid symbol."))
        book = json.loads(snapshot.raw)
        book["bids"], book["asks"] = book["bids"][:limit], book["asks"][:limit]
        return _json(book)

    # -- control --

    def _control_start(self, params: Mapping[str, str]) -> Reply:
        self.start()
        return _json({"started": True})

    def _control_drop(self, params: Mapping[str, str]) -> Reply:
        clients = list(self._clients.values())
        for client in clients:
            log.warning("client %d dropped on request (transport abort)", client.id)
            client.ws.transport.abort()
        return _json({"dropped": len(clients)})

    def _control_shutdown(self, params: Mapping[str, str]) -> Reply:
        grace = _float_param(params, "grace", 5.0)
        clients = list(self._clients.values())
        for client in clients:
            self._spawn(self._shutdown_one(client, grace))
        return _json({"notified": len(clients), "grace": grace})

    async def _shutdown_one(self, client: _Client, grace: float) -> None:
        event = {"e": "serverShutdown", "E": self.clock_ms()}
        message = event if client.raw else {"stream": "!serverShutdown", "data": event}
        log.info("client %d: serverShutdown, closing in %.1f s", client.id, grace)
        try:
            await client.ws.send(json.dumps(message, separators=(",", ":")))
            await asyncio.wait_for(client.ws.wait_closed(), grace)
        except TimeoutError:
            await client.ws.close(1001, "server shutdown")
        except ConnectionClosed:
            pass

    def _control_stall(self, params: Mapping[str, str]) -> Reply:
        seconds = _float_param(params, "seconds", 10.0)
        until = asyncio.get_running_loop().time() + seconds
        for client in self._clients.values():
            client.stalled_until = max(client.stalled_until, until)
        log.warning("stalling %d connections for %.1f s", len(self._clients), seconds)
        return _json({"stalled": len(self._clients), "seconds": seconds})

    def _control_miss_pongs(self, params: Mapping[str, str]) -> Reply:
        for client in self._clients.values():
            client.miss_next_pong = True
        return _json({"connections": len(self._clients)})

    def _control_rate_limit(self, params: Mapping[str, str]) -> Reply:
        count = _int_param(params, "count", 1, 0)
        retry_after = _int_param(params, "retry_after", 1, 0)
        assert count is not None and retry_after is not None
        self._forced_429, self._forced_retry_after = count, retry_after
        return _json({"count": count, "retry_after": retry_after})

    def _control_inject(self, params: Mapping[str, str]) -> Reply:
        """Send `frame_hex` (any bytes, even invalid UTF-8) as a text frame to every client.

        `pad_hex` repeated `pad_count` times is appended: a frame of 1 MB does
        not fit in a request line. For bad-input tests: a real exchange never
        sends these, a broken proxy might.
        """
        pad_count = _int_param(params, "pad_count", 0, 0)
        try:
            frame = bytes.fromhex(params.get("frame_hex", ""))
            pad = bytes.fromhex(params.get("pad_hex", ""))
        except ValueError:
            return _error(-1100, "frame_hex and pad_hex must be hexadecimal")
        frame += pad * (pad_count or 0)
        if len(frame) > MAX_INJECTED:
            return _error(-1100, f"an injected frame is at most {MAX_INJECTED} bytes")
        clients = list(self._clients.values())
        for client in clients:
            self._spawn(self._send_injected(client, frame))
        return _json({"sent_to": len(clients), "bytes": len(frame)})

    def _control_finish(self, params: Mapping[str, str]) -> Reply:
        """End playback after the loop being played (an endless one, or one of `loops`)."""
        self.finishing = True
        return _json({"loops_done": self.loops_done, "done": self.done})

    async def _send_injected(self, client: _Client, frame: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await client.ws.send(frame, text=True)

    def status(self) -> dict[str, Any]:
        return {
            "started": self._started is not None and self._started.is_set(),
            "done": self.done,
            "frames_total": len(self.capture.frames),
            "frames_published": self.frames_published,
            "loops": self.loops,
            "loops_done": self.loops_done,
            "finishing": self.finishing,
            "replay_time_ms": self.clock_ms(),
            # Open connections, oldest first; the last closed ones apart.
            "connections": [c.status() for c in sorted(self._clients.values(), key=_by_id)],
            "closed_connections": [c.status() for c in self._closed_clients],
            "rest_requests": self.rest_requests,
            "rate_limited": self.rate_limited,
            "weight_used_1m": self._weight_used,
        }


def _by_id(client: _Client) -> int:
    return client.id


def _subscribe(client: _Client, params: list[str]) -> None:
    bad = [p for p in params if not _STREAM_NAME_RE.match(p)]
    if bad:
        raise SubscriptionError(f"Invalid stream name {bad[0]!r}.")
    if len(client.streams | set(params)) > MAX_STREAMS:
        raise SubscriptionError(f"At most {MAX_STREAMS} streams per connection.")
    client.streams.update(params)


def _unsubscribe(client: _Client, params: list[str]) -> None:
    client.streams.difference_update(params)


def _list_subscriptions(client: _Client, params: list[str]) -> list[str]:
    return sorted(client.streams)


# WebSocket request method -> action; its return value is the answer's "result"
_METHODS: dict[str, Callable[[_Client, list[str]], list[str] | None]] = {
    "SUBSCRIBE": _subscribe,
    "UNSUBSCRIBE": _unsubscribe,
    "LIST_SUBSCRIPTIONS": _list_subscriptions,
}


def _response(reply: Reply) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(reply.body))),
            *reply.headers,
        ]
    )
    return Response(reply.status, http.HTTPStatus(reply.status).phrase, headers, reply.body)


# --- running next to blocking code -------------------------------------------


class ReplayControlError(RuntimeError):
    """A /control request the exchange refused (or could not be reached for)."""


# Loopback only: an HTTP(S)_PROXY in the environment must not reroute 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ReplayClient:
    """The control and status endpoints of a replay exchange at `url_rest`."""

    def __init__(self, url_rest: str, timeout_s: float = 10.0) -> None:
        self.url_rest = url_rest.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, params: Mapping[str, object]) -> dict[str, Any]:
        query = f"?{urlencode(params)}" if params else ""
        request = urllib.request.Request(
            f"{self.url_rest}{path}{query}", data=b"" if method == "POST" else None, method=method
        )
        try:
            with _DIRECT.open(request, timeout=self.timeout_s) as answer:
                result: dict[str, Any] = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise ReplayControlError(f"{method} {path}: HTTP {exc.code} {exc.read()!r}") from exc
        except OSError as exc:
            raise ReplayControlError(f"{method} {path}: {exc}") from exc
        return result

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/control/status", {})

    def control(self, name: str, **params: object) -> dict[str, Any]:
        """POST /control/<name>: control("stall", seconds=2), control("miss_pongs")."""
        return self._request("POST", f"/control/{name.replace('_', '-')}", params)


class RunningExchange(ReplayClient):
    """A ReplayExchange serving from its own thread; `stop()` (or `with`) ends it."""

    def __init__(self, exchange: ReplayExchange, thread: threading.Thread) -> None:
        super().__init__(f"http://{exchange.host}:{exchange.port}")
        self.exchange = exchange
        self._thread = thread

    @property
    def port(self) -> int:
        return self.exchange.port

    @property
    def url_ws(self) -> str:
        return f"ws://{self.exchange.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread; calling it again does nothing."""
        self.exchange.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise ReplayControlError(f"the replay exchange did not stop within {timeout} s")

    def __enter__(self) -> RunningExchange:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(exchange: ReplayExchange, timeout: float = 10.0) -> RunningExchange:
    """Run `exchange` in a daemon thread with its own event loop; returns once it listens."""
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(exchange.run(ready=lambda _exchange: ready.set()))
        except BaseException as exc:  # reported to the starting thread below
            failure.append(exc)
            log.exception("replay exchange failed")
        finally:
            ready.set()

    thread = threading.Thread(target=main, name="replay-exchange", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        exchange.request_stop()
        raise ReplayControlError(f"the replay exchange did not start within {timeout} s")
    if failure:
        thread.join(timeout)
        raise ReplayControlError(f"the replay exchange failed to start: {failure[0]}") from failure[
            0
        ]
    return RunningExchange(exchange, thread)
