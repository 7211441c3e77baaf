"""The whole Binance spot market on one machine: 2,000 symbols through the real stack.

    python -m tests.bench.market_bench --symbols 2000 --minutes 10 --burst-minutes 5

The replay exchange serves a market of `--symbols` symbols built from real
frames (tests/bench/market.py): `trade` and `kline_1m` for every symbol, about
1,000 trade frames/s and 1,000 kline frames/s in aggregate. The producer
subscribes to all of them (4,000 streams: four connections, as Binance
allows 1,024 streams per connection) and the whole pipeline runs as `make up`
runs it: Kafka, MinIO, Prometheus, the producer and the bronze, silver and
gold drivers, each under its supervisor, on a state dir and ports of its own
(`.state/bench-market`, ports +30000). Two phases, each on a fresh stack:

1. base: the replay at speed 1 for `--minutes`;
2. burst: the same market at speed 5 (5x both rates) for `--burst-minutes`.

Every 10 s the harness records each stage's backlog: frames the replay has
published that the producer has not handled, Kafka records each bronze
query has not committed, bronze commits silver has not read, silver commits
gold has not read, and the resident memory of every process of the stack.
After each phase, silver freshness: for every symbol's 1m bar that became
final, the time it became visible (its commit completing on silver's
timeline) minus the moment its minute ended, the replay's exchange clock
mapped to the wall clock. A stage keeps up when it committed at all and its
backlog did not grow over the last third of the phase by more than about a
minute of input (or three commits): bounded, not growing.

Results: a table on stdout, docs/bench/market.json and a section in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import SparkSession, functions as F

from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.hudi import read_table, table_exists
from streaming_jobs.common.settings import PROJECT_ROOT, Settings
from streaming_jobs.silver import tables as silver_tables
from tests.bench import market
from tests.bench.bronze_bench import hudi_visible, session
from tests.bench.producer_bench import memory_gb
from tests.bench.results import percentile, publish_results
from tests.chaos.stack import Stack, Tuning, write_conf
from tests.conftest import write_test_conf
from tests.demo import CAPTURES
from tests.support import get_json

STATE = PROJECT_ROOT / ".state" / "bench-market"
PORT_SHIFT = 30000
START_MS = 1_723_161_600_000  # 2024-08-09 00:00 UTC, the day after the real capture
LOOP_MINUTES = 5
SAMPLE_S = 10.0
# Each stage's backlog sample, its unit's allowance for noise (a trigger's
# worth of input is not a growing backlog), and the table whose commits say
# the stage has delivered at all.
STAGE_TABLES = {"bronze": "bronze_trades", "silver": "silver_ohlcv", "gold": "gold_market_summary"}
# Production timings: nothing compressed here.
TUNING = Tuning(
    rollover_after_s=82800,
    watchdog_silence_s=30,
    ping_interval_s=20.0,
    pong_timeout_s=60.0,
    restart_backoff_max_s=60.0,
)


def log(line: str) -> None:
    print(f"{dt.datetime.now(dt.UTC):%H:%M:%S} {line}", flush=True)


def market_conf(base: Path, dest: Path, name: str, symbols: int) -> Path:
    """The bench's conf: `symbols` symbols with trade and kline_1m, a few of them tier 1."""
    conf = write_conf(base, dest, name, "local", TUNING)
    names = market.symbol_names(symbols)
    entries = [{"name": n, "tier": 1 if i < 4 else 3, "enabled": True} for i, n in enumerate(names)]
    (conf / "symbols.yaml").write_text(
        yaml.safe_dump({"defaults": {"streams": ["trade", "kline_1m"]}, "symbols": entries})
    )
    (conf / "portfolio.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "core",
                "weights": {names[0]: 0.5, names[1]: 0.5},
                "risk_free_rate": 0.04,
            }
        )
    )
    return conf


def rss_mb(state: Path) -> dict[str, float]:
    """Resident MB of every process of the stack (those started with its STATE_DIR)."""
    marker = f"STATE_DIR={state}".encode()
    groups: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        rss = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
        name = _component(cmdline)
        groups[name] = groups.get(name, 0.0) + rss / 1024
    return groups


