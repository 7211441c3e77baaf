"""Binance's REST market-data endpoints used for backfill, within the rate limits.

Every request carries its weight; the answer's `X-MBX-USED-WEIGHT-1M` header
says what the IP has used this minute. Above `weight_budget` the client waits
for the next minute instead of spending the rest; a 429 (or a 418 ban) is
honoured by sleeping `Retry-After` seconds, counted, and retried. Ignoring
429 gets an IP banned for minutes to days.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from producer.metrics import ProducerMetrics

log = logging.getLogger(__name__)

WEIGHTS = {"/api/v3/historicalTrades": 25, "/api/v3/aggTrades": 4}


class RestError(RuntimeError):
    pass


class RestClient:
    def __init__(
        self,
        base_url: str,
        metrics: ProducerMetrics,
        *,
        weight_budget: int = 4800,
        stop: threading.Event | None = None,
        max_retries: int = 10,
    ):
        self._base_url = base_url.rstrip("/")
        self._metrics = metrics
        self._weight_budget = weight_budget
        self._stop = stop or threading.Event()
        self._max_retries = max_retries
        self.used_weight = 0

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise RestError("stopped while waiting for the rate limit")

    def get(self, path: str, params: dict[str, str | int]) -> Any:
        url = f"{self._base_url}{path}?{urllib.parse.urlencode(params)}"
        for _attempt in range(self._max_retries):
            if self.used_weight + WEIGHTS.get(path, 1) > self._weight_budget:
                wait = 60.5 - time.time() % 60  # the weight window is the clock minute
                log.info("REST weight %d near the limit; waiting %.1f s", self.used_weight, wait)
                self._sleep(wait)
                self.used_weight = 0
            try:
                with urllib.request.urlopen(url, timeout=15) as response:
                    self.used_weight = int(response.headers.get("X-MBX-USED-WEIGHT-1M", 0))
                    return json.load(response)
            except urllib.error.HTTPError as err:
                if err.code in (418, 429):
                    retry_after = float(err.headers.get("Retry-After") or 60)
                    self._metrics.rest_rate_limited.inc()
                    log.warning("REST %s answered %d; waiting %.0f s", path, err.code, retry_after)
                    self._sleep(retry_after)
                    continue
                if 500 <= err.code < 600:
                    self._sleep(1.0)
                    continue
                raise RestError(f"GET {url} answered {err.code}: {err.read()[:300]!r}") from err
            except (urllib.error.URLError, OSError, ValueError) as err:
                log.warning("REST %s failed: %s", path, err)
                self._sleep(1.0)
        raise RestError(f"GET {url} failed {self._max_retries} times")

    def clock_offset_ns(self) -> int:
        """The exchange's clock minus ours, from GET /api/v3/time (mid-point of the call)."""
        before = time.time_ns()
        answer = self.get("/api/v3/time", {})
        after = time.time_ns()
        return int(answer["serverTime"]) * 1_000_000 - (before + after) // 2

    def historical_trades(self, symbol: str, from_id: int, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.get(
            "/api/v3/historicalTrades", {"symbol": symbol, "fromId": from_id, "limit": limit}
        )
        return rows

    def latest_id(self, kind: str, symbol: str) -> int | None:
        """The newest trade (kind "trade") or aggregate trade id of a symbol; None if none."""
        path, id_key = {
            "trade": ("/api/v3/historicalTrades", "id"),
            "aggTrade": ("/api/v3/aggTrades", "a"),
        }[kind]
        rows: list[dict[str, Any]] = self.get(path, {"symbol": symbol, "limit": 1})
        return int(rows[-1][id_key]) if rows else None

    def agg_trades(self, symbol: str, from_id: int, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.get(
            "/api/v3/aggTrades", {"symbol": symbol, "fromId": from_id, "limit": limit}
        )
        return rows
