"""How far each streaming query and lake table has got, read without Spark.

For `make status` and `make demo ONCE=1`: a query's committed Kafka offsets
come from its checkpoint (`commits/<n>` marks batch n done, `offsets/<n>`
holds the source offsets it read up to), its lag is the Kafka end offsets
minus those; a Hudi table's last commit is the newest completed instant in
its timeline. Works on both storage profiles (local files, or MinIO through
the S3 API).

    python -m streaming_jobs.common.progress     # topics, queries, tables, producer, quality
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from streaming_jobs.common.lakefiles import (
    Store,
    instants,
    latest_rows,
    partitions,
    table_stats,
    tables,
)
from streaming_jobs.common.s3 import S3Error
from streaming_jobs.common.settings import GOLD_QUERIES, LAYERS, TOPIC_KEYS, Settings, load_settings


def batches(settings: Settings, query: str) -> tuple[list[int], list[int]]:
    """(batches planned, batches committed) in the query's checkpoint, ascending."""
    names = Store(settings).list(settings.checkpoint_path(query))

    def ids(folder: str) -> list[int]:
        return sorted(int(n.split("/")[1]) for n in names if re.fullmatch(rf"{folder}/[0-9]+", n))

    return ids("offsets"), ids("commits")


def committed_offsets(settings: Settings, query: str) -> dict[tuple[str, int], int] | None:
    """Kafka offsets the query has committed (next offset to read), or None before batch 0."""
    store = Store(settings)
    root = settings.checkpoint_path(query)
    _planned, commits = batches(settings, query)
    if not commits:
        return None
    lines = store.read(f"{root}/offsets/{max(commits)}").decode().splitlines()
    offsets: dict[tuple[str, int], int] = {}
    for line in lines[2:]:  # version, batch metadata, then one line per source
        for topic, by_partition in json.loads(line).items():
            for partition, offset in by_partition.items():
                offsets[(topic, int(partition))] = int(offset)
    return offsets


