"""What every layer's `main` does: arguments, logging, settings, the session, the query.

    ./spark-submit.sh <layer> [--once]

A layer module provides `start(spark, settings, once)` returning its
streaming query, and optionally `prepare(spark, settings)` (e.g. wait for
its source table); `run_layer` does the rest, the same way for each.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from streaming_jobs.common.settings import Settings, load_settings

Start = Callable[[SparkSession, Settings, bool], Any]


def run_layer(
    layer: str,
    start: Start,
    argv: list[str],
    prepare: Callable[[SparkSession, Settings], None] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"./spark-submit.sh {layer}")
    parser.add_argument("--once", action="store_true", help="process what is there, then stop")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = load_settings()
    spark = SparkSession.builder.getOrCreate()
    if prepare is not None:
        prepare(spark, settings)
    query = start(spark, settings, args.once)
    logging.getLogger(layer).info(
        "query %s started (%s), tables under %s",
        layer,
        "until caught up" if args.once else settings.layer(layer).trigger,
        settings.table_path(""),
    )
    query.awaitTermination()
    return 0
