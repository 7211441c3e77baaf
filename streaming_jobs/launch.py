"""The file spark-submit runs: hands the arguments to `streaming_jobs.<layer>.main`.

spark-submit needs a Python file as its primary resource; this one only
dispatches, so each layer stays an ordinary importable module whose `main`
can be called from tests as well.

    spark-submit ... streaming_jobs/launch.py <bronze|silver|gold|sql> [args...]
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

# The driver imports the checkout this file is in: --py-files puts the
# executors' archive (.build/streaming_jobs.zip) on the path too, and modules
# read from it would look for conf/ inside the zip.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: launch.py <layer> [args...]", file=sys.stderr)
        return 2
    # PySpark turns timestamps into naive datetimes in the process's local
    # zone; the lake is UTC throughout, so the driver's Python is too.
    os.environ["TZ"] = "UTC"
    time.tzset()
    module = importlib.import_module(f"streaming_jobs.{argv[0]}")
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
