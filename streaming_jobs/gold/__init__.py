"""Gold: cross-asset analytics, risk and signals, streaming from silver."""

from streaming_jobs.gold.job import main

__all__ = ["main"]
