"""The Spark configuration every job and test runs with, decided in one place.

`conf/spark-defaults.conf` holds the static tuning (memory, shuffle
partitions, serializer, Hudi extensions, metrics). This module adds what is
derived from the settings: the jars from `jars/lib/`, the app name and Spark
UI port of each layer, and the S3A settings of the storage profile.
The pools of the FAIR scheduler are in `conf/fairscheduler.xml`.
`./spark-submit.sh` passes the defaults file and `python -m
streaming_jobs.common.spark <layer>` lines as `--conf`; the tests build their
session from `session_conf()`, so a job and its test never drift apart.

S3 credentials never appear in a conf value: S3A reads them from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which spark-submit.sh and the test
fixture export from the settings.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from streaming_jobs.common.settings import PROJECT_ROOT, Settings, load_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

JARS_DIR = PROJECT_ROOT / "jars" / "lib"
# Hadoop's local file system without a forked chmod or `ls -ld` per file (built by
# `make setup` from jars/localfs/): about 30 processes a second fewer in each driver.
LOCAL_FS_JAR = PROJECT_ROOT / ".build" / "lakehouse-localfs.jar"
LOCAL_FS_CLASS = "lakehouse.hadoop.NioLocalFileSystem"
SPARK_DEFAULTS = PROJECT_ROOT / "conf" / "spark-defaults.conf"
LOG_CONFIG = PROJECT_ROOT / "conf" / "log4j2.properties"
FAIR_POOLS = PROJECT_ROOT / "conf" / "fairscheduler.xml"
APPS = ("bronze", "silver", "gold", "sql", "migrate")
# One-shot apps: no Spark UI.
ONE_SHOT = ("sql", "migrate")


class MissingJarsError(RuntimeError):
    pass


def jar_paths(jars_dir: Path = JARS_DIR) -> list[Path]:
    jars = sorted(jars_dir.glob("*.jar"))
    if not jars:
        raise MissingJarsError(f"no jars in {jars_dir}: run `make setup` (Maven, jars/pom.xml)")
    return jars


def local_fs_conf(jar: Path = LOCAL_FS_JAR) -> dict[str, str]:
    """`file:` paths through NioLocalFileSystem, and checkpoints through the FileSystem API.

    The class is on the JVMs' own class path where the jar's path exists (Hadoop may
    load a file system before Spark's added jars are), and in spark.jars for executors
    on other machines; Spark's default checkpoint manager goes through Hadoop's
    FileContext, whose local file system is the forking one, hard-wired.
    """
    if not jar.exists():
        raise MissingJarsError(f"{jar} is missing: run `make setup` (jars/localfs)")
    return {
        "spark.driver.extraClassPath": str(jar),
        "spark.executor.extraClassPath": str(jar),
        "spark.hadoop.fs.file.impl": LOCAL_FS_CLASS,
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager"
        ),
    }


def read_spark_defaults(path: Path = SPARK_DEFAULTS) -> dict[str, str]:
    """Parse a spark-defaults.conf file (whitespace-separated key value lines)."""
    conf: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    return conf


def s3a_conf(settings: Settings) -> dict[str, str]:
    """S3A settings for the profile's endpoint (a local MinIO by default)."""
    endpoint = settings.s3_endpoint
    prefix = "spark.hadoop.fs.s3a."
    return {
        f"{prefix}impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        f"{prefix}endpoint": endpoint,
        f"{prefix}endpoint.region": "us-east-1",
        f"{prefix}path.style.access": "true",
        f"{prefix}connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
        f"{prefix}aws.credentials.provider": (
            "com.amazonaws.auth.EnvironmentVariableCredentialsProvider"
        ),
        # Fail fast when MinIO is down instead of retrying for minutes.
        f"{prefix}attempts.maximum": "3",
        f"{prefix}retry.limit": "3",
        f"{prefix}connection.establish.timeout": "5000",
    }


def app_conf(settings: Settings, app: str) -> dict[str, str]:
    """What spark-submit.sh adds to spark-defaults.conf for one app."""
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}; expected one of {', '.join(APPS)}")
    if app in ONE_SHOT:
        ui = {"spark.ui.enabled": "false"}
    else:
        ui = {"spark.ui.port": str(settings.layer(app).ui_port)}
    return {
        "spark.app.name": f"lakehouse-{app}",
        "spark.jars": ",".join(str(p) for p in [*jar_paths(), LOCAL_FS_JAR]),
        "spark.scheduler.allocation.file": str(FAIR_POOLS),
        **ui,
        **local_fs_conf(),
        **s3a_conf(settings),
    }


def session_conf(settings: Settings, app: str) -> dict[str, str]:
    """The whole conf of an app: defaults file plus derived values (for in-process sessions)."""
    return {**read_spark_defaults(), **app_conf(settings, app)}


_LOCAL_MASTER = re.compile(r"^local(?:\[(\*|[0-9]+)(?:,[0-9]+)?\])?$")


def slots_of(conf: Mapping[str, str], cpus: int, default: int) -> int:
    """How many tasks an application with this conf runs at once: local[N]'s N (local:
    1, local[*]: the machine's `cpus`), else its share of a cluster (executors x their
    cores where spark.executor.instances is set, else spark.cores.max, a standalone
    cluster's), else `default` (Spark's default parallelism)."""
    local = _LOCAL_MASTER.match(conf.get("spark.master", ""))
    if local:
        count = local.group(1)
        return 1 if count is None else cpus if count == "*" else max(1, int(count))
    if "spark.executor.instances" in conf:
        cores = int(conf.get("spark.executor.cores", "1"))
        return max(1, int(conf["spark.executor.instances"]) * cores)
    if "spark.cores.max" in conf:
        return max(1, int(conf["spark.cores.max"]))
    return max(1, default)


def task_slots(spark: SparkSession) -> int:
    """How many tasks the session's application runs at once (slots_of)."""
    context = spark.sparkContext
    conf = dict(context.getConf().getAll())
    return slots_of(conf, os.cpu_count() or 1, context.defaultParallelism)


def in_pool(spark: SparkSession, pool: str | None) -> None:
    """Run the calling thread's Spark jobs in FAIR scheduler `pool` (None: the default).

    A property of the thread: a query's thread inherits it from the thread
    that starts the query, a thread pool's workers do not, so each sets it.
    """
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", pool)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    """Print `--conf key=value` argument pairs for spark-submit, one per line."""
    if len(argv) != 1:
        print(f"usage: python -m streaming_jobs.common.spark <{'|'.join(APPS)}>", file=sys.stderr)
        return 2
    try:
        conf = app_conf(load_settings(), argv[0])
    except (ValueError, MissingJarsError) as err:
        print(f"spark-submit: {err}", file=sys.stderr)
        return 2
    for key, value in conf.items():
        print("--conf")
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
