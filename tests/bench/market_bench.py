"""The whole Binance spot market on one machine: 2,000 symbols through the real stack.

    python -m tests.bench.market_bench --symbols 2000 --minutes 10 --burst-minutes 5

The replay exchange serves a market of `--symbols` symbols built from real
frames (tests/bench/market.py): `trade` and `kline_1m` for every symbol, about
1,000 trade frames/s and 1,000 kline frames/s in aggregate. The producer
subscribes to all of them (4,000 streams: four connections, as Binance
allows 1,024 streams per connection) and the whole pipeline runs as `make up`
runs it: Kafka, MinIO, Prometheus, the producer and the bronze, silver and
gold drivers, each under its supervisor, on a state dir and ports of its own
(`.state/bench-market`, ports +21000). Two phases, each on a fresh stack:

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
import itertools
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import SparkSession, functions as F

from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.hudi import HudiTable, read_table, table_exists, write_options
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
PORT_SHIFT = 21000  # every port below the ephemeral range (live_bench.PORT_SHIFT)
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


def market_conf(base: Path, dest: Path, name: str, symbols: int, storage: str = "local") -> Path:
    """The bench's conf: `symbols` symbols with trade and kline_1m, a few of them tier 1."""
    conf = write_conf(base, dest, name, storage, TUNING)
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


_TICK = os.sysconf("SC_CLK_TCK")


def stack_processes(state: Path) -> dict[int, tuple[str, float, float]]:
    return {pid: (name, rss, cpu) for pid, (name, rss, cpu, _) in _processes(state).items()}


