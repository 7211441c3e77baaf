"""Gold: cross-asset analytics, risk and signals, streaming from silver."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """The job; imported on call, so the pure modules load without Spark (the CLI uses them)."""
    from streaming_jobs.gold.job import main as run

    return run(argv)
