"""Silver: OHLCV bars equal to Binance's klines, and indicators equal to TA-Lib.

`./spark-submit.sh silver` runs `main` (job.py); bars.py and indicators.py
are the pure transforms it applies.
"""

from streaming_jobs.silver.job import main

__all__ = ["main"]
