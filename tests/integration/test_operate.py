"""Operating the pipeline: `make demo ONCE=1`, `make status`, the `lakehouse` CLI and
its charts, supervision and the Prometheus alerts, on one replayed demo run.

`make demo ONCE=1` runs once for the session (tests/integration/conftest.py),
on the tests' Kafka, MinIO and Prometheus (left running: the demo stops only
what it started), with topics and a lake of its own. Every later test reads
what it produced; the live tests then restart bronze, silver and gold under their supervisors on the
same lake.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import Row, functions as F

from producer.replay.captures import merge_captures
from streaming_jobs.catalog import declared
from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.hudi import read_table, write_batch
from streaming_jobs.common.settings import PROJECT_ROOT, Settings
from tests.chaos.invariants import COMPARED
from tests.demo import CAPTURES, INFRA, LAYERS, Demo, run
from tests.support import await_true, descendants, get_json, listening_sockets

# The demo's capture has trades, diff depth and book tickers; silver and gold, all.
ALL_TABLES = {"bronze_trades", "bronze_depth_updates", "bronze_book_ticker", *COMPARED}
MERGE_ON_READ = [t for t in declared().values() if t.table_type == "MERGE_ON_READ"]


def lake(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every table's current rows, in key order."""
    return {
        table: sorted(lakefiles.latest_rows(settings, table), key=lambda r: r["_hoodie_record_key"])
        for table in lakefiles.tables(settings)
    }


def lakehouse(demo: Demo, *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(PROJECT_ROOT / ".venv" / "bin" / "lakehouse"), *args], demo.env, timeout=300)


def status(demo: Demo) -> tuple[int, dict[str, list[str]], str]:
    """`make status`: exit code, the process table by service, the whole screen."""
    done = run(["make", "--no-print-directory", "status"], demo.env, timeout=120)
    table = done.stdout.split("\n\n", 1)[0]
    lines = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    return done.returncode, lines, done.stdout


# --- make demo ONCE=1 -------------------------------------------------------------


def test_demo_once_lands_the_capture_in_every_layer(demo: Demo) -> None:
    capture = merge_captures(CAPTURES)
    trade_ids = {
        (json.loads(f.raw)["data"]["s"], json.loads(f.raw)["data"]["t"])
        for f in capture.frames
        if f.stream.endswith("@trade")
    }
    trades = lakefiles.latest_rows(demo.settings, "bronze_trades")
    assert sorted((r["symbol"], r["trade_id"]) for r in trades) == sorted(trade_ids)
    assert set(lakefiles.tables(demo.settings)) == ALL_TABLES
    for table in ALL_TABLES - {"gold_signals"}:
        assert lakefiles.table_stats(demo.settings, table).rows > 0, table
    bars = lakefiles.latest_rows(demo.settings, "silver_ohlcv")
    series = {(r["symbol"], r["interval"]) for r in bars}
    assert series == {
        (s, i) for s in ("BTCUSDT", "ETHUSDT") for i in ("1m", "5m", "15m", "1h", "4h", "1d")
    }
    assert "demo: the capture is in Kafka" in demo.stdout
    # The demo stopped what it started and nothing else.
    for name in ("kafka", "minio", "prometheus"):
        assert run([str(INFRA / f"{name}.sh"), "status"], demo.env).returncode == 0, name
    for name in ("replay", "producer", *LAYERS):
        assert run([str(INFRA / f"{name}.sh"), "status"], demo.env).returncode != 0, name


def test_file_reader_equals_sparks_snapshot_read(demo: Demo, spark: Any) -> None:
    """What the CLI and `make status` read without Spark is what Spark reads."""
    for table in ALL_TABLES:
        ours = lakefiles.latest_rows(demo.settings, table)
        theirs = read_table(spark, demo.settings.table_path(table)).collect()
        assert len(ours) == len(theirs) == lakefiles.table_stats(demo.settings, table).rows, table
        assert sorted(r["_hoodie_record_key"] for r in ours) == sorted(
            r["_hoodie_record_key"] for r in theirs
        ), table
    bars = {
        r["_hoodie_record_key"]: r for r in lakefiles.latest_rows(demo.settings, "silver_ohlcv")
    }
    for row in read_table(spark, demo.settings.table_path("silver_ohlcv")).collect():
        ours = bars[row["_hoodie_record_key"]]
        assert (ours["close"], ours["volume"], ours["rsi_14"]) == (
            row["close"],
            row["volume"],
            row["rsi_14"],
        )


def _without_hudi_columns(df: Any, keep: tuple[str, ...] = ()) -> Any:
    return df.drop(*[c for c in df.columns if c.startswith("_hoodie_") and c not in keep])


