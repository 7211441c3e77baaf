"""Bronze: every producer topic -> typed Hudi tables, exactly once, with quarantine and lineage.

./spark-submit.sh bronze        # long-running; --once processes what is there and stops
"""

from __future__ import annotations

from streaming_jobs.bronze.job import main

__all__ = ["main"]
