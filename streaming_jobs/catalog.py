"""Every table of the lake, as its layer declares it: what the layers check at start
(common/hudi.check_layouts) and what `./spark-submit.sh migrate` rewrites."""

from __future__ import annotations

from streaming_jobs.bronze import tables as bronze
from streaming_jobs.common.hudi import HudiTable
from streaming_jobs.gold import tables as gold
from streaming_jobs.silver import tables as silver

_BY_LAYER = {"bronze": bronze.ALL, "silver": (silver.OHLCV,), "gold": gold.ALL}


def declared() -> dict[str, HudiTable]:
    return {table.name: table for tables in _BY_LAYER.values() for table in tables}


def written_by(layer: str) -> tuple[HudiTable, ...]:
    """The tables a layer's driver writes (none for the other entry points)."""
    return _BY_LAYER.get(layer, ())
