"""Stream names, combined-stream URLs and how streams are split across connections.

Binance serves at most 1024 streams per connection (`max_streams_per_connection`
in conf/pipeline.yaml); the active symbols' streams are cut into groups in
tier order, one connection each, so a tier-1 symbol is never the one pushed
to an extra connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streaming_jobs.common.settings import Symbol


@dataclass(frozen=True)
class StreamGroup:
    """The streams one connection subscribes to, by URL."""

    index: int
    streams: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"g{self.index}"

    def url(self, ws_base_url: str) -> str:
        return f"{ws_base_url.rstrip('/')}/stream?streams={'/'.join(self.streams)}"


def stream_groups(symbols: Sequence[Symbol], max_per_connection: int) -> list[StreamGroup]:
    names = [name for symbol in symbols for name in symbol.stream_names()]
    return [
        StreamGroup(i, tuple(names[start : start + max_per_connection]))
        for i, start in enumerate(range(0, len(names), max_per_connection))
    ]