def _plain(value: Any) -> Any:
    """A value as both readers can agree on it: UTC-naive times, NaN as text, lists of dicts."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, Row):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(t.name for t in MERGE_ON_READ))
def test_file_reader_merges_the_logs_of_merge_on_read_tables(
    name: str, demo: Demo, spark: Any, tmp_path: Path
) -> None:
    """The demo's rows of a merge-on-read table, written again in commits that update
    a third of them each, so compactions run and log files are left after the last:
    the JVM-free readers see exactly what Spark's snapshot read sees, newest versions."""
    table = next(t for t in MERGE_ON_READ if t.name == name)
    storage = replace(demo.settings.pipeline.storage, profile="local", local_root=str(tmp_path))
    scratch = replace(demo.settings, pipeline=replace(demo.settings.pipeline, storage=storage))
    path = scratch.table_path(name)
    rows = _without_hudi_columns(read_table(spark, demo.settings.table_path(name)))
    if rows.isEmpty():  # the capture raises no signal: one per real bar, in its schema
        bars = read_table(spark, demo.settings.table_path("silver_ohlcv"))
        rows = bars.select(
            *[
                (F.col(f.name) if f.name in bars.columns else F.lit("cross_up"))
                .cast(f.dataType)
                .alias(f.name)
                for f in rows.schema
            ]
        )
    assert rows.count() > 0
    commits = table.write.compact_every + 2
    write_batch(rows, table, path)
    third = F.abs(F.hash(*table.record_key)) % 3
    for commit in range(1, commits):
        changed = rows.filter(third == commit % 3).withColumn(
            table.ordering, F.col(table.ordering) + commit
        )
        write_batch(changed, table, path)
    files = lakefiles.current_files(scratch, name)
    assert any(".log." in f for f in files), "no log file left: nothing merged"

    theirs = {
        r["_hoodie_record_key"]: _plain(r.asDict())
        for r in _without_hudi_columns(read_table(spark, path), ("_hoodie_record_key",)).collect()
    }
    columns = list(next(iter(theirs.values())))
    ours = {r["_hoodie_record_key"]: _plain(r) for r in lakefiles.latest_rows(scratch, name)}
    streamed = [
        r for batch in lakefiles.row_batches(scratch, name, [], columns) for r in batch.to_pylist()
    ]
    assert len(ours) == len(theirs) == rows.count() == len(streamed)
    assert {k: {c: v[c] for c in columns} for k, v in ours.items()} == theirs
    assert {r["_hoodie_record_key"]: _plain(r) for r in streamed} == theirs
    # The newest version of every key won: its ordering value is the original's plus the
    # bump of the last commit that changed its third.
    last = {t: max(c for c in range(1, commits) if c % 3 == t) for t in range(3)}
    original = {
        tuple(r[c] for c in table.record_key): (r[table.ordering], r["third"])
        for r in rows.select(*table.record_key, table.ordering, third.alias("third")).collect()
    }
    for value in ours.values():
        ordering, t = original[tuple(value[c] for c in table.record_key)]
        assert value[table.ordering] == ordering + last[t], value


# --- the lakehouse CLI --------------------------------------------------------------


def test_cli_bars_in_every_format(demo: Demo) -> None:
    rows = sorted(
        lakefiles.latest_rows(
            demo.settings, "silver_ohlcv", [("symbol", "=", "BTCUSDT"), ("interval", "=", "1m")]
        ),
        key=lambda r: r["open_time"],
    )
    as_json = lakehouse(demo, "bars", "BTCUSDT", "-i", "1m", "-n", "5", "-f", "json")
    assert as_json.returncode == 0, as_json.stderr
    got = json.loads(as_json.stdout)
    assert [b["open_time"] for b in got] == [
        f"{r['open_time']:%Y-%m-%dT%H:%M:%SZ}" for r in rows[-5:]
    ]
    # Decimals travel as exact strings at the column's scale.
    assert [b["close"] for b in got] == [f"{r['close']:f}" for r in rows[-5:]]
    as_csv = lakehouse(demo, "bars", "btcusdt", "-n", "3", "-f", "csv").stdout.splitlines()
    assert as_csv[0].startswith("open_time,open,high,low,close,volume")
    assert as_csv[-1].split(",")[4] == f"{rows[-1]['close']:f}"
    table = lakehouse(demo, "bars", "BTCUSDT", "-n", "4").stdout.splitlines()
    assert table[0].split()[:5] == ["OPEN_TIME", "OPEN", "HIGH", "LOW", "CLOSE"] and len(table) == 5
    assert len({line.index(" ", 20) for line in table}) == 1  # columns aligned
    window = lakehouse(
        demo, "bars", "BTCUSDT", "--since", rows[2]["open_time"].isoformat(),
        "--until", rows[5]["open_time"].isoformat(), "-f", "json",
    )  # fmt: skip
    assert len(json.loads(window.stdout)) == 3


