"""`lakehouse`: the lake from a terminal. Bars, indicators, signals, risk, tables, SQL, charts.

    lakehouse bars BTCUSDT --interval 1m --limit 20       latest bars (silver_ohlcv)
    lakehouse indicators BTCUSDT -i 5m                     SMA, EMA, RSI, MACD, Bollinger
    lakehouse signals BTCUSDT [--retracted]                crossings, breakouts, anomalies
    lakehouse risk BTCUSDT|portfolio:core [--window "1 hour"]
    lakehouse tables                                       rows, files, size, last commit
    lakehouse sql "SELECT ..."                             Spark SQL on every table
    lakehouse chart BTCUSDT -i 1m --last 240 --out btc.png   (.png, .svg or .html)

Every listing takes `--format table|csv|json` (table by default). The
listings read the tables' current files directly (streaming_jobs/common/
lakefiles.py) and answer in about a second while the jobs run; `sql` starts
Spark through ./spark-submit.sh (tens of seconds), for anything else. The
settings (conf/, STORAGE, STATE_DIR) are the pipeline's own.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streaming_jobs.cli import output
from streaming_jobs.common import lakefiles
from streaming_jobs.common.s3 import S3Error
from streaming_jobs.common.settings import (
    PROJECT_ROOT,
    Settings,
    check_symbol,
    load_settings,
)
from streaming_jobs.common.strict import ConfigError
from streaming_jobs.gold import analytics
from streaming_jobs.silver import indicators, tables as silver_tables

BARS = "silver_ohlcv"
SIGNALS = "gold_signals"
RISK = "gold_risk"
BAR_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "vwap",
    "is_final",
    "is_filled",
)
INDICATOR_COLUMNS = ("open_time", "close", *indicators.OUTPUTS)
SIGNAL_COLUMNS = ("open_time", "interval", "signal", "direction", "close", "z_score", "retracted")
RISK_COLUMNS = (
    "subject",
    "window",
    "as_of",
    *analytics.RISK_COLUMNS[1:],
)  # as_of_ms shown as as_of
TABLE_COLUMNS = ("table", "rows", "files", "bytes", "partitions", "last_commit")


class UsageError(ValueError):
    pass


def _utc(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise UsageError(f"{text!r} is not an ISO-8601 time like 2024-08-08T14:00") from err
    return _naive(when)


def _naive(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def bars(
    settings: Settings,
    symbol: str,
    interval: str,
    since: str | None = None,
    until: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """One series' bars within [since, until), the last `limit` of them, oldest first.

    The table is partitioned by interval and period (silver/tables.py): the
    periods are read newest first, each filtered by symbol on the files'
    statistics, until `limit` bars are found.
    """
    if interval not in settings.pipeline.streaming.silver.intervals:
        known = ", ".join(settings.pipeline.streaming.silver.intervals)
        raise UsageError(f"interval {interval!r} is not built by silver (configured: {known})")
    periods = sorted(
        (
            p.split("/period=", 1)[1]
            for p in lakefiles.partitions(settings, BARS)
            if p.startswith(f"interval={interval}/period=")
        ),
        reverse=True,
    )
    if since:
        first = silver_tables.period_of(interval, _epoch_ms(_utc(since)))
        periods = [p for p in periods if p >= first]
    if until:
        last = silver_tables.period_of(interval, _epoch_ms(_utc(until)))
        periods = [p for p in periods if p <= last]
    rows: list[dict[str, Any]] = []
    for period in periods:
        filters = [("interval", "=", interval), ("period", "=", period), ("symbol", "=", symbol)]
        rows = window(
            sorted(lakefiles.latest_rows(settings, BARS, filters), key=_open_time) + rows,
            since,
            until,
            None,
        )
        if limit and len(rows) >= limit:
            break
    if not rows and not (since or until):
        raise UsageError(
            f"no {interval} bars for {symbol} in {settings.table_path(BARS)} "
            "(not subscribed, or silver has not written them yet: see make status)"
        )
    return rows[-limit:] if limit else rows


def _open_time(row: dict[str, Any]) -> dt.datetime:
    return _naive(row["open_time"])


def _epoch_ms(when: dt.datetime) -> int:
    return int(when.replace(tzinfo=dt.UTC).timestamp() * 1000)


def window(
    rows: list[dict[str, Any]], since: str | None, until: str | None, limit: int | None
) -> list[dict[str, Any]]:
    """Rows (ordered by open_time) within [since, until), then the last `limit` of them."""
    if since:
        rows = [r for r in rows if _naive(r["open_time"]) >= _utc(since)]
    if until:
        rows = [r for r in rows if _naive(r["open_time"]) < _utc(until)]
    return rows[-limit:] if limit else rows


def signals(settings: Settings, symbol: str, interval: str | None, retracted: bool) -> list[Any]:
    filters = [("symbol", "=", symbol)] + ([("interval", "=", interval)] if interval else [])
    rows = lakefiles.latest_rows(settings, SIGNALS, filters)
    rows = [
        r
        for r in rows
        if (interval is None or r["interval"] == interval) and (retracted or not r["retracted"])
    ]
    return sorted(rows, key=lambda r: (_naive(r["open_time"]), r["interval"], r["signal"]))


def risk(settings: Settings, subject: str, windows: Sequence[str]) -> list[dict[str, Any]]:
    """The latest risk row of `subject` for each window."""
    latest = []
    for name in windows:
        rows = [
            r
            for r in lakefiles.latest_rows(
                settings, RISK, [("window", "=", name), ("subject", "=", subject)]
            )
        ]
        if rows:
            latest.append(max(rows, key=lambda r: _naive(r["as_of"])))
    if not latest:
        raise UsageError(f"no risk rows for {subject!r} in {settings.table_path(RISK)}")
    return latest


def table_list(settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for table in lakefiles.tables(settings):
        stats = lakefiles.table_stats(settings, table)
        rows.append(
            {
                "table": table,
                "rows": stats.rows,
                "files": stats.files,
                "bytes": stats.bytes,
                "partitions": len(lakefiles.partitions(settings, table)),
                "last_commit": stats.last_commit,
            }
        )
    return rows


def run_sql(query: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Spark SQL through ./spark-submit.sh sql (its CSV keeps decimals and times exact)."""
    done = subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "sql", query],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("sql: ")]
        raise UsageError("\n".join(errors) or done.stderr[-2000:])
    reader = csv.DictReader(io.StringIO(done.stdout))
    rows = [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]
    return list(reader.fieldnames or []), rows


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="lakehouse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = top.add_subparsers(dest="command", required=True)

    def listing(name: str, text: str, series: bool = True) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=text, description=text)
        if series:
            command.add_argument("symbol", help="e.g. BTCUSDT")
            command.add_argument("-i", "--interval", default="1m", help="bar interval (1m)")
            command.add_argument("-n", "--limit", type=int, default=20, help="latest N rows (20)")
            command.add_argument("--since", help="from this UTC time (ISO-8601)")
            command.add_argument("--until", help="before this UTC time (ISO-8601)")
        command.add_argument("-f", "--format", choices=output.FORMATS, default="table")
        return command

    listing("bars", "latest OHLCV bars of a symbol and interval")
    listing("indicators", "latest indicator values of a symbol and interval")
    sig = listing("signals", "signal events of a symbol (all intervals unless -i is given)")
    sig.set_defaults(interval=None)
    sig.add_argument("--retracted", action="store_true", help="include retracted signals")
    rsk = listing("risk", "latest VaR, ES, drawdown, volatility, Sharpe", series=False)
    rsk.add_argument("subject", help="a symbol, or portfolio:<name> (conf/portfolio.yaml)")
    rsk.add_argument("--window", action="append", help="risk window (default: every configured)")
    listing("tables", "every lake table with its rows, files, size, last commit", series=False)
    sql = listing("sql", "run Spark SQL; every lake table is a view under its name", series=False)
    sql.add_argument("query")
    chart = commands.add_parser("chart", help="candlestick chart with indicators to PNG/SVG/HTML")
    chart.add_argument("symbol")
    chart.add_argument("-i", "--interval", default="1m")
    chart.add_argument("-n", "--last", type=int, default=240, help="the last N bars (240)")
    chart.add_argument("--since", help="from this UTC time (ISO-8601)")
    chart.add_argument("--until", help="before this UTC time (ISO-8601)")
    chart.add_argument(
        "-o", "--out", type=Path, help="file (.png, .svg, .html); default <symbol>-<interval>.png"
    )
    return top


