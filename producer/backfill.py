"""REST backfill of trade and aggTrade gaps, published to the same topics.

A gap (from the gap tracker) is filled page by page from
`/api/v3/historicalTrades` (trades) or `/api/v3/aggTrades` by `fromId`. Each
REST row becomes the frame Binance would have pushed on the stream (same
keys, same decimal strings; the event time `E`, which REST does not give, is
the trade time), published with the header `backfill=1`. A gap is marked
filled only after Kafka acknowledged every record of it, so a crash in
between leaves it in the state file to be filled again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from producer.binance.rest import RestClient, RestError
from producer.gaps import Gap, GapTracker
from producer.metrics import ProducerMetrics
from producer.router import Record, Router, headers
from producer.sink import KafkaSink

log = logging.getLogger(__name__)


def _trade_frame(symbol: str, row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return row["id"], {
        "e": "trade",
        "E": row["time"],
        "s": symbol,
        "t": row["id"],
        "p": row["price"],
        "q": row["qty"],
        "T": row["time"],
        "m": row["isBuyerMaker"],
        "M": row["isBestMatch"],
    }


def _agg_trade_frame(symbol: str, row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return row["a"], {
        "e": "aggTrade",
        "E": row["T"],
        "s": symbol,
        "a": row["a"],
        "p": row["p"],
        "q": row["q"],
        "f": row["f"],
        "l": row["l"],
        "T": row["T"],
        "m": row["m"],
        "M": row["M"],
    }


# kind -> (REST fetch, row -> (id, stream payload), stream suffix)
_SOURCES: dict[
    str, tuple[str, Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]], str]
] = {
    "trade": ("historical_trades", _trade_frame, "trade"),
    "aggTrade": ("agg_trades", _agg_trade_frame, "aggTrade"),
}


class Backfiller:
    def __init__(
        self,
        rest: RestClient,
        router: Router,
        sink: KafkaSink,
        tracker: GapTracker,
        metrics: ProducerMetrics,
        *,
        page_limit: int,
        max_records: int,
        stop: threading.Event,
    ):
        self._rest = rest
        self._router = router
        self._sink = sink
        self._tracker = tracker
        self._metrics = metrics
        self._page_limit = page_limit
        self._max_records = max_records
        self._stop = stop
        self._queue: queue.Queue[Gap] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="backfill", daemon=True)
        self.idle = threading.Event()
        self.idle.set()

    def start(self) -> None:
        self.idle.clear()  # busy catching up until the queue first runs dry
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def enqueue(self, gap: Gap) -> None:
        self.idle.clear()
        self._queue.put(gap)

    def catch_up(self) -> None:
        """At start: ask the exchange for each resumed series' newest id and owe the rest.

        A live frame shows a gap only when the next trade comes; a symbol that
        went quiet (halted, delisted, a replay at its end) while the producer
        was down would keep its missed trades out of Kafka for good.
        """
        for kind, symbol in self._tracker.resumed():
            if self._stop.is_set():
                return
            if not self._router.subscribed(f"{symbol.lower()}@{_SOURCES[kind][2]}"):
                continue  # a series of an older configuration
            try:
                latest = self._rest.latest_id(kind, symbol)
            except RestError as err:
                log.warning(
                    "catching up %s %s: %s (a live frame will show the gap)", kind, symbol, err
                )
                continue
            gap = None if latest is None else self._tracker.catch_up(kind, symbol, latest)
            if gap is not None:
                self._metrics.gaps_detected.labels(kind, symbol).inc()
                log.warning(
                    "%s %s moved on while the producer was down: ids %d..%d (%d) owed",
                    kind,
                    symbol,
                    gap.first_id,
                    gap.last_id,
                    gap.size,
                )
                self._tracker.save()
                self.enqueue(gap)

    def _run(self) -> None:
        self.catch_up()
        while not self._stop.is_set():
            try:
                gap = self._queue.get(timeout=0.2)
            except queue.Empty:
                self.idle.set()
                continue
            try:
                self._fill(gap)
            except RestError as err:
                if self._stop.is_set():
                    return
                # Left pending in the state file; the next start retries it.
                log.error(
                    "backfill of %s %s ids %d..%d failed: %s",
                    gap.kind,
                    gap.symbol,
                    gap.first_id,
                    gap.last_id,
                    err,
                )

    def _fill(self, gap: Gap) -> None:
        method, to_frame, suffix = _SOURCES[gap.kind]
        fetch = getattr(self._rest, method)
        stream = f"{gap.symbol.lower()}@{suffix}"
        topic = self._router.topic(gap.kind)
        log.info(
            "backfilling %s %s ids %d..%d (%d)",
            gap.kind,
            gap.symbol,
            gap.first_id,
            gap.last_id,
            gap.size,
        )
        next_id, published = gap.first_id, 0
        while next_id <= gap.last_id and published < self._max_records:
            page = [
                to_frame(gap.symbol, row) for row in fetch(gap.symbol, next_id, self._page_limit)
            ]
            wanted = [(i, payload) for i, payload in page if next_id <= i <= gap.last_id]
            if not wanted:
                break
            for record_id, payload in wanted:
                # Live frames (a slower connection of a rollover) may have
                # filled part of the gap meanwhile: publish only what is missing.
                if not self._tracker.claim(gap.kind, gap.symbol, record_id):
                    continue
                value = json.dumps({"stream": stream, "data": payload}, separators=(",", ":"))
                hdrs = headers(time.time_ns(), "backfill", stream, True)
                self._sink.send(Record(topic, gap.symbol.encode(), value.encode(), hdrs))
                published += 1
            next_id = wanted[-1][0] + 1
        self._metrics.backfilled.labels(gap.kind, gap.symbol).inc(published)
        self._sink.flush()
        missing = self._tracker.unfilled(gap)
        if missing:
            # Stays pending in the state file: the next start tries again.
            log.error(
                "backfill of %s %s ids %d..%d left %d ids missing (%d published): %s",
                gap.kind,
                gap.symbol,
                gap.first_id,
                gap.last_id,
                missing,
                published,
                "record limit" if published >= self._max_records else "REST had no more rows",
            )
            return
        self._tracker.filled(gap)
        self._metrics.gaps_filled.labels(gap.kind, gap.symbol).inc()
        log.info(
            "filled %s %s ids %d..%d (%d from REST, the rest live)",
            gap.kind,
            gap.symbol,
            gap.first_id,
            gap.last_id,
            published,
        )
