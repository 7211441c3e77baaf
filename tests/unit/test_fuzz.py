"""A fuzzed corpus of bad frames through the producer's router and bronze's parsers.

Each frame is a real recorded frame (tests/unit/test_bronze_transform.py)
broken one way: truncated, a field of the wrong type, huge, negative, NaN,
empty, an unknown stream, invalid UTF-8, 1 MB of garbage, a symbol that
disagrees with its stream. Every one must end as a quarantine record with a
reason, at the producer or at bronze (which sees whatever reaches Kafka, from
the producer or another writer), and nothing may raise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from producer.router import Quarantined, Routed, Router
from tests.fuzzing import ACCEPTED, corpus
from tests.unit.test_bronze_transform import (
    AGG_TRADE,
    BOOK,
    DIFF_DEPTH,
    KLINE,
    PARTIAL_DEPTH,
    SETTINGS,
    TRADE,
    parse,
)

FRAMES = {
    "trade": TRADE,
    "aggTrade": AGG_TRADE,
    "kline": KLINE,
    "bookTicker": BOOK,
    "depthUpdate": DIFF_DEPTH,
    "depth": PARTIAL_DEPTH,
}
CORPUS = corpus(FRAMES)


def bronze_rows(spark: Any, kind: str, frames: list[bytes]) -> list[Any]:
    """Every record through the parsers of its topic (the depth topic has two)."""
    kinds = ("depth", "depthUpdate") if kind in ("depth", "depthUpdate") else (kind,)
    rows = [row for k in kinds for row in parse(spark, k, *frames)]
    return sorted(rows, key=lambda row: row.kafka_offset)


def test_the_router_quarantines_or_routes_every_frame_without_raising() -> None:
    subscribed = frozenset(json.loads(f)["stream"] for f in FRAMES.values())
    router = Router(SETTINGS, subscribed)
    reasons: dict[str, int] = {}
    for _kind, _what, raw in CORPUS:
        route = router.route(raw, recv_ns=1, connection="g0-1")
        assert isinstance(route, Quarantined | Routed)
        if isinstance(route, Quarantined):
            assert route.reason and dict(route.record.headers)["reason"] == route.reason.encode()
            assert route.record.value == raw  # kept exactly as received
            reasons[route.reason] = reasons.get(route.reason, 0) + 1
    assert {"not_utf8", "not_json", "unknown_stream", "symbol_mismatch"} <= set(reasons)


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_bronze_quarantines_every_bad_frame_with_a_reason(spark: Any, kind: str) -> None:
    cases = [(what, raw) for k, what, raw in CORPUS if k == kind]
    rows = bronze_rows(spark, kind, [raw for _what, raw in cases])
    # One row per record, none twice: nothing dropped.
    assert [row.kafka_offset for row in rows] == list(range(len(cases)))
    accepted = [
        what
        for (what, _raw), row in zip(cases, rows, strict=True)
        if row.reason is None and what not in ACCEPTED
    ]
    assert not accepted, f"{kind}: accepted as valid: {accepted}"