def _component(cmdline: str) -> str:
    for name, pattern in (
        ("replay", "-m producer.replay"),
        ("producer", "-m producer"),
        ("kafka", "kafka.Kafka"),
        ("minio", "minio server"),
        ("prometheus", "prometheus"),
        ("supervisors", "supervise.py"),
    ):
        if pattern in cmdline:
            return name
    for layer in ("bronze", "silver", "gold"):
        if f"bench-market-{layer}" in cmdline or f" {layer}" in cmdline:
            return layer
    return "other"


def exchange_ms(settings: Settings) -> int:
    url = f"http://{settings.services.host}:{settings.services.replay_port}/api/v3/time"
    return int(get_json(url)["serverTime"])


class Phase:
    """One phase: a fresh stack on the market at `speed` for `minutes`, sampled as it runs."""

    def __init__(self, name: str, capture: Path, symbols: int, speed: int, minutes: float) -> None:
        self.name, self.capture, self.speed, self.minutes = name, capture, speed, minutes
        base = {k: v for k, v in os.environ.items() if k not in ("STORAGE", "ACTIVE_SYMBOLS")}
        base.update(STATE_DIR=str(STATE), TZ="UTC", REPLAY_START_TIMEOUT="600")
        conf = market_conf(STATE / "shared-conf", STATE / f"{name}-conf", name, symbols)
        self.stack = Stack({**base, "LAKE_CONF_DIR": str(conf)}, TUNING, log)
        self.settings = self.stack.settings
        self.samples: list[dict[str, Any]] = []
        self.clock: list[tuple[float, int]] = []  # (wall ms, exchange ms)

    def run(self) -> None:
        self.stack.start([self.capture], str(self.speed), loops=0)
        started = time.monotonic()
        try:
            while time.monotonic() - started < self.minutes * 60:
                time.sleep(SAMPLE_S)  # a sampling period, not a wait for a condition
                self.samples.append(self.sample(time.monotonic() - started))
                self._print(self.samples[-1])
        finally:
            self.stack.stop()

    def sample(self, at_s: float) -> dict[str, Any]:
        settings = self.settings
        out: dict[str, Any] = {"t_s": round(at_s, 1)}
        try:
            wall = time.time_ns() / 1e6
            self.clock.append((wall, exchange_ms(settings)))
            status = self.stack.replay.status()
            health = self.stack.producer_health() or {}
            out["published"] = status.get("frames_published")
            out["handled"] = health.get("frames_handled")
            if out["published"] is not None and out["handled"] is not None:
                out["producer_behind"] = max(0, out["published"] - out["handled"])
            for query in settings.bronze_queries():
                out[f"kafka_lag_{query}"] = progress.lag(settings, query)
            out["silver_behind"] = progress.commits_behind(
                settings, "silver", progress.silver_source(settings)
            )
            out["gold_behind"] = progress.commits_behind(settings, "gold", progress.GOLD_SOURCE)
            for stage, table in STAGE_TABLES.items():
                out[f"{stage}_commits"] = len(lakefiles.instants(settings, table))
        except Exception as err:  # a stage not answering is a finding, not a crash
            out["error"] = repr(err)[:200]
        out["rss_mb"] = {k: round(v) for k, v in sorted(rss_mb(STATE).items())}
        # The replay exchange stands in for Binance: not part of the stack's memory.
        out["rss_total_mb"] = round(sum(v for k, v in out["rss_mb"].items() if k != "replay"))
        return out

    def _print(self, s: dict[str, Any]) -> None:
        lags = " ".join(f"{k[10:]}={s[k]}" for k in s if k.startswith("kafka_lag_"))
        log(
            f"{self.name} {s['t_s']:6.0f}s published {s.get('published')} producer behind "
            f"{s.get('producer_behind')} | kafka lag {lags} | silver behind "
            f"{s.get('silver_behind')} gold behind {s.get('gold_behind')} | "
            f"{s['rss_total_mb']} MB {s.get('error', '')}"
        )

    def to_wall_ms(self, exchange: float) -> float:
        """The wall-clock ms at which the exchange clock read `exchange` (speed-scaled)."""
        offsets = [wall - ex / self.speed for wall, ex in self.clock]
        return statistics.median(offsets) + exchange / self.speed