def run(args: argparse.Namespace, settings: Settings, out: Any) -> int:
    def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
        output.write(rows, columns, args.format, out)

    if getattr(args, "symbol", None):
        args.symbol = check_symbol(args.symbol.upper())
    if args.command in ("bars", "indicators"):
        rows = bars(settings, args.symbol, args.interval, args.since, args.until, args.limit)
        emit(rows, BAR_COLUMNS if args.command == "bars" else INDICATOR_COLUMNS)
    elif args.command == "signals":
        rows = window(
            signals(settings, args.symbol, args.interval, args.retracted),
            args.since,
            args.until,
            args.limit,
        )
        emit(rows, SIGNAL_COLUMNS)
    elif args.command == "risk":
        subject = (
            args.subject
            if args.subject.startswith("portfolio:")
            else check_symbol(args.subject.upper())
        )
        emit(
            risk(settings, subject, args.window or settings.pipeline.streaming.gold.risk_windows),
            RISK_COLUMNS,
        )
    elif args.command == "tables":
        emit(table_list(settings), TABLE_COLUMNS)
    elif args.command == "sql":
        columns, rows = run_sql(args.query)
        emit(rows, columns)
    elif args.command == "chart":
        from streaming_jobs.cli.chart import render_chart  # matplotlib only when charting

        rows = bars(settings, args.symbol, args.interval, args.since, args.until, args.last)
        target = args.out or Path(f"{args.symbol}-{args.interval}.png")
        title = f"{args.symbol} {args.interval} bars (silver_ohlcv)"
        render_chart(rows, target, title)
        print(
            f"chart: {len(rows)} {args.interval} bars of {args.symbol} -> {target}", file=sys.stderr
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args, load_settings(), sys.stdout)
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 78
    except (UsageError, ValueError) as err:
        print(f"lakehouse {args.command}: {err}", file=sys.stderr)
        return 2
    except (OSError, S3Error) as err:
        print(f"lakehouse {args.command}: cannot read the lake: {err}", file=sys.stderr)
        return 1
