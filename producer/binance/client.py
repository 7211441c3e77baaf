"""WebSocket connections to Binance's combined streams, and the policy that keeps them up.

`Connection` is one WebSocket in its own thread: it answers pings with a pong
echoing the payload (websocket-client does this inside `recv_data`), hands
every data frame's bytes to the frame handler with the receive time, and ends
with a cause: `closed` by the server, `error` on the network, `silent` when
no data frame came for `watchdog_silence_s`, or the cause it was stopped with.

`StreamClient` supervises one connection per stream group:
- reconnects with capped exponential backoff and full jitter, and never more
  than `max_attempts_per_5min` attempts in any 5 minutes (Binance: 300/IP);
- `serverShutdown`, and a connection older than `rollover_after_s` (Binance
  cuts at 24 h), are handled make-before-break: the new connection opens
  first, the old one closes once the new one delivers data, and frames seen
  on both during the overlap are de-duplicated by the caller (`in_overlap`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websocket

from producer.binance.streams import StreamGroup
from producer.metrics import ProducerMetrics
from streaming_jobs.common.settings import ProducerSettings

log = logging.getLogger(__name__)

FrameHandler = Callable[[bytes, int, "Connection"], None]
_DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)
# How often a blocked recv wakes up to check the stop flag and the watchdog.
_POLL_S = 0.5
# How long frames are de-duplicated after an overlap ends (in-flight frames).
_OVERLAP_TAIL_S = 5.0
# A successor normally takes over as soon as both connections carried the same
# frame (then nothing can fall between them); on quiet streams, after this.
_CATCH_UP_TIMEOUT_S = 10.0


class _ReadAheadWebSocket(websocket.WebSocket):
    """websocket-client reads a frame with three recv() calls of the exact sizes
    (header, length, payload); at thousands of frames per second those system
    calls dominate. This reads up to 64 KiB at a time and serves frames from it
    (measured in `make bench`)."""

    _READ_AHEAD = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ahead = bytearray()

    def _recv(self, bufsize: int) -> bytes:
        if not self._ahead:
            self._ahead += super()._recv(self._READ_AHEAD)  # type: ignore[no-untyped-call]
        chunk = bytes(self._ahead[:bufsize])
        del self._ahead[:bufsize]
        return chunk


class Connection(threading.Thread):
    def __init__(
        self, conn_id: str, group: StreamGroup, url: str, on_frame: FrameHandler, silence_s: float
    ):
        super().__init__(name=f"ws-{conn_id}", daemon=True)
        self.conn_id = conn_id
        self.group = group
        self._url = url
        self._on_frame = on_frame
        self._silence_s = silence_s
        self._stop_event = threading.Event()
        self.opened = threading.Event()  # connected
        self.has_data = threading.Event()  # delivered at least one data frame
        self.opened_at = time.monotonic()
        self.last_data_at = time.monotonic()
        self.first_data_at = 0.0
        self.pings = 0
        self.frames = 0
        self.cause = ""

    def stop(self, cause: str) -> None:
        if not self.cause:
            self.cause = cause
        self._stop_event.set()

    @property
    def live(self) -> bool:
        return self.opened.is_set() and self.is_alive() and not self._stop_event.is_set()

    def run(self) -> None:
        try:
            ws = websocket.create_connection(
                self._url,
                timeout=10,
                skip_utf8_validation=True,
                enable_multithread=True,
                class_=_ReadAheadWebSocket,
            )
        except (websocket.WebSocketException, OSError) as err:
            log.warning("connection %s to %s failed: %s", self.conn_id, self.group.name, err)
            self.cause = self.cause or "connect_failed"
            return
        self.opened_at = self.last_data_at = time.monotonic()
        self.opened.set()
        log.info("connection %s open: %d streams", self.conn_id, len(self.group.streams))
        try:
            ws.settimeout(_POLL_S)
            self._read(ws)
        finally:
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.close(timeout=1)
            log.info("connection %s closed: %s", self.conn_id, self.cause)

    def _read(self, ws: websocket.WebSocket) -> None:
        while not self._stop_event.is_set():
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - self.last_data_at > self._silence_s:
                    self.cause = self.cause or "silent"
                    return
                continue
            except (websocket.WebSocketException, OSError) as err:
                self.cause = self.cause or ("closed" if _is_close(err) else "error")
                return
            if opcode in _DATA_OPCODES:
                recv_ns = time.time_ns()
                self.last_data_at = time.monotonic()
                self.frames += 1
                if not self.has_data.is_set():
                    self.first_data_at = self.last_data_at
                    self.has_data.set()
                self._on_frame(data, recv_ns, self)
            elif opcode == websocket.ABNF.OPCODE_PING:
                self.pings += 1  # the pong echoing its payload is already sent
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                self.cause = self.cause or "closed"
                return


def _is_close(err: Exception) -> bool:
    return isinstance(err, websocket.WebSocketConnectionClosedException)


class AttemptLimiter:
    """At most `limit` connection attempts in any `window_s` seconds."""

    def __init__(self, limit: int, window_s: float = 300.0):
        self._limit = limit
        self._window_s = window_s
        self._attempts: collections.deque[float] = collections.deque()

    def wait_time(self, now: float) -> float:
        while self._attempts and now - self._attempts[0] >= self._window_s:
            self._attempts.popleft()
        if len(self._attempts) < self._limit:
            return 0.0
        return self._attempts[0] + self._window_s - now

    def record(self, now: float) -> None:
        self._attempts.append(now)


def backoff_delay(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, initial * 2^failures)]."""
    return rng.uniform(0, min(max_s, initial_s * 2 ** min(failures, 30)))