def freshness(spark: SparkSession, phase: Phase) -> dict[str, Any]:
    """Final 1m bars: visible (commit completed) minus minute end, over every symbol."""
    settings = phase.settings
    path = settings.table_path(silver_tables.OHLCV.name)
    if not table_exists(spark, path):  # silver never committed a batch
        return {"bars": 0}
    visible = hudi_visible(spark, settings, silver_tables.OHLCV.name)
    bars = (
        read_table(spark, path)
        .filter(F.col("interval") == "1m")
        .select(
            F.col("_hoodie_commit_time").alias("commit"),
            F.unix_millis("open_time").alias("open_ms"),
            "is_final",
            "is_filled",
        )
        .join(visible, "commit")
        .collect()
    )
    if not bars:
        return {"bars": 0}
    first = min(b.open_ms for b in bars) + 60_000  # skip the minute the stack started in
    last_ex = max(ex for _, ex in phase.clock)
    whole = [b for b in bars if b.open_ms >= first and b.open_ms + 60_000 <= last_ex - 60_000]
    lags = sorted(
        (b.visible_ms - phase.to_wall_ms(b.open_ms + 60_000)) / 1000 for b in whole if b.is_final
    )
    out: dict[str, Any] = {
        "bars": len(whole),
        "not_final": sum(not b.is_final for b in whole),
        "filled": sum(bool(b.is_filled) for b in whole),
    }
    if lags:
        out.update(
            p50_s=round(statistics.median(lags), 1),
            p99_s=round(percentile(lags, 0.99), 1),
            max_s=round(lags[-1], 1),
        )
    return out


def verdict(
    samples: list[dict[str, Any]], key: str, slack: float, delivered: str
) -> dict[str, Any]:
    """Whether a stage kept up: it delivered, and its backlog did not grow over the last third.

    `delivered` names the sample of the stage's output commits (a stage
    that never committed did not keep up, whatever its backlog says: gold is
    0 commits behind a silver that never wrote). Growth beyond `slack` (a
    trigger's worth of input) from the start to the end of the last third is
    a backlog that does not stay bounded.
    """
    rows = [s for s in samples if "error" not in s]
    if len(rows) < 3:
        return {"keeps_up": False, "samples": len(rows)}
    last = rows[2 * len(rows) // 3 :]
    values: list[Any] = [s.get(key) for s in last]
    out: dict[str, Any] = {
        "commits": rows[-1].get(delivered) if delivered else None,
        "start_of_last_third": values[0],
        "max_last_third": None if None in values else max(values),
        "final": values[-1],
    }
    if delivered and not rows[-1].get(delivered):
        return {**out, "keeps_up": False, "why": "never committed"}
    if None in values:
        return {**out, "keeps_up": False, "why": "no batch yet"}
    growth = values[-1] - values[0]
    out["keeps_up"] = growth <= slack
    if not out["keeps_up"]:
        out["why"] = f"grew by {growth:,}"
    return out


def stages(samples: list[dict[str, Any]], rate: float, settings: Settings) -> dict[str, Any]:
    """Each stage's verdict; the slack is about a minute of input, or a few commits."""
    return {
        "producer": verdict(samples, "producer_behind", 30 * rate, ""),
        **{
            f"bronze {q}": verdict(samples, f"kafka_lag_{q}", 60 * rate, "bronze_commits")
            for q in settings.bronze_queries()
        },
        "silver (commits behind)": verdict(samples, "silver_behind", 3, "silver_commits"),
        "gold (commits behind)": verdict(samples, "gold_behind", 3, "gold_commits"),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.market_bench")
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--trades-per-s", type=float, default=1000.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--burst-minutes", type=float, default=5.0)
    args = parser.parse_args(argv)
    command = (
        f"python -m tests.bench.market_bench --symbols {args.symbols} --minutes {args.minutes:g} "
        f"--burst-minutes {args.burst_minutes:g}"
    )
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    write_test_conf(STATE / "shared-conf", shift=PORT_SHIFT)
    capture = STATE / "market.gz"
    started = time.monotonic()
    frames = market.write(
        capture,
        market.generate(CAPTURES, args.symbols, args.trades_per_s, LOOP_MINUTES, START_MS),
    )
    took = time.monotonic() - started
    log(f"market: {frames:,} frames per {LOOP_MINUTES}-minute loop, built in {took:.0f} s")
    phases = [Phase("base", capture, args.symbols, 1, args.minutes)]
    if args.burst_minutes > 0:
        phases.append(Phase("burst", capture, args.symbols, 5, args.burst_minutes))
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": {"cores": os.cpu_count(), "memory_gb": round(memory_gb(), 1)},
        "symbols": args.symbols,
        "streams": 2 * args.symbols,
        "frames_per_loop": frames,
        "phases": {},
    }
    try:
        for phase in phases:
            log(f"phase {phase.name}: speed {phase.speed} for {phase.minutes:g} min")
            phase.run()
        spark = session(phases[0].settings)
        for phase in phases:
            samples = phase.samples
            rate = frames / (LOOP_MINUTES * 60) * phase.speed
            report["phases"][phase.name] = {
                "speed": phase.speed,
                "minutes": phase.minutes,
                "offered_frames_per_s": round(rate),
                "stages": stages(samples, rate, phase.settings),
                "freshness": freshness(spark, phase),
                "peak_rss_mb": max((s["rss_total_mb"] for s in samples), default=0),
                "peak_rss_by_process_mb": {
                    k: max(s["rss_mb"].get(k, 0) for s in samples)
                    for k in sorted({k for s in samples for k in s["rss_mb"]})
                },
                "samples": samples,
            }
        spark.stop()
    finally:
        for phase in phases:
            phase.stack.stop()
        phases[0].stack.script("services", "down")
    publish_results("market", report, render(report))
    return 0


