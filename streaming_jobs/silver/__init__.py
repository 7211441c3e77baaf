"""Silver: OHLCV bars equal to Binance's klines, and indicators equal to TA-Lib.

`./spark-submit.sh silver` runs `main` (job.py); bars.py (Spark: trades ->
1m bars), live.py (each symbol's running bars, indicator state and trade
sequence, advanced by each batch), series.py (pandas: one symbol's fills,
roll-ups, indicators and finality over stored bars, the general path) and
indicators.py are the pure transforms it applies.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """The job; imported on call, so the pure modules load without Spark (the CLI uses them)."""
    from streaming_jobs.silver.job import main as run

    return run(argv)