def _processes(state: Path) -> dict[int, tuple[str, float, float, int]]:
    """pid -> (component, resident MB, CPU seconds so far) of every process of the stack
    (started with its STATE_DIR). A process nobody names (Spark's Python workers) counts
    for the component of its nearest named ancestor. The CPU includes that of the
    process's children that ended (short-lived commands a JVM forks, workers that
    exited): they are gone from /proc by the end of a window, and their parent's
    cutime/cstime is the only place their CPU is left."""
    marker = f"STATE_DIR={state}".encode()
    found: dict[int, tuple[str, int, float, float]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        rss = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
        cpu = sum(int(stat[i]) for i in (11, 12, 13, 14)) / _TICK  # u/s time, children's
        found[int(proc.name)] = (_component(cmdline), int(stat[1]), rss / 1024, cpu)
    out = {}
    for pid, (name, parent, rss_mb_, cpu) in found.items():
        ancestor = parent
        while name == "other" and ancestor in found:
            name, ancestor = found[ancestor][0], found[ancestor][1]
        out[pid] = (name, rss_mb_, cpu, parent)
    return out


def rss_mb(state: Path) -> dict[str, float]:
    """Resident MB of every process of the stack, by component."""
    groups: dict[str, float] = {}
    for name, rss, _cpu in stack_processes(state).values():
        groups[name] = groups.get(name, 0.0) + rss
    return groups


def cpu_pids(state: Path) -> dict[str, list[Any]]:
    """pid -> [component, CPU seconds with its ended children's, parent pid] of the stack
    (keys as strings: samples are JSON)."""
    return {
        str(pid): [name, round(cpu, 2), parent]
        for pid, (name, _rss, cpu, parent) in _processes(state).items()
    }


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
        if f"lakehouse-{layer}" in cmdline or f"launch.py {layer}" in cmdline:
            return layer
    return "other"


# A batch's line in a layer's log (streaming_jobs/*/job.py): when, which query, its id,
# how long it took.
_BATCH_LINE = re.compile(
    r"^(\S+ \S+) INFO (bronze|silver|gold): (?:(\w+) )?batch (\d+): .* in "
    r"([0-9.]+) s$"
)


def batch_log(settings: Settings) -> list[tuple[float, str, int, float]]:
    """(epoch s, query, batch id, seconds) of every batch the layers' logs report."""
    out = []
    for layer in ("bronze", "silver", "gold"):
        path = settings.log_dir() / f"{layer}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = _BATCH_LINE.match(line)
            if m:
                when = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                at = when.replace(tzinfo=dt.UTC).timestamp()
                out.append((at, m.group(3) or m.group(2), int(m.group(4)), float(m.group(5))))
    return sorted(out)


def spread(values: list[float]) -> dict[str, float]:
    """n, p50, p99 (nearest rank below) and max of `values`."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 0.5), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
    }


def exchange_ms(settings: Settings) -> int:
    url = f"http://{settings.services.host}:{settings.services.replay_port}/api/v3/time"
    return int(get_json(url)["serverTime"])


class Phase:
    """One phase: a fresh stack replaying `captures` at `speed` for `minutes`, sampled as it
    runs, on the conf (symbols, storage) at `conf` and the state dir `state`."""

    def __init__(
        self,
        name: str,
        captures: list[Path],
        conf: Path,
        speed: int,
        minutes: float,
        state: Path = STATE,
    ) -> None:
        self.name, self.captures, self.speed, self.minutes = name, captures, speed, minutes
        self.state = state
        base = {k: v for k, v in os.environ.items() if k not in ("STORAGE", "ACTIVE_SYMBOLS")}
        base.update(STATE_DIR=str(state), TZ="UTC", REPLAY_START_TIMEOUT="600")
        self.stack = Stack({**base, "LAKE_CONF_DIR": str(conf)}, TUNING, log)
        self.settings = self.stack.settings
        self.samples: list[dict[str, Any]] = []
        self.clock: list[tuple[float, int]] = []  # (wall ms, exchange ms)
        self.on_sample: Any = None  # called with each sample (a bench's own readings)
        self.before_stop: Any = None  # called at the end, while the stack still runs

    def run(self) -> None:
        self.stack.start(self.captures, str(self.speed), loops=0)
        started = time.monotonic()
        try:
            while time.monotonic() - started < self.minutes * 60:
                time.sleep(SAMPLE_S)  # a sampling period, not a wait for a condition
                self.samples.append(self.sample(time.monotonic() - started))
                if self.on_sample is not None:
                    self.on_sample(self.samples[-1])
                self._print(self.samples[-1])
        finally:
            if self.before_stop is not None:
                self.before_stop()
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
            # What reached the broker: rates are reported as delivered, not as offered.
            out["topic_ends"] = self.stack.topic_ends()
        except Exception as err:  # a stage not answering is a finding, not a crash
            out["error"] = repr(err)[:200]
        out["rss_mb"] = {k: round(v) for k, v in sorted(rss_mb(self.state).items())}
        out["cpu_pids"] = cpu_pids(self.state)
        out["wall_s"] = time.time()
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


def freshness(spark: SparkSession, phase: Phase, warmup_s: float = 60.0) -> dict[str, Any]:
    """Every symbol's whole minutes: its end -> its 1m bar visible as final.

    The minutes counted end from `warmup_s` after the phase began (exchange
    clock) to a minute before it stopped. A minute whose bar never became
    final counts as not fresh, with its age when the phase stopped.
    """
    settings = phase.settings
    path = settings.table_path(silver_tables.OHLCV.name)
    ex_start, ex_end = min(ex for _, ex in phase.clock), max(ex for _, ex in phase.clock)
    lo = ex_start + int(warmup_s * 1000 * phase.speed)
    lo += -lo % 60_000
    hi = ex_end - 60_000 * phase.speed
    stopped_wall = phase.to_wall_ms(ex_end)
    if not table_exists(spark, path):  # silver never committed a batch
        return {"bars": 0, "missing_all": True}
    visible = hudi_visible(spark, settings, silver_tables.OHLCV.name)
    bars = (
        read_table(spark, path)
        .filter(F.col("interval") == "1m")
        .select(
            "symbol",
            F.col("_hoodie_commit_time").alias("commit"),
            F.unix_millis("open_time").alias("open_ms"),
            "is_final",
            "is_filled",
        )
        # A left join: a bar whose commit has left the active timeline (archived: Hudi keeps
        # the last commits only, about 13 minutes of silver's in a soak) has no known time.
        .join(visible, "commit", "left")
        .collect()
    )
    first = {}
    for b in bars:
        first[b.symbol] = min(first.get(b.symbol, b.open_ms), b.open_ms)
    seen = {(b.symbol, b.open_ms): b for b in bars}
    ages, missing, not_final, filled, archived = [], 0, 0, 0, 0
    for symbol, begins in first.items():
        for minute in range(max(lo, begins + 60_000), hi - 60_000 + 1, 60_000):
            bar = seen.get((symbol, minute))
            end_wall = phase.to_wall_ms(minute + 60_000)
            if bar is not None and bar.is_final and bar.visible_ms is None:
                archived += 1  # final, but when it became visible is not known
            elif bar is not None and bar.is_final:
                ages.append((bar.visible_ms - end_wall) / 1000)
                filled += bool(bar.is_filled)
            else:
                missing += bar is None
                not_final += bar is not None
                ages.append((stopped_wall - end_wall) / 1000)
    return {
        "bars": len(ages),
        "symbols": len(first),
        "final": len(ages) - missing - not_final,
        # final minutes left out of the figures: their commit was archived before the read
        "archived": archived,
        "not_final": not_final,
        "missing": missing,
        "filled": filled,
        "age_s": spread(ages),
        # as before December 2026: only the bars that became final
        "p50_s": spread(ages).get("p50"),
        "p99_s": spread(ages).get("p99"),
        "max_s": spread(ages).get("max"),
    }


def verdict(samples: list[dict[str, Any]], key: str, delivered: str) -> dict[str, Any]:
    """Whether a stage kept up: it delivered, and its backlog did not grow over the last third.

    `delivered` names the sample of the stage's output commits (a stage
    that never committed did not keep up, whatever its backlog says: gold is
    0 commits behind a silver that never wrote). No slack: the backlog grew
    when the least-squares slope of its samples over the last third is
    above zero by more than twice its standard error (a backlog that
    saw-tooths with each batch is not a trend; one that climbs is).
    """
    rows = [s for s in samples if "error" not in s]
    if len(rows) < 9:
        return {"keeps_up": False, "samples": len(rows), "why": "too few samples"}
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
    slope, error = _trend([float(s["t_s"]) for s in last], [float(v) for v in values])
    out["growth_per_min"] = round(slope * 60, 1)
    out["keeps_up"] = slope - 2 * error <= 0
    if not out["keeps_up"]:
        out["why"] = f"grew by {slope * 60:,.1f} a minute"
    return out


def _trend(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope of ys over xs and its standard error."""
    n = len(xs)
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    error = (residual / max(1, n - 2) / sxx) ** 0.5
    return slope, error


