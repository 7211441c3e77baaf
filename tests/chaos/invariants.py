"""What must hold at the end of every chaos run, each check saying what it compared.

- the trades in `bronze_trades` are exactly the capture's (every loop's ids,
  none missing, none twice) with the frames' decimal strings;
- silver and gold equal a clean run's on the same data, apart from when rows
  were written, data-quality figures that describe the faults themselves
  (quarantined frames, backfilled and late trades, gaps filled, ingest
  latency), and signals retracted by a correction;
- `bronze_quarantine` holds exactly the injected bad frames, byte for byte,
  each with a reason, the producer's reason for the frames it caught;
- every fault was injected and what it broke came back; every process is up
  and each supervised one was restarted at least as often as it was killed;
- the producer's counters agree with Kafka and the tables: its last run
  published exactly what the topics grew by, the quarantined frames of all
  its runs are the injected ones, nothing was undeliverable, and the trade
  topic's distinct trades are the table's rows.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from producer.replay.captures import merge_captures, plan_shifts, shifted
from streaming_jobs.common import lakefiles, progress
from streaming_jobs.common.settings import Settings
from tests.chaos.run import RunResult
from tests.chaos.stack import LAYERS, Stack

Snapshot = dict[str, list[dict[str, Any]]]
COMPARED = (
    "silver_ohlcv",
    "gold_market_summary",
    "gold_correlation",
    "gold_risk",
    "gold_signals",
    "gold_data_quality",
)
# When and by which commit a row was written.
WRITE_COLUMNS = {
    "_hoodie_commit_time",
    "_hoodie_commit_seqno",
    "_hoodie_file_name",
    "updated_ms",
    "updated_at",
    "bar_updated_ms",  # when the gold row's silver bar was written
}
# Figures about the faults themselves, which a clean run cannot have.
FAULT_COLUMNS = {
    "gold_data_quality": {
        "quarantined",
        "quarantined_total",
        "latency_max_s",
        "latency_p99_s",
        "backfilled_trades",
        "late_trades",
        "gaps_filled",
    }
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def snapshot(settings: Settings) -> Snapshot:
    """The rows a clean run is compared on."""
    present = set(lakefiles.tables(settings))
    return {t: lakefiles.latest_rows(settings, t) for t in COMPARED if t in present}


def comparable(table: str, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ignored = WRITE_COLUMNS | FAULT_COLUMNS.get(table, set())
    if table == "gold_signals":
        rows = [r for r in rows if not r.get("retracted")]
    # Quarantined frames without a symbol get a data-quality row of their own.
    if table == "gold_data_quality":
        rows = [r for r in rows if r.get("trades")]
    return {
        row["_hoodie_record_key"]: {k: v for k, v in row.items() if k not in ignored}
        for row in rows
    }


def expected_trades(captures: list[Path], loops: int) -> dict[tuple[str, int], tuple[str, str]]:
    """(symbol, trade id) -> (price, qty) of every trade the replay played in `loops` loops."""
    capture = merge_captures(captures)
    plan = plan_shifts(capture) if loops != 1 else None
    trades = [f for f in capture.frames if f.stream.endswith("@trade")]
    expected = {}
    for loop in range(loops):
        for frame in trades:
            if loop and plan is not None:
                frame = shifted(frame, loop, plan)
            data = json.loads(frame.raw)["data"]
            expected[(data["s"], data["t"])] = (data["p"], data["q"])
    return expected


def check_trades(settings: Settings, captures: list[Path], loops: int) -> Check:
    expected = expected_trades(captures, loops)
    rows = lakefiles.latest_rows(settings, "bronze_trades")
    keys = Counter((r["symbol"], r["trade_id"]) for r in rows)
    missing = expected.keys() - keys.keys()
    extra = keys.keys() - expected.keys()
    twice = [k for k, n in keys.items() if n > 1]
    wrong = [
        (r["symbol"], r["trade_id"])
        for r in rows
        if (r["symbol"], r["trade_id"]) in expected
        and (f"{r['price']:f}", f"{r['qty']:f}") != expected[(r["symbol"], r["trade_id"])]
    ]
    ok = not (missing or extra or twice or wrong)
    return Check(
        "bronze trades are the capture's",
        ok,
        f"{len(rows)} rows for {len(expected)} trades of {loops} loop(s): {len(missing)} missing, "
        f"{len(extra)} unexpected, {len(twice)} twice, {len(wrong)} with other values"
        + (f" (e.g. missing {sorted(missing)[:3]})" if missing else ""),
    )


def check_equal(table: str, clean: Snapshot, chaos: Snapshot) -> Check:
    want = comparable(table, clean.get(table, []))
    got = comparable(table, chaos.get(table, []))
    missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
    differ = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    detail = (
        f"{len(got)} rows vs {len(want)}: {len(missing)} missing, {len(extra)} extra, "
        f"{len(differ)} differ"
    )
    if differ:
        key = differ[0]
        columns = {c for c in want[key] if want[key][c] != got[key].get(c)}
        detail += f" (e.g. {key}: {sorted(columns)})"
    elif missing or extra:
        detail += f" (e.g. {sorted(missing or extra)[:2]})"
    if not want:
        detail += " (none in either run: nothing to compare)"
    return Check(f"{table} equals the clean run", not (missing or extra or differ), detail)


def check_quarantine(settings: Settings, result: RunResult) -> Check:
    # No frame quarantined, no table: a run of faults that inject no bad frame.
    made = "bronze_quarantine" in lakefiles.tables(settings)
    rows = lakefiles.latest_rows(settings, "bronze_quarantine") if made else []
    got = Counter(bytes(r["raw"]) for r in rows)
    want = Counter(f.raw for f in result.injected)
    no_reason = sum(1 for r in rows if not r["reason"])
    reasons = {f.raw: f.reason for f in result.injected if f.reason}
    wrong_reason = sum(
        1 for r in rows if bytes(r["raw"]) in reasons and r["reason"] != reasons[bytes(r["raw"])]
    )
    ok = got == want and not no_reason and not wrong_reason
    return Check(
        "quarantine holds exactly the injected frames",
        ok,
        f"{sum(got.values())} rows for {sum(want.values())} injected frames "
        f"({len(want)} distinct, {sum(1 for f in result.injected if f.reason)} caught by the "
        f"producer): {sum((want - got).values())} missing, {sum((got - want).values())} extra, "
        f"{no_reason} without a reason, {wrong_reason} with another reason than the producer's",
    )


def check_recovery(result: RunResult) -> list[Check]:
    failed = [i for i in result.injections if i.problem]
    # The producer's restarts are awaited by its fault; a driver's are counted by
    # its supervisor, which runs from start to end.
    # kill_bronze and kill_bronze_clustering both kill bronze's driver.
    kills = Counter(
        i.fault.removeprefix("kill_").split("_")[0]
        for i in result.injections
        if i.fault.startswith("kill_")
    )
    short = {
        layer: (result.restarts.get(layer, 0), kills[layer])
        for layer in LAYERS
        if result.restarts.get(layer, 0) < kills[layer]
    }
    return [
        Check(
            "every fault injected, and what it broke came back",
            not failed,
            f"{len(result.injections)} injected, {len(failed)} failed"
            + (f": {failed[0].fault}: {failed[0].problem}" if failed else ""),
        ),
        Check(
            "no component stayed down",
            not (result.down or short or result.unsettled),
            "; ".join(
                part
                for part in (
                    result.unsettled and f"not settled: {result.unsettled}",
                    result.down and f"not running at the end: {result.down}",
                    short and f"drivers restarted less often than killed: {short}",
                )
                if part
            )
            or "every process running at the end, the pipeline settled, each driver restarted "
            "by its supervisor after each kill ("
            + ", ".join(f"{layer} {result.restarts.get(layer, 0)}" for layer in LAYERS)
            + " restarts)",
        ),
    ]


def kafka_trades(settings: Settings) -> tuple[int, set[tuple[str, int]]]:
    """Records in the trade topic, and the distinct (symbol, id) among them."""
    topic = settings.topic("trade").name
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records, keys = 0, set()
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=10_000, max_records=50_000).values():
                for record in batch:
                    records += 1
                    try:
                        data = json.loads(record.value)["data"]
                        keys.add((data["s"], data["t"]))
                    except (ValueError, KeyError, TypeError):
                        pass  # a bad frame written on purpose: bronze quarantines it
        return records, keys
    finally:
        consumer.close()


def check_producer(stack: Stack, result: RunResult) -> Check:
    settings = stack.settings
    final = result.final_producer
    problems = []
    for kind, spec in settings.pipeline.kafka.topics.items():
        published = final.get(f'producer_frames_published_total{{topic="{spec.name}"}}', 0.0)
        grew = result.ends_final.get(spec.name, 0) - result.ends_at_restart.get(spec.name, 0)
        if published != grew:
            problems.append(f"{kind}: last run published {published:.0f}, topic grew {grew}")
    quarantined = sum(
        progress.total(s, "producer_quarantined_total") for s in result.incarnations.values()
    )
    at_producer = sum(1 for f in result.injected if f.reason)
    if quarantined != at_producer:
        problems.append(f"quarantined {quarantined:.0f} in all runs, injected {at_producer}")
    undeliverable = sum(
        progress.total(s, "producer_undeliverable_total") for s in result.incarnations.values()
    )
    if undeliverable:
        problems.append(f"{undeliverable:.0f} undeliverable")
    records, keys = kafka_trades(settings)
    rows = lakefiles.table_stats(settings, "bronze_trades").rows
    if len(keys) != rows:
        problems.append(f"{len(keys)} distinct trades in Kafka, {rows} rows")
    return Check(
        "the producer's counters agree with Kafka and the tables",
        not problems,
        "; ".join(problems)
        or f"{len(result.incarnations)} producer runs; the last published "
        f"{sum(result.ends_final.values()) - sum(result.ends_at_restart.values())} records, "
        "exactly "
        f"what the topics grew by; {quarantined:.0f} quarantined = injected at the producer; "
        f"{records} trade records in Kafka, {records - len(keys)} of them duplicates, "
        f"collapse to {rows} rows",
    )


def check_all(
    stack: Stack, result: RunResult, clean: Snapshot, captures: list[Path]
) -> list[Check]:
    settings = stack.settings
    chaos = snapshot(settings)
    return [
        check_trades(settings, captures, result.loops_done),
        *(check_equal(table, clean, chaos) for table in COMPARED),
        check_quarantine(settings, result),
        *check_recovery(result),
        check_producer(stack, result),
    ]