def test_cli_indicators_signals_risk_tables(demo: Demo) -> None:
    last = max(
        lakefiles.latest_rows(
            demo.settings, "silver_ohlcv", [("symbol", "=", "ETHUSDT"), ("interval", "=", "1m")]
        ),
        key=lambda r: r["open_time"],
    )
    got = json.loads(lakehouse(demo, "indicators", "ETHUSDT", "-n", "1", "-f", "json").stdout)
    assert got[0]["rsi_14"] == last["rsi_14"] and got[0]["macd"] == last["macd"]
    signals = lakehouse(demo, "signals", "BTCUSDT", "-f", "json")
    assert signals.returncode == 0 and isinstance(json.loads(signals.stdout), list)
    risk = json.loads(lakehouse(demo, "risk", "portfolio:core", "-f", "json").stdout)
    assert {r["window"] for r in risk} == {"1 hour", "24 hours"}
    assert all(r["subject"] == "portfolio:core" and r["n_obs"] > 0 for r in risk)
    tables = {r["table"]: r for r in json.loads(lakehouse(demo, "tables", "-f", "json").stdout)}
    assert set(tables) == ALL_TABLES
    assert (
        tables["bronze_trades"]["rows"]
        == lakefiles.table_stats(demo.settings, "bronze_trades").rows
    )