def end_offsets(
    settings: Settings, kinds: tuple[str, ...] | None = None
) -> dict[tuple[str, int], int]:
    """End offsets of the topics of stream types `kinds` (None: every topic)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        partitions = [
            TopicPartition(spec.name, p)
            for kind, spec in settings.pipeline.kafka.topics.items()
            if kinds is None or kind in kinds
            for p in consumer.partitions_for_topic(spec.name) or ()
        ]
        return {
            (tp.topic, tp.partition): off for tp, off in consumer.end_offsets(partitions).items()
        }
    finally:
        consumer.close()


def lag(settings: Settings, query: str) -> int | None:
    """Records in the topics a bronze query reads it has not committed (None: no batch yet)."""
    done = committed_offsets(settings, query)
    if done is None:
        return None
    ends = end_offsets(settings, settings.bronze_queries()[query])
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())


def bronze_lag(settings: Settings) -> int | None:
    """Records some bronze query has yet to commit (None: one has no batch yet)."""
    lags = [lag(settings, query) for query in settings.bronze_queries()]
    return None if None in lags else sum(lag for lag in lags if lag is not None)


def commits_behind(settings: Settings, query: str, table: str) -> int | None:
    """Commits of Hudi `table` a query reading it as a stream has not committed yet.

    None before the query's first batch (a table with no commit is 0 behind).
    """
    store = Store(settings)
    root = settings.checkpoint_path(query)
    _planned, commits = batches(settings, query)
    if not commits:
        return None if instants(settings, table) else 0
    done = ""
    for line in store.read(f"{root}/offsets/{max(commits)}").decode().splitlines()[2:]:
        done = max(done, json.loads(line).get("offsetCommitTime", ""))
    return sum(1 for instant in instants(settings, table) if instant > done)


def gold_behind(settings: Settings) -> int | None:
    """Silver commits some gold query has yet to commit (None: one has no batch yet)."""
    behind = [commits_behind(settings, query, GOLD_SOURCE) for query in GOLD_QUERIES]
    return None if None in behind else sum(b for b in behind if b is not None)


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:  # /health answers 503 with a body
        return json.load(err)


def await_settled(settings: Settings, deadline_s: float, poll_s: float = 1.0) -> tuple[int, str]:
    """Wait until the replayed capture is through every layer: (frames handled, "") or (-1, why).

    Settled means: the replay exchange has played every loop; the producer has
    handled every frame it received, has no record in flight and no backfill
    pending, with its handled count unchanged across two polls; the bronze
    queries have committed everything in Kafka (lag 0), silver every commit of
    the bronze table it reads, and gold every commit of silver.
    """
    host, services = settings.services.host, settings.services
    replay = f"http://{host}:{services.replay_port}/control/status"
    health = f"http://{host}:{services.producer_metrics_port}/health"
    deadline = time.monotonic() + deadline_s
    last_handled, why = -1, "starting"
    while time.monotonic() < deadline:
        try:
            status, producer = _get_json(replay), _get_json(health)
            handled = producer["frames_handled"]
            drained = producer["pending_records"] == 0 and producer["backfill_idle"]
            bronze = bronze_lag(settings) if drained else None
            silver = (
                commits_behind(settings, "silver", silver_source(settings)) if bronze == 0 else None
            )
            gold = gold_behind(settings) if silver == 0 else None
        except (OSError, ValueError, KeyError, KafkaError, S3Error) as err:
            why = f"not answering: {err!r}"
        else:
            settled = status["done"] and drained and handled == last_handled
            if settled and bronze == 0 and silver == 0 and gold == 0:
                return handled, ""
            why = (
                f"replay {'done' if status['done'] else 'playing'}, producer handled {handled}, "
                f"{producer['pending_records']} in flight, bronze lag {bronze}, "
                f"silver {silver} and gold {gold} commits behind"
            )
            last_handled = handled
        time.sleep(poll_s)
    return -1, why


DATA_QUALITY = "gold_data_quality"


def data_quality(settings: Settings) -> tuple[str, list[dict[str, Any]]] | None:
    """Today's gold_data_quality rows, else the latest day's: (day, rows)."""
    days = partitions(settings, DATA_QUALITY)
    if not days:
        return None
    today = f"day={dt.datetime.now(dt.UTC).date().isoformat()}"
    day = today if today in days else days[-1]
    when = day.removeprefix("day=")
    return when, latest_rows(settings, DATA_QUALITY, [("day", "=", when)])


GOLD_SOURCE = "silver_ohlcv"


def silver_source(settings: Settings) -> str:
    """The bronze table silver builds bars from (conf: streaming.silver.bars_from)."""
    return f"bronze_{settings.pipeline.streaming.silver.bars_from}"


def print_quality(day: str, rows: list[dict[str, Any]]) -> None:
    print(f"\nDATA QUALITY {day} (gold_data_quality)")
    columns = (
        ("SYMBOL", "symbol", 10),
        ("TRADES", "trades", 9),
        ("GAPS OPEN", "gaps_open", 9),
        ("MISSING", "missing_trades", 8),
        ("FILLED", "gaps_filled", 7),
        ("LATE", "late_trades", 6),
        ("QUARANTINED", "quarantined_total", 11),
        ("NO-TRADE MIN", "tradeless_minutes", 12),
        ("LAT P99 S", "latency_p99_s", 10),
        ("LAT MAX S", "latency_max_s", 10),
    )
    print(" ".join(f"{title:<{width}}" for title, _, width in columns))
    for row in sorted(rows, key=lambda r: str(r["symbol"])):
        cells = []
        for _, key, width in columns:
            value = row.get(key)
            text = "-" if value is None else f"{value:.1f}" if isinstance(value, float) else value
            cells.append(f"{text!s:<{width}}")
        print(" ".join(cells))


def scrape(url: str) -> dict[str, float]:
    """A /metrics page as {name{labels}: value}; {} when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(name + "{"))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def print_topics(settings: Settings) -> None:
    ends = end_offsets(settings)
    print(f"{'TOPIC':<26} {'PARTITIONS':>10} {'END OFFSETS':>12}")
    for kind, spec in settings.pipeline.kafka.topics.items():
        offsets = [off for (topic, _p), off in ends.items() if topic == spec.name]
        print(f"{spec.name:<26} {len(offsets):>10} {sum(offsets):>12}  ({kind})")