def stages(samples: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Each stage's verdict."""
    return {
        "producer": verdict(samples, "producer_behind", ""),
        **{
            f"bronze {q}": verdict(samples, f"kafka_lag_{q}", "bronze_commits")
            for q in settings.bronze_queries()
        },
        "silver (commits behind)": verdict(samples, "silver_behind", "silver_commits"),
        "gold (commits behind)": verdict(samples, "gold_behind", "gold_commits"),
    }


def delivered_per_s(samples: list[dict[str, Any]], topic: str) -> float | None:
    """Records per second that reached `topic` at the broker over the phase's samples."""
    rows = [s for s in samples if topic in s.get("topic_ends", {})]
    if len(rows) < 2 or rows[-1]["wall_s"] <= rows[0]["wall_s"]:
        return None
    got = rows[-1]["topic_ends"][topic] - rows[0]["topic_ends"][topic]
    return float(got / (rows[-1]["wall_s"] - rows[0]["wall_s"]))


def cores(samples: list[dict[str, Any]], since_s: float) -> dict[str, float]:
    """Cores each component used from `since_s` into the phase to its end (CPU seconds per
    wall second, from /proc), process by process.

    A process's CPU includes its ended children's (cutime): one that ended between two
    samples left its whole CPU in its parent's count, so what it had at the earlier
    sample, counted then, is taken off its parent's component (a restarted driver's
    old JVM, reaped by its supervisor, is neither lost nor counted twice).
    """
    rows = [s for s in samples if s["t_s"] >= since_s and "cpu_pids" in s]
    if len(rows) < 2:
        return {}
    used: dict[str, float] = {}
    for before, after in itertools.pairwise(rows):
        was, now = before["cpu_pids"], after["cpu_pids"]
        for pid, (name, cpu, _parent) in now.items():
            used[name] = used.get(name, 0.0) + cpu - (was[pid][1] if pid in was else 0.0)
        for pid, (_name, cpu, parent) in was.items():
            if pid not in now and str(parent) in now:
                name = now[str(parent)][0]
                used[name] = used.get(name, 0.0) - cpu
    wall = rows[-1]["wall_s"] - rows[0]["wall_s"]
    out = {k: round(v / wall, 3) for k, v in sorted(used.items())}
    out["stack"] = round(sum(v for k, v in out.items() if k != "replay"), 3)
    return out


def peak_rss_by_process(samples: list[dict[str, Any]]) -> dict[str, int]:
    """Each component's peak RSS (MB) over the samples."""
    names = sorted({k for s in samples for k in s.get("rss_mb", {})})
    return {k: max(s["rss_mb"].get(k, 0) for s in samples if "rss_mb" in s) for k in names}


def stack_cores_by_minute(samples: list[dict[str, Any]]) -> list[float]:
    """The whole stack's cores (as `cores`) in each whole minute from the phase's start."""
    if not samples:
        return []
    out = []
    for minute in range(int(samples[-1]["t_s"] // 60)):
        window = [s for s in samples if minute * 60 <= s["t_s"] <= (minute + 1) * 60]
        used = cores(window, minute * 60)
        if used:
            out.append(used["stack"])
    return out


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
    write_test_conf(STATE / "shared-conf", shift=PORT_SHIFT, for_tests=False)
    capture = STATE / "market.gz"
    started = time.monotonic()
    frames = market.write(
        capture,
        market.generate(CAPTURES, args.symbols, args.trades_per_s, LOOP_MINUTES, START_MS),
    )
    took = time.monotonic() - started
    log(f"market: {frames:,} frames per {LOOP_MINUTES}-minute loop, built in {took:.0f} s")

    def phase(name: str, speed: int, minutes: float) -> Phase:
        conf = market_conf(STATE / "shared-conf", STATE / f"{name}-conf", name, args.symbols)
        return Phase(name, [capture], conf, speed, minutes)

    phases = [phase("base", 1, args.minutes)]
    if args.burst_minutes > 0:
        phases.append(phase("burst", 5, args.burst_minutes))
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
                "stages": stages(samples, phase.settings),
                "delivered_frames_per_s": {
                    t: delivered_per_s(samples, phase.settings.topic(t).name)
                    for t in ("trade", "kline")
                },
                "cores": cores(samples, 60.0),
                "freshness": freshness(spark, phase),
                "peak_rss_mb": max((s["rss_total_mb"] for s in samples), default=0),
                "peak_rss_by_process_mb": peak_rss_by_process(samples),
                "samples": samples,
            }
        try:
            report["symbol_read"] = symbol_read(spark, phases[0])
        except Exception as err:  # the phases' figures stand without it
            report["symbol_read"] = {"error": f"{type(err).__name__}: {err}"[:300]}
        spark.stop()
    finally:
        for phase in phases:
            phase.stack.stop()
        phases[0].stack.script("services", "down")
    publish_results("market", report)
    return 0


OLD_LAYOUT = "silver_ohlcv_symbol_partitions"


def symbol_read(spark: SparkSession, phase: Phase, symbols: int = 5) -> dict[str, Any]:
    """One symbol's latest 20 1m bars out of the whole market's table, read as the CLI reads
    them (no Spark): from this layout (interval and period, files skipped by their symbol
    statistics) and from a copy of the same 1m bars in the layout before December 2026 (a
    partition per symbol and interval, read whole). Median of `symbols` symbols, 3 reads each.
    """
    from streaming_jobs.cli import bars

    settings = phase.settings
    path = settings.table_path(silver_tables.OHLCV.name)
    if not table_exists(spark, path):
        return {}
    rows = read_table(spark, path).filter(F.col("interval") == "1m")
    data = rows.select(*[c for c in rows.columns if not c.startswith("_hoodie")])
    options = {
        **write_options(
            HudiTable(
                OLD_LAYOUT, silver_tables.OHLCV.record_key, "updated_ms", ("symbol", "interval")
            )
        ),
        "hoodie.datasource.write.operation": "bulk_insert",
        # A task writes its partitions one after another: 2,000 open writers at once
        # (a partition per symbol) exhaust the heap.
        "hoodie.bulkinsert.sort.mode": "PARTITION_SORT",
    }
    started = time.monotonic()
    data.write.format("hudi").options(**options).mode("overwrite").save(
        settings.table_path(OLD_LAYOUT)
    )
    copy_s = time.monotonic() - started
    names = market.symbol_names(len({r.symbol for r in data.select("symbol").distinct().collect()}))
    picked = names[:: max(1, len(names) // symbols)][:symbols]

    def timed(read: Any) -> float:
        times = []
        for _ in range(3):
            begun = time.perf_counter()
            read()
            times.append(time.perf_counter() - begun)
        return statistics.median(times)

    def old_read(symbol: str) -> list[dict[str, Any]]:
        filters = [("symbol", "=", symbol), ("interval", "=", "1m")]
        found = lakefiles.latest_rows(settings, OLD_LAYOUT, filters)
        return sorted(found, key=lambda r: r["open_time"])[-20:]

    new_s = statistics.median(timed(lambda s=s: bars(settings, s, "1m", limit=20)) for s in picked)
    old_s = statistics.median(timed(lambda s=s: old_read(s)) for s in picked)
    return {
        "symbols_read": picked,
        "new_layout_s": round(new_s, 3),
        "old_layout_s": round(old_s, 3),
        "old_layout_copy_s": round(copy_s, 1),
    }


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
        "Silver freshness (a minute's end -> its final 1m bar visible) and memory. A "
        "minute's bars of all symbols turn final in the same silver batch or the one "
        "before (the exchange clock passes the minute for all of them at once), so the "
        "minutes are the independent samples (final 1m bars = minutes x symbols): the p99 "
        "is about the slowest minute's age.",
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
    read = report.get("symbol_read") or {}
    if read.get("error"):
        lines += [
            "",
            f"One symbol's bars, read as `lakehouse bars` reads them: failed ({read['error']}).",
        ]
    elif read:
        lines += [
            "",
            f"One symbol's latest 20 1m bars, read without Spark as `lakehouse bars` reads "
            f"them (median of {len(read['symbols_read'])} symbols, 3 reads each): this "
            f"layout (interval and period partitions, files skipped by symbol statistics) "
            f"{read['new_layout_s']:.3f} s; the same bars in the layout before December 2026 "
            f"(a partition per symbol and interval) {read['old_layout_s']:.3f} s.",
        ]
    lines.append("")
    for name, p in report["phases"].items():
        by = ", ".join(f"{k} {v:,}" for k, v in p["peak_rss_by_process_mb"].items())
        lines.append(f"Peak RSS by process, {name} (MB; the stack excludes the replay): {by}.")
    return "\n".join(lines) + "\n"


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
