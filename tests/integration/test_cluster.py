"""The same jobs on a real Spark cluster, with the lake and checkpoints on MinIO.

A standalone master and two workers run on loopback (infra/spark-cluster.sh,
from the installed pyspark). `make demo ONCE=1` then submits bronze, silver
and gold to the master (SPARK_MASTER=spark://..., storage profile minio,
topics of 6 partitions) over the same real capture as the session's demo,
which ran in local mode on local disk (tests/integration/conftest.py). The
executors get the project's code from --py-files and the jars from
spark.jars, nothing installed by hand: their Python (PYSPARK_PYTHON) has the
libraries but not the project, which this checkout's venv has installed.
Every table must equal the local run's, apart from when and from which
Kafka coordinates a row was written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streaming_jobs.bronze.transform import LINEAGE
from streaming_jobs.common import lakefiles
from streaming_jobs.common.settings import Settings, load_settings
from tests.chaos.invariants import WRITE_COLUMNS, comparable
from tests.demo import INFRA, LAYERS, Demo, demo_once, run
from tests.support import get_json

PARTITIONS = 6
APPS = {f"lakehouse-{layer}" for layer in LAYERS}
# Payloads without an exchange time are partitioned by the date of receipt.
RECEIPT_DATED = {"bronze_book_ticker", "bronze_depth"}


@pytest.fixture(scope="module")
def cluster(services: Settings) -> Iterator[str]:
    """The master's URL; the master and workers stop at the end, checked."""
    env = dict(os.environ)
    started = run([str(INFRA / "spark-cluster.sh"), "start"], env, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield run([str(INFRA / "spark-cluster.sh"), "url"], env).stdout.strip()
    finally:
        stopped = run([str(INFRA / "spark-cluster.sh"), "stop"], env, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert run([str(INFRA / "spark-cluster.sh"), "status"], env).returncode != 0


def executor_python(root: Path) -> Path:
    """A Python with the venv's libraries but without the project (as a packed venv has)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(root), "platbase": str(root)})["purelib"])
    # A plain path line: the venv's site-packages joins sys.path, but its .pth
    # files (the project's editable install among them) are not run.
    (site / "libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = root / "bin" / "python"
    probe = (
        "import pandas, pyarrow, pyspark, importlib.util as u; print(u.find_spec('streaming_jobs'))"
    )
    found = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True, cwd=root
    )
    assert found.stdout.strip() == "None", found.stdout
    return python


def cluster_conf(root: Path) -> Path:
    """The tests' conf with topics of 6 partitions, a MinIO bucket and producer state of its own."""
    conf = root / "conf"
    shutil.copytree(os.environ["LAKE_CONF_DIR"], conf)
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    for kind, spec in pipeline["kafka"]["topics"].items():
        spec["name"] = f"cluster.{spec['name']}"
        if kind != "quarantine":
            spec["partitions"] = PARTITIONS
    pipeline["storage"].update(profile="minio", s3_bucket="cluster-lake")
    pipeline["producer"]["state_file"] = "cluster/producer-state.json"
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return conf


def table_rows(table: str, rows: list[dict[str, Any]]) -> Any:
    """A table's rows as compared: without write times and Kafka coordinates."""
    if not table.startswith("bronze_"):
        return comparable(table, rows)
    ignored = WRITE_COLUMNS | set(LINEAGE) | {"recv_ns"}
    if table == "bronze_quarantine":  # keyed by Kafka coordinates, which differ
        return sorted((bytes(r["raw"]), r["reason"]) for r in rows)
    if table in RECEIPT_DATED:  # the runs may straddle midnight UTC
        ignored |= {"date", "_hoodie_partition_path"}
    return {
        row["_hoodie_record_key"]: {k: v for k, v in row.items() if k not in ignored}
        for row in rows
    }


def executor_apps(settings: Settings, worker: int) -> set[str]:
    """The applications that had an executor on worker n (its JSON view)."""
    port = settings.services.spark_worker_ui_port + worker - 1
    view = get_json(f"http://{settings.services.host}:{port}/json/")
    return {e["appdesc"]["name"] for e in view["executors"] + view["finishedexecutors"]}


def test_cluster_on_minio_equals_local_mode_on_disk(
    demo: Demo, cluster: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert cluster.startswith("spark://127.0.0.1:")
    root = tmp_path_factory.mktemp("cluster")
    conf = cluster_conf(root)
    env = {**os.environ, "LAKE_CONF_DIR": str(conf), "SPARK_MASTER": cluster}
    env["PYSPARK_PYTHON"] = str(executor_python(root / "executor-venv"))
    env.update(DEMO_TIMEOUT_S="1200")
    done = demo_once(env, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    settings = load_settings(conf, env)
    assert settings.lake_root.startswith("s3a://cluster-lake")

    # Each layer ran as an application of the cluster, with an executor on both workers.
    for worker in (1, 2):
        assert executor_apps(settings, worker) >= APPS, f"worker {worker}"

    local = set(lakefiles.tables(demo.settings))
    assert set(lakefiles.tables(settings)) == local
    for table in sorted(local):
        ours = table_rows(table, lakefiles.latest_rows(settings, table))
        theirs = table_rows(table, lakefiles.latest_rows(demo.settings, table))
        assert len(ours) == len(theirs), f"{table}: {len(ours)} rows on the cluster, {len(theirs)}"
        if isinstance(ours, dict):
            differ = sorted(key for key in ours if ours[key] != theirs.get(key))
            assert not differ, (
                f"{table}: {len(differ)} rows differ, first {differ[0]}: "
                f"{ours[differ[0]]} != {theirs.get(differ[0])}"
            )
        else:
            assert ours == theirs, table
