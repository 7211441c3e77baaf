"""A fuzzed corpus of bad frames: real recorded frames, each broken one way.

Truncated, invalid UTF-8, an unknown stream, 1 MB of garbage, no payload, and
each field the frame's meaning depends on set to a wrong type, a huge, negative,
NaN or empty value, or (for the symbol) another market's name. Used by the unit
fuzz test (router and bronze parsers) and by the chaos suite (through the live
producer and straight into Kafka).
"""

from __future__ import annotations

import json
from typing import Any

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
MEGABYTE = 1_000_000
# Breaks bronze accepts on purpose, each for a reason:
# - a missing payload symbol: the symbol is the stream's (validated) name, as
#   for partial depth, whose payload never has one;
# - a price or quantity sent as a JSON number instead of a string: Spark reads
#   the number's text, never a float, so 1.5 is stored exactly as 1.5 (a text
#   that is not a plain decimal, like 1e400, is quarantined);
# - an empty side of a book: a diff update that changes one side only, or a
#   book with no orders on a side.
ACCEPTED = frozenset(
    {
        "s=None",
        *(f"{field}=1.5" for field in ("p", "q", "b", "B", "a", "A")),
        *(f"{field}=[]" for field in ("b", "a", "bids", "asks")),
    }
)


def corpus(frames: dict[str, str]) -> list[tuple[str, str, bytes]]:
    """(route kind, what was broken, frame bytes) for each kind's real frame."""
    cases: list[tuple[str, str, bytes]] = []
    for kind, frame in frames.items():
        raw = frame.encode()
        cases += [
            (kind, "truncated", raw[: len(raw) // 2]),
            (kind, "invalid UTF-8", raw[:-2] + b"\xff\xfe" + raw[-2:]),
            (kind, "unknown stream", frame.replace("@", "@x", 1).encode()),
            (kind, "1 MB of garbage", raw[:40] + b"\x01" * MEGABYTE),
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