def render(report: dict[str, Any]) -> str:
    lines = [
        f"## Whole market: {report['symbols']:,} symbols through the whole stack\n",
        f"{report['date']}, {report['machine']['cores']} cores, "
        f"{report['machine']['memory_gb']:.1f} GB; {report['symbols']:,} symbols x (trade, "
        f"kline_1m) = {report['streams']:,} streams, fed by the replay exchange with load of "
        f"real shape (tests/bench/market.py); command: `{report['command']}`.\n",
        "Backlog: frames the producer has not handled, Kafka records a bronze query has not "
        "committed, commits silver (gold) has not read. A stage keeps up when it committed "
        "and its backlog did not grow over the last third of the phase.\n",
        "| phase | offered frames/s | stage | commits | backlog at the start of the last third "
        "| max | at the end | keeps up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in report["phases"].items():
        for stage, v in p["stages"].items():
            verdict = "yes" if v.get("keeps_up") else f"no: {v.get('why', '')}"
            lines.append(
                f"| {name} | {p['offered_frames_per_s']:,} | {stage} | {_n(v.get('commits'))} | "
                f"{_n(v.get('start_of_last_third'))} | {_n(v.get('max_last_third'))} | "
                f"{_n(v.get('final'))} | {verdict} |"
            )
    lines += [
        "",
        "Silver freshness (a minute's end -> its final 1m bar visible) and memory:",
        "",
        "| phase | final 1m bars | not final | p50 s | p99 s | max s | peak RSS of the stack MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in report["phases"].items():
        f = p["freshness"]
        lines.append(
            f"| {name} | {f.get('bars', 0):,} | {_n(f.get('not_final'))} | {_n(f.get('p50_s'))} "
            f"| {_n(f.get('p99_s'))} | {_n(f.get('max_s'))} | {p['peak_rss_mb']:,} |"
        )
    lines.append("")
    for name, p in report["phases"].items():
        by = ", ".join(f"{k} {v:,}" for k, v in p["peak_rss_by_process_mb"].items())
        lines.append(f"Peak RSS by process, {name} (MB; the stack excludes the replay): {by}.")
    return "\n".join(lines) + "\n"


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
