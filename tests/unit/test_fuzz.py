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
BAD_VALUES: list[Any] = ["", "NaN", "abc", "-1", "1e400", "9" * 40, None, [], {}, True, -1, 1.5]
# Fields whose value the frame's meaning depends on (the rest, like the event
# type "e" or the "M" flag, bronze does not read).
FIELDS = {
    "trade": ("s", "t", "p", "q", "T"),
    "aggTrade": ("s", "a", "p", "q", "f", "l", "T"),
    "kline": ("s", "E"),
    "bookTicker": ("s", "u", "b", "B", "a", "A"),
    "depthUpdate": ("s", "E", "U", "u", "b", "a"),
    "depth": ("lastUpdateId", "bids", "asks"),
}


def corpus() -> list[tuple[str, str, bytes]]:
    """(route kind, what was broken, frame bytes)."""
    cases: list[tuple[str, str, bytes]] = []
    for kind, frame in FRAMES.items():
        raw = frame.encode()
        cases += [
            (kind, "truncated", raw[: len(raw) // 2]),
            (kind, "invalid UTF-8", raw[:-2] + b"\xff\xfe" + raw[-2:]),
            (kind, "unknown stream", frame.replace("@", "@x", 1).encode()),
            (kind, "1 MB of garbage", raw[:40] + b"\x01" * 1_000_000),
            (kind, "no data", json.dumps({"stream": json.loads(frame)["stream"]}).encode()),
        ]
        for field in FIELDS[kind]:
            for value in BAD_VALUES:
                data = json.loads(frame)
                if field == "s" and isinstance(value, str) and value.isalpha():
                    value = "ETHBTC"  # a symbol, but not the stream's
                data["data"][field] = value
                cases.append((kind, f"{field}={value!r}", json.dumps(data).encode()))
    return cases


CORPUS = corpus()
# Breaks bronze accepts on purpose, each for a reason:
# - a missing payload symbol: the symbol is the stream's (validated) name, as
#   for partial depth, whose payload never has one;
# - a price or quantity sent as a JSON number instead of a string: Spark reads
#   the number's text, never a float, so 1.5 is stored exactly as 1.5 (a text
#   that is not a plain decimal, like 1e400, is quarantined);
# - an empty side of a book: a diff update that changes one side only, or a
#   book with no orders on a side.
ACCEPTED = {
    "s=None",
    *(f"{field}=1.5" for field in ("p", "q", "b", "B", "a", "A")),
    *(f"{field}=[]" for field in ("b", "a", "bids", "asks")),
}


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