def print_queries(settings: Settings) -> None:
    progress: dict[str, float] = {}
    for layer in LAYERS:
        url = f"http://{settings.services.host}:{settings.layer(layer).metrics_port}/metrics"
        for key, value in scrape(url).items():
            if key.startswith("lakehouse_query_last_progress_timestamp_seconds{"):
                progress[key.split('query="', 1)[1].split('"', 1)[0]] = value
    now = time.time()
    print(f"\n{'QUERY':<12} {'READS':<26} {'LAG':<14} {'LAST PROGRESS':<14} CHECKPOINT")
    rows: list[tuple[str, str, str]] = []
    for query, kinds in settings.bronze_queries().items():
        records = lag(settings, query)
        reads = ",".join(kinds) if len(kinds) < len(TOPIC_KEYS) else "every topic"
        rows.append((query, reads, "-" if records is None else f"{records} records"))
    for query, source in (
        ("silver", silver_source(settings)),
        *((query, GOLD_SOURCE) for query in GOLD_QUERIES),
    ):
        commits = commits_behind(settings, query, source)
        rows.append((query, source, "-" if commits is None else f"{commits} commits"))
    for query, reads, behind in rows:
        seen = f"{_age(now - progress[query])} ago" if query in progress else "-"
        print(f"{query:<12} {reads:<26} {behind:<14} {seen:<14} {settings.checkpoint_path(query)}")


def print_tables(settings: Settings) -> None:
    now = dt.datetime.now(dt.UTC)
    print(f"\n{'TABLE':<24} {'ROWS':>10} {'FILES':>6} {'SIZE':>9}  LAST COMMIT (UTC)")
    for table in tables(settings):
        stats = table_stats(settings, table)
        when = stats.last_commit
        last = (
            f"{when.isoformat(timespec='seconds')} ({_age((now - when).total_seconds())} ago)"
            if when
            else "-"
        )
        print(f"{table:<24} {stats.rows:>10} {stats.files:>6} {_size(stats.bytes):>9}  {last}")


def print_producer(settings: Settings) -> None:
    url = f"http://{settings.services.host}:{settings.services.producer_metrics_port}/metrics"
    first = scrape(url)
    if not first:
        print("\nPRODUCER   not answering on " + url)
        return
    time.sleep(1.0)
    second = scrape(url) or first
    rate = total(second, "producer_frames_received_total") - total(
        first, "producer_frames_received_total"
    )
    ages = [v for k, v in second.items() if k.startswith("producer_last_frame_age_seconds{")]
    print(
        f"\nPRODUCER   {rate:.0f} frames/s, "
        f"{total(second, 'producer_frames_received_total'):.0f} received, "
        f"last frame {f'{max(ages):.1f}s ago' if ages else '-'}, "
        f"gaps open {total(second, 'producer_gaps_open'):.0f} "
        f"(detected {total(second, 'producer_gaps_detected_total'):.0f}, "
        f"filled {total(second, 'producer_gaps_filled_total'):.0f}), "
        f"delivery errors {total(second, 'producer_delivery_errors_total'):.0f}, "
        f"quarantined {total(second, 'producer_quarantined_total'):.0f}, "
        f"reconnects {total(second, 'producer_reconnects_total'):.0f}"
    )


def main() -> int:
    """The part of `make status` after the process table; 1 if a section failed."""
    settings = load_settings()
    failed = 0
    sections = (print_topics, print_queries, print_tables, print_producer)
    for section in sections:
        try:
            section(settings)
        except (OSError, S3Error, KafkaError) as err:
            print(f"{section.__name__.removeprefix('print_')}: unavailable ({err})")
            failed = 1
    try:
        quality = data_quality(settings)
    except (OSError, S3Error) as err:
        print(f"data quality: unavailable ({err})")
        return 1
    if quality is not None:
        print_quality(*quality)
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
