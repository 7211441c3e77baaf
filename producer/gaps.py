"""Id continuity per symbol: duplicates, gaps, and the state that survives a restart.

Binance numbers trades (`t`) and aggregate trades (`a`) consecutively per
symbol, so a jump is a gap to backfill and a repeat is a duplicate (a
rollover overlap or a replayed frame). Diff-depth updates chain `U` to the
previous `u`; a break there is counted but cannot be backfilled (a consumer
resyncs from a snapshot).

Two watermarks per (kind, symbol): the highest id *seen* decides duplicates
and gaps at run time; the highest id *delivered* (acknowledged by Kafka) is
what the state file keeps, with the gaps not yet filled. Kafka acknowledges a
partition in order and all of a symbol's records share a partition (key =
symbol), so after a crash or `kill -9` the restart backfills from the last
delivered id: possibly a few duplicates (bronze collapses them by key), never
a hole.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Stream types whose ids are consecutive and can be refetched over REST.
BACKFILLABLE = ("trade", "aggTrade")


@dataclass(frozen=True)
class Gap:
    kind: str
    symbol: str
    first_id: int  # first missing id
    last_id: int  # last missing id

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


class GapTracker:
    def __init__(self, state_file: Path):
        self._state_file = state_file
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._delivered: dict[tuple[str, str], int] = {}
        # In memory: ids still missing, as disjoint [first, last] ranges per
        # series (live frames of a slower connection and backfill take from it).
        self._missing: dict[tuple[str, str], list[list[int]]] = {}
        # Persisted: gaps as detected, until their backfill is acknowledged
        # whole; a restart refetches them (duplicates, never holes).
        self._pending: set[Gap] = set()
        self._dirty = False
        self._load()

    def _load(self) -> None:
        if not self._state_file.exists():
            return
        try:
            state = json.loads(self._state_file.read_text())
            for key, value in state["delivered"].items():
                kind, symbol = key.split(":", 1)
                self._delivered[(kind, symbol)] = int(value)
            for kind, symbol, first, last in state["pending"]:
                gap = Gap(kind, symbol, int(first), int(last))
                self._pending.add(gap)
                self._missing.setdefault((kind, symbol), []).append([gap.first_id, gap.last_id])
        except (ValueError, KeyError, TypeError) as err:
            # A corrupt state file must not stop the producer; the topic tail
            # (resume.py) still tells where each series stopped.
            log.error("ignoring unreadable state file %s: %s", self._state_file, err)
            self._delivered, self._missing, self._pending = {}, {}, set()
        self._seen = dict(self._delivered)
        log.info(
            "restored last ids for %d series and %d unfilled gaps from %s",
            len(self._delivered),
            len(self._pending),
            self._state_file,
        )

    def resume_from(self, tail: dict[tuple[str, str], int]) -> None:
        """Raise the watermarks to what the topics already hold (a stale state file)."""
        with self._lock:
            for key, last in tail.items():
                if last > self._delivered.get(key, -1):
                    self._delivered[key] = last
                    self._seen[key] = max(self._seen.get(key, -1), last)
                    self._dirty = True

    def resumed(self) -> list[tuple[str, str]]:
        """The backfillable series this producer knows where it stopped."""
        with self._lock:
            return sorted(k for k in self._delivered if k[0] in BACKFILLABLE)

    def catch_up(self, kind: str, symbol: str, latest: int) -> Gap | None:
        """The exchange's newest id of a series, read at start: the ids after the last one
        seen are owed (a gap), whether or not a live frame ever shows they exist."""
        key = (kind, symbol)
        with self._lock:
            previous = self._seen.get(key)
            if previous is None or latest <= previous:
                return None
            self._seen[key] = latest
            gap = Gap(kind, symbol, previous + 1, latest)
            self._missing.setdefault(key, []).append([gap.first_id, gap.last_id])
            self._pending.add(gap)
            self._dirty = True
            return gap

    def pending_gaps(self) -> list[Gap]:
        with self._lock:
            return sorted(self._pending, key=lambda g: (g.kind, g.symbol, g.first_id))

    def observe(
        self, kind: str, symbol: str, first: int, last: int | None = None
    ) -> tuple[bool, Gap | None]:
        """Record ids [first, last] of a live frame: (is new, gap before it if any).

        An id below the highest seen is new only if it was still missing: the
        two connections of a rollover deliver the same frames at different
        paces, and the slower one fills what the faster one skipped ahead of.
        """
        last = first if last is None else last
        key = (kind, symbol)
        with self._lock:
            previous = self._seen.get(key)
            if previous is not None and last <= previous:
                return self._take(key, first), None
            self._seen[key] = last
            if previous is None or first <= previous + 1:
                return True, None
            gap = Gap(kind, symbol, previous + 1, first - 1)
            if kind in BACKFILLABLE:
                self._missing.setdefault(key, []).append([gap.first_id, gap.last_id])
                self._pending.add(gap)
                self._dirty = True
            return True, gap

    def claim(self, kind: str, symbol: str, record_id: int) -> bool:
        """For backfill: True (and no longer missing) if record_id is still missing."""
        with self._lock:
            return self._take((kind, symbol), record_id)

    def _take(self, key: tuple[str, str], record_id: int) -> bool:
        ranges = self._missing.get(key)
        if not ranges:
            return False
        for i, (first, last) in enumerate(ranges):
            if first <= record_id <= last:
                pieces = [[first, record_id - 1], [record_id + 1, last]]
                ranges[i : i + 1] = [p for p in pieces if p[0] <= p[1]]
                if not ranges:
                    del self._missing[key]
                return True
        return False

    def unfilled(self, gap: Gap) -> int:
        """How many ids of gap are still missing."""
        with self._lock:
            return sum(
                min(last, gap.last_id) - max(first, gap.first_id) + 1
                for first, last in self._missing.get((gap.kind, gap.symbol), [])
                if first <= gap.last_id and last >= gap.first_id
            )

    def filled(self, gap: Gap) -> None:
        """The gap's backfill is acknowledged by Kafka: stop owing it."""
        with self._lock:
            self._pending.discard(gap)
            self._dirty = True

    def delivered(self, kind: str, symbol: str, last: int) -> None:
        key = (kind, symbol)
        with self._lock:
            if last > self._delivered.get(key, -1):
                self._delivered[key] = last
                self._dirty = True

    def save(self, force: bool = False) -> None:
        """Write the state atomically (temp file + rename) if anything changed."""
        with self._lock:
            if not (self._dirty or force):
                return
            state: dict[str, Any] = {
                "delivered": {f"{k}:{s}": v for (k, s), v in sorted(self._delivered.items())},
                "pending": [
                    [g.kind, g.symbol, g.first_id, g.last_id]
                    for g in sorted(self._pending, key=lambda g: (g.kind, g.symbol, g.first_id))
                ],
            }
            self._dirty = False
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self._state_file)