@dataclass
class _GroupState:
    group: StreamGroup
    current: Connection | None = None
    successor: Connection | None = None
    failures: int = 0
    next_attempt: float = 0.0
    overlap_until: float = 0.0
    generation: int = 0
    shutdown_notice: bool = False
    # Both connections of an overlap have carried the same frame.
    caught_up: bool = False


class StreamClient:
    def __init__(
        self,
        groups: list[StreamGroup],
        settings: ProducerSettings,
        on_frame: FrameHandler,
        metrics: ProducerMetrics,
        rng: random.Random | None = None,
    ):
        self._settings = settings
        self._on_frame = on_frame
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._limiter = AttemptLimiter(settings.max_attempts_per_5min)
        self._groups = {g.name: _GroupState(g) for g in groups}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="ws-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop_event.set()
        self._thread.join(timeout=10)
        with self._lock:
            connections = [c for s in self._groups.values() for c in (s.current, s.successor) if c]
        for conn in connections:
            conn.stop("stop")
        for conn in connections:
            conn.join(timeout=5)

    def server_shutdown(self, conn: Connection) -> None:
        """A serverShutdown notice: replace the connection at once (make-before-break)."""
        with self._lock:
            state = self._groups[conn.group.name]
            if state.current is conn:
                state.shutdown_notice = True

    def duplicate_seen(self, conn: Connection) -> None:
        """The caller dropped a frame of conn as already seen: an overlap has met."""
        state = self._groups[conn.group.name]
        if state.successor is not None:
            state.caught_up = True

    def in_overlap(self, group: str) -> bool:
        state = self._groups[group]
        return state.successor is not None or time.monotonic() < state.overlap_until

    def health(self) -> tuple[bool, dict[str, object]]:
        now = time.monotonic()
        detail = {}
        ok = True
        live_count = sum(1 for c in self.connections() if c.live)
        self._metrics.connections_live.set(live_count)
        for name, state in self._groups.items():
            conn = state.current
            live = conn is not None and conn.live
            age = now - conn.last_data_at if conn is not None and conn.opened.is_set() else None
            self._metrics.last_frame_age.labels(name).set(age if age is not None else float("nan"))
            detail[name] = {
                "live": live,
                "connection": conn.conn_id if conn else None,
                "last_frame_age_s": None if age is None else round(age, 3),
                "streams": len(state.group.streams),
            }
            ok = ok and live
        return ok, {"connections": detail}

    def connections(self) -> list[Connection]:
        with self._lock:
            return [c for s in self._groups.values() for c in (s.current, s.successor) if c]

    def _open(self, state: _GroupState, now: float) -> Connection | None:
        wait = self._limiter.wait_time(now)
        if wait > 0:
            state.next_attempt = now + wait
            log.warning("connection attempt limit reached; next attempt in %.1f s", wait)
            return None
        self._limiter.record(now)
        self._metrics.connection_attempts.inc()
        state.generation += 1
        conn = Connection(
            f"{state.group.name}-{state.generation}",
            state.group,
            state.group.url(self._settings.ws_base_url),
            self._on_frame,
            self._settings.watchdog_silence_s,
        )
        conn.start()
        return conn

    def _supervise(self) -> None:
        while not self._stop_event.wait(0.1):
            now = time.monotonic()
            with self._lock:
                for state in self._groups.values():
                    self._tend(state, now)
            self.health()

    def _tend(self, state: _GroupState, now: float) -> None:
        current, successor = state.current, state.successor
        # A successor takes over once both connections carried the same frame
        # (or the old one died, or the streams are too quiet to tell); only
        # then does the old one close, so nothing falls between the two.
        if successor is not None:
            old_gone = current is None or not current.is_alive()
            waited = successor.has_data.is_set() and now - successor.first_data_at
            if successor.has_data.is_set() and (
                state.caught_up or old_gone or waited >= _CATCH_UP_TIMEOUT_S
            ):
                if current is not None:
                    current.stop(current.cause or "rollover")
                state.current, state.successor = successor, None
                state.caught_up = False
                state.overlap_until = now + _OVERLAP_TAIL_S
                state.failures = 0
            elif not successor.is_alive():
                state.successor = None  # failed to open; the current one carries on
                state.failures += 1
            return
        if current is not None and not current.is_alive():
            cause = current.cause or "closed"
            self._metrics.reconnects.labels(cause).inc()
            state.current = None
            if current.has_data.is_set() and cause != "connect_failed":
                state.failures = 0
            else:
                state.failures += 1
            # After a serverShutdown notice the server is going away: reconnect at once.
            delay = (
                0.0
                if cause == "shutdown"
                else backoff_delay(
                    state.failures,
                    self._settings.backoff_initial_s,
                    self._settings.backoff_max_s,
                    self._rng,
                )
            )
            state.next_attempt = now + delay
            log.info(
                "group %s lost %s (%s); reconnect in %.2f s",
                state.group.name,
                current.conn_id,
                cause,
                delay,
            )
            return
        if current is None:
            if now >= state.next_attempt:
                state.current = self._open(state, now)
            return
        replace = None
        if state.shutdown_notice:
            replace = "shutdown"
        elif current.opened.is_set() and now - current.opened_at >= self._settings.rollover_after_s:
            replace = "rollover"
        if replace is not None:
            state.shutdown_notice = False
            successor = self._open(state, now)
            if successor is not None:
                current.cause = replace
                self._metrics.reconnects.labels(replace).inc()
                state.successor = successor
