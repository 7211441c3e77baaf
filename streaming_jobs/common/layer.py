"""What every layer's `main` does: arguments, logging, settings, the session, the query.

    ./spark-submit.sh <layer> [--once]

A layer module provides `start(spark, settings, once)` returning its
streaming query (or queries), and optionally `prepare(spark, settings)` (e.g. wait for
its source table); `run_layer` does the rest, the same way for each.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from streaming_jobs.common import metrics, s3
from streaming_jobs.common.hudi import LayoutError, check_layouts, clear_cut_short_creation
from streaming_jobs.common.settings import Settings, load_settings
from streaming_jobs.common.upkeep import Upkeep

Start = Callable[[SparkSession, Settings, bool], Any]
EX_CONFIG = 78  # the supervisor does not restart a job that exits with it


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
    if settings.storage_profile == "minio":
        # The tables and checkpoints go there: a bucket nobody made fails every batch.
        try:
            if s3.ensure_lake_bucket(settings):
                logging.getLogger(layer).info(
                    "created bucket %s", settings.pipeline.storage.s3_bucket
                )
        except s3.S3Error as err:
            logging.getLogger(layer).error("the lake's storage is unavailable: %s", err)
            return 69  # EX_UNAVAILABLE: the supervisor tries again with backoff
    spark = SparkSession.builder.getOrCreate()
    from streaming_jobs.catalog import declared, written_by

    try:  # every layer checks every table it may meet
        check_layouts(spark, {settings.table_path(t.name): t for t in declared().values()})
    except LayoutError as err:
        logging.getLogger(layer).error("%s", err)
        return EX_CONFIG
    for table in written_by(layer):  # only its own: another layer may be creating one
        if clear_cut_short_creation(spark, settings.table_path(table.name)):
            logging.getLogger(layer).warning(
                "%s: removed the .hoodie of a creation cut short (no hoodie.properties, "
                "no commit); the next batch creates the table",
                table.name,
            )
    registry = None
    if not args.once:  # before the queries start, so the listener sees them start
        registry = metrics.serve(
            spark, layer, settings.services.host, settings.layer(layer).metrics_port
        )
    if prepare is not None:
        prepare(spark, settings)
    started = start(spark, settings, args.once)
    queries = started if isinstance(started, list) else [started]
    for query in queries:
        logging.getLogger(layer).info(
            "query %s started (%s), tables under %s",
            query.name,
            "until caught up" if args.once else "continuous",
            settings.table_path(""),
        )
    # The clustering the layer's writers plan, run apart from their batches; --once
    # runs what they left planned once the queries have caught up.
    upkeep = Upkeep(spark, settings, layer, written_by(layer), registry)
    if args.once:
        await_all(spark, queries)
        upkeep.run_once()
        return 0
    upkeep.start()
    try:
        await_all(spark, queries)
    finally:
        # A failed query ends the driver at once: a clustering under way is left
        # in flight, rolled back and run again by the next driver.
        upkeep.stop(wait=False)
    return 0


def await_all(spark: SparkSession, queries: list[Any]) -> None:
    """Return when every query has stopped; raise as soon as one fails.

    A failed query ends the driver (and so its sibling queries): the
    supervisor restarts it, and each query resumes from its checkpoint.
    """
    while any(query.isActive for query in queries):
        spark.streams.awaitAnyTermination()  # raises the failure of a failed query
        spark.streams.resetTerminated()
    for query in queries:
        failure = query.exception()
        if failure is not None:
            raise failure