def test_cli_sql_passthrough(demo: Demo) -> None:
    query = "SELECT symbol, count(*) AS n FROM bronze_trades GROUP BY symbol ORDER BY symbol"
    done = lakehouse(demo, "sql", query, "-f", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    trades = lakefiles.latest_rows(demo.settings, "bronze_trades")
    expected = [
        {"symbol": s, "n": str(sum(1 for r in trades if r["symbol"] == s))}
        for s in ("BTCUSDT", "ETHUSDT")
    ]
    assert json.loads(done.stdout) == expected


def test_cli_rejects_bad_input_clearly(demo: Demo) -> None:
    bad_symbol = lakehouse(demo, "bars", "BTC/../x")
    assert bad_symbol.returncode == 2 and "not a Binance spot symbol" in bad_symbol.stderr
    bad_interval = lakehouse(demo, "bars", "BTCUSDT", "-i", "3m")
    assert bad_interval.returncode == 2 and "not built by silver" in bad_interval.stderr
    unknown = lakehouse(demo, "bars", "DOGEUSDT")
    assert unknown.returncode == 2 and "no 1m bars for DOGEUSDT" in unknown.stderr
    bad_sql = lakehouse(demo, "sql", "SELECT nope FROM bronze_trades")
    assert bad_sql.returncode == 2 and "nope" in bad_sql.stderr


def test_chart_of_the_demo_bars(demo: Demo, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "btc.png"
    done = lakehouse(demo, "chart", "BTCUSDT", "-i", "1m", "--last", "120", "--out", str(png))
    assert done.returncode == 0, done.stderr
    image = Image.open(png).convert("RGB")
    assert image.size == (1600, 1000)
    assert png.stat().st_size > 50_000
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 500  # candles, lines, bands, text: not a blank canvas
    html = tmp_path / "eth.html"
    assert lakehouse(demo, "chart", "ETHUSDT", "-i", "5m", "--out", str(html)).returncode == 0
    assert "<svg" in html.read_text()


# --- supervision, status and alerts on a running stack ----------------------------------


@pytest.fixture(scope="module")
def live(demo: Demo) -> Iterator[Demo]:
    """bronze, silver and gold running again on the demo's lake, under their supervisors."""
    up = run([str(INFRA / "services.sh"), "up", *LAYERS], demo.env, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield demo
    finally:
        run([str(INFRA / "services.sh"), "down", "replay", "producer", *LAYERS], demo.env)


def supervised(demo: Demo, name: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(
        (demo.settings.state_dir / "supervise" / f"{name}.json").read_text()
    )
    return state


def prometheus(settings: Settings, promql: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": promql})
    url = (
        f"http://{settings.services.host}:{settings.services.prometheus_port}/api/v1/query?{query}"
    )
    result: list[dict[str, Any]] = get_json(url)["data"]["result"]
    return result


def test_status_of_a_stack_without_producer_fails(live: Demo) -> None:
    # A driver busy on 2 cores can miss its UI health check for a moment ("sick").
    await_true(
        "bronze, silver and gold healthy",
        lambda: all(status(live)[1][layer][1] == "up" for layer in LAYERS),
        180,
    )
    code, lines, screen = status(live)
    assert code != 0  # make's own code (2) for the script's 1
    assert lines["producer"][1] == "down"
    for layer in LAYERS:
        assert lines[layer][1] == "up" and lines[layer][4] == "0", lines[layer]
    trades = live.settings.topic("trade").name
    assert any(line.split()[:1] == [trades] for line in screen.splitlines())
    rows = lakefiles.table_stats(live.settings, "bronze_trades").rows
    table_line = next(line for line in screen.splitlines() if line.startswith("bronze_trades "))
    assert table_line.split()[1] == str(rows)
    for query in ("bronze", "bronze_fast"):
        assert any(
            line.split()[:1] == [query] and " 0 records " in line for line in screen.splitlines()
        ), screen
    assert "PRODUCER   not answering" in screen


def test_a_killed_driver_comes_back_and_the_lake_is_unchanged(live: Demo) -> None:
    before = lake(live.settings)
    bronze_port = live.settings.layer("bronze").metrics_port
    metrics = f"http://{live.settings.services.host}:{bronze_port}/metrics"
    await_true(
        "Prometheus scraping bronze's restart count 0",
        lambda: prometheus(live.settings, 'lakehouse_supervisor_restarts{service="bronze"}'),
        60,
    )
    os.kill(supervised(live, "bronze")["child_pid"], signal.SIGKILL)
    await_true(
        "the supervisor restarting bronze",
        lambda: (
            supervised(live, "bronze")["restarts"] == 1
            and supervised(live, "bronze")["state"] == "running"
        ),
        60,
    )
    await_true(
        "both bronze queries reporting progress again",
        lambda: (
            len([k for k in progress.scrape(metrics) if k.startswith("lakehouse_query_active{")])
            == 2
        ),
        180,
    )
    assert progress.scrape(metrics)['lakehouse_supervisor_restarts{service="bronze"}'] == 1
    assert supervised(live, "bronze")["last_exit"] == -signal.SIGKILL
    _code, lines, _screen = status(live)
    assert lines["bronze"][1] == "up" and lines["bronze"][4] == "1"
    await_true(
        "the DriverRestarted alert firing for bronze",
        lambda: prometheus(
            live.settings,
            'ALERTS{alertname="DriverRestarted",service="bronze",alertstate="firing"}',
        ),
        120,
    )
    # Spark's own metrics of the restarted driver reach Prometheus too.
    await_true(
        "Spark's streaming gauges of bronze in Prometheus",
        lambda: prometheus(
            live.settings,
            '{job="spark-driver",__name__=~".*_spark_streaming_bronze_fast_latency_Value"}',
        ),
        60,
    )
    assert lake(live.settings) == before


def test_status_of_a_healthy_stack_succeeds(live: Demo) -> None:
    env = {**live.env, "SPEED": "1", "PRODUCER_SOURCE": "replay"}
    for name in ("replay", "producer"):
        started = run([str(INFRA / f"{name}.sh"), "start"], env)
        assert started.returncode == 0, started.stderr
    await_true("every service up", lambda: status(live)[0] == 0, 120)
    _code, lines, screen = status(live)
    assert all(line[1] == "up" for line in lines.values()), lines
    producer_line = next(line for line in screen.splitlines() if line.startswith("PRODUCER"))
    assert "frames/s" in producer_line and "delivery errors 0" in producer_line


def test_every_service_listens_on_loopback_and_exposes_no_secret(live: Demo) -> None:
    """Each process of the stack (and its children: the JVMs, the drivers' Python)."""
    await_true("every service up", lambda: status(live)[0] == 0, 180)
    pid_dir = live.settings.state_dir / "pids"
    roots = {int(p.read_text()) for p in pid_dir.glob("*.pid")}
    sockets = listening_sockets(descendants(roots))
    names = {Path(f"/proc/{pid}/cmdline").read_bytes()[:60] for _a, _p, pid in sockets}
    assert len(sockets) >= 12, (sockets, names)  # every service's ports at least
    exposed = {
        (a, p) for a, p, _pid in sockets if a not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    }
    assert not exposed, exposed
    secret = live.settings.s3_credentials().secret_key
    host = live.settings.services.host
    pages = [f"http://{host}:{live.settings.services.producer_metrics_port}/metrics"]
    for layer in LAYERS:
        layer_settings = live.settings.layer(layer)
        ui = f"http://{host}:{layer_settings.ui_port}"
        app = get_json(f"{ui}/api/v1/applications")[0]["id"]
        pages += [
            f"http://{host}:{layer_settings.metrics_port}/metrics",
            f"{ui}/metrics/prometheus/",
            f"{ui}/api/v1/applications/{app}/environment",
        ]
    for page in pages:
        with urllib.request.urlopen(page, timeout=10) as response:
            text = response.read().decode()
        assert text and secret not in text, page
