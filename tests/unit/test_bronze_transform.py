"""Bronze parsing and validation on real recorded frames (no services, one SparkSession).

Frames come from ../shared/data/binance: hftbacktest's BTCUSDT capture of
2024-08-08 (trade, bookTicker, diff depth and a REST depth snapshot, whose
shape is the partial-depth payload's), cryptofeed's sessions (aggTrade,
kline_1m). Bad frames are those real frames with one field broken.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from streaming_jobs.bronze import job, transform as tf
from streaming_jobs.common.settings import PROJECT_ROOT, load_settings
from streaming_jobs.sql import csv_value

SETTINGS = load_settings(PROJECT_ROOT / "conf", {})
TOPICS = {spec.name: kind for kind, spec in SETTINGS.pipeline.kafka.topics.items()}
TOPIC = {kind: spec.name for kind, spec in SETTINGS.pipeline.kafka.topics.items()}
RECV_NS = 1723161254087896568  # the capture's receive time of TRADE

TRADE = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
    '"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}'
)
AGG_TRADE = (
    '{"stream":"zilusdt@aggTrade","data":{"e":"aggTrade","E":1617647603484,"s":"ZILUSDT",'
    '"a":18938405,"p":"0.21448000","q":"2062.90000000","f":23806928,"l":23806928,'
    '"T":1617647603483,"m":false,"M":true}}'
)
KLINE = (
    '{"stream":"nknusdt@kline_1m","data":{"e":"kline","E":1633998523963,"s":"NKNUSDT","k":{'
    '"t":1633998480000,"T":1633998539999,"s":"NKNUSDT","i":"1m","f":19862761,"L":19862790,'
    '"o":"0.35270000","c":"0.35280000","h":"0.35280000","l":"0.35220000","v":"25877.00000000",'
    '"n":30,"x":false,"q":"9116.04600000","V":"58.00000000","Q":"20.46240000","B":"0"}}}'
)
BOOK = (
    '{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT",'
    '"b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}'
)
DIFF_DEPTH = (
    '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255308,'
    '"s":"BTCUSDT","U":50093239203,"u":50093239207,"b":[["55653.87000000","0.00000000"]],'
    '"a":[["61838.04000000","0.32332000"],["61844.30000000","0.40163000"]]}}'
)
# The REST depth snapshot of the same capture (first levels), wrapped as the
# partial-depth stream would carry it: no symbol, no event time.
PARTIAL_DEPTH = (
    '{"stream":"btcusdt@depth5","data":{"lastUpdateId":50093239218,'
    '"bids":[["61837.63000000","3.78826000"],["61837.62000000","0.61700000"]],'
    '"asks":[["61837.64000000","1.54698000"]]}}'
)


def published_stream(raw: bytes) -> str | None:
    """The stream header the producer gives a frame: its envelope's stream (none for a
    frame it cannot read)."""
    try:
        stream = json.loads(raw.decode())["stream"]
    except (ValueError, KeyError, TypeError):
        return None
    return stream if isinstance(stream, str) else None


def kafka_row(
    kind: str,
    value: str | bytes,
    offset: int = 0,
    backfill: bool = False,
    recv_ns: int = RECV_NS,
    clock_offset_ns: int = 0,
    stream_header: bool | str = True,
) -> dict[str, Any]:
    """A record as the producer publishes it; `stream_header` False: as another tool
    might (no stream header), a text: a header naming that stream."""
    raw = value.encode() if isinstance(value, str) else value
    stream = published_stream(raw) if stream_header is True else stream_header or None
    return {
        "key": b"BTCUSDT",
        "value": raw,
        "topic": TOPIC[kind],
        "partition": 0,
        "offset": offset,
        "timestamp": dt.datetime(2024, 8, 8, 23, 54, 14),
        "headers": [
            {"key": "recv_ns", "value": str(recv_ns).encode()},
            {"key": "backfill", "value": b"1" if backfill else b"0"},
            {"key": "clock_offset_ns", "value": str(clock_offset_ns).encode()},
            *([{"key": "stream", "value": stream.encode()}] if stream else []),
        ],
    }


KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
    "headers array<struct<key:string,value:binary>>"
)


def parse(spark: Any, route_kind: str, *values: str | bytes, **row: Any) -> list[Any]:
    """Records on the route's topic through the envelope and the route's parser."""
    topic_kind = "depth" if route_kind == "depthUpdate" else route_kind
    rows = [kafka_row(topic_kind, v, offset=i, **row) for i, v in enumerate(values)]
    df = spark.createDataFrame(rows, KAFKA_SCHEMA).transform(tf.with_envelope(TOPICS))
    (route,) = [r for r in job.ROUTES if r.kind == route_kind]
    return route.only(df).transform(route.parse).orderBy("kafka_offset").collect()


def broken(frame: str, key: str, value: Any) -> str:
    data = json.loads(frame)
    target = data["data"]["k"] if key.startswith("k.") else data["data"]
    target[key.removeprefix("k.")] = value
    return json.dumps(data)


def test_trade_is_typed_exactly(spark: Any) -> None:
    (row,) = parse(spark, "trade", TRADE)
    assert row.reason is None
    assert (row.symbol, row.trade_id) == ("BTCUSDT", 3735683259)
    assert row.price == Decimal("61837.63000000") and str(row.qty) == "0.02000000"
    assert row.trade_time == dt.datetime(2024, 8, 8, 23, 54, 15, 342000)
    assert row.is_buyer_maker is True
    assert row.date == dt.date(2024, 8, 8)
    assert (row.kafka_topic, row.kafka_offset, row.recv_ns, row.backfill) == (
        TOPIC["trade"],
        0,
        RECV_NS,
        False,
    )


def test_microsecond_times_and_every_decimal_digit(spark: Any) -> None:
    # 2025+ archive times are microseconds; 8 decimals survive the cast.
    frame = broken(broken(TRADE, "T", 1735776000123456), "p", "0.00000001")
    (row,) = parse(spark, "trade", frame, recv_ns=1735776000123456000)
    assert row.reason is None
    assert row.trade_time == dt.datetime(2025, 1, 2, 0, 0, 0, 123456)
    assert row.price == Decimal("0.00000001")
    assert csv_value(row.price, 8) == "0.00000001"  # as `./spark-submit.sh sql` prints it


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (broken(TRADE, "p", "-1.00000000"), "negative_price"),
        (broken(TRADE, "p", "0.00000000"), "price_not_positive"),
        (broken(TRADE, "p", "1.123456789"), "bad_price"),
        (broken(TRADE, "q", "-0.5"), "negative_qty"),
        (broken(TRADE, "t", "abc"), "bad_trade_id"),
        (broken(TRADE, "t", None), "missing_trade_id"),
        (broken(TRADE, "s", "ETHUSDT"), "symbol_mismatch"),
        (broken(TRADE, "T", 1723161255342 + 2 * 86_400_000), "implausible_time"),
        (TRADE[:-5], "not_json"),
        (TRADE.encode() + b"\xff", "not_utf8"),
        (TRADE.replace("btcusdt@trade", "btcusdt@kline_1m"), "unknown_stream"),
        # A symbol that would become a partition folder outside the table.
        (TRADE.replace("btcusdt@trade", "../../btcusdt@trade"), "unknown_stream"),
        (TRADE.replace("btcusdt@trade", "btc/usdt@trade"), "unknown_stream"),
        (TRADE.replace("btcusdt@trade", "BTCUSDT@trade"), "unknown_stream"),
    ],
)
@pytest.mark.parametrize("stream_header", [True, False], ids=["producer", "no_header"])
def test_trade_validation_rules(
    spark: Any, frame: str | bytes, reason: str, stream_header: bool
) -> None:
    (row,) = parse(spark, "trade", frame, stream_header=stream_header)
    assert row.reason == reason


def test_a_frame_must_be_the_stream_it_was_published_as(spark: Any) -> None:
    """The route is chosen by the stream header; the payload has the last word."""
    (row,) = parse(spark, "trade", TRADE, stream_header="ethusdt@trade")
    assert row.reason == "stream_mismatch"
    (row,) = parse(spark, "trade", TRADE, stream_header="btcusdt@trade")
    assert row.reason is None and row.symbol == "BTCUSDT"
    # A diff-depth frame published as partial depth goes the partial route and stops there.
    (row,) = parse(spark, "depth", DIFF_DEPTH, stream_header="btcusdt@depth5")
    assert row.reason == "stream_mismatch"


def test_backfilled_rows_are_exempt_from_the_clock_check(spark: Any) -> None:
    late = broken(TRADE, "T", 1723161255342 - 3 * 86_400_000)
    (row,) = parse(spark, "trade", late, backfill=True)
    assert row.reason is None and row.backfill is True


def test_a_replayed_capture_is_judged_on_the_exchange_clock(spark: Any) -> None:
    # Received two years later, from an exchange (the replay) whose clock says 2024.
    two_years_ns = 2 * 365 * 86_400 * 10**9
    (row,) = parse(
        spark, "trade", TRADE, recv_ns=RECV_NS + two_years_ns, clock_offset_ns=-two_years_ns
    )
    assert row.reason is None
    (row,) = parse(spark, "trade", TRADE, recv_ns=RECV_NS + two_years_ns)
    assert row.reason == "implausible_time"


def test_each_batch_stamps_its_own_time_with_the_code_of_the_first(spark: Any) -> None:
    """ingest_time is one value per batch, a later batch's later; and the later batch
    compiles no code (the batch's time written into generated Java made Spark compile
    the envelope again every batch)."""
    codegen = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics
    rows = [kafka_row("trade", TRADE, offset=i) for i in range(3)]
    df = spark.createDataFrame(rows, KAFKA_SCHEMA).transform(tf.with_envelope(TOPICS))
    first = {r.ingest_time for r in df.select("ingest_time").collect()}
    compiled = codegen.METRIC_COMPILATION_TIME().getCount()
    second = {r.ingest_time for r in df.select("ingest_time").collect()}
    assert codegen.METRIC_COMPILATION_TIME().getCount() == compiled
    assert len(first) == len(second) == 1
    assert min(second) > max(first)


def test_agg_trade(spark: Any) -> None:
    (row,) = parse(spark, "aggTrade", AGG_TRADE, recv_ns=1617647603490000000)
    assert row.reason is None
    assert (row.agg_trade_id, row.first_trade_id, row.last_trade_id) == (
        18938405,
        23806928,
        23806928,
    )
    assert str(row.qty) == "2062.90000000"


def test_kline_and_its_push_order(spark: Any) -> None:
    closed = broken(broken(KLINE, "k.x", True), "E", 1633998540001)
    rows = parse(spark, "kline", KLINE, closed, recv_ns=1633998523957297800)
    assert [r.reason for r in rows] == [None, None]
    assert rows[0].open_time == dt.datetime(2021, 10, 12, 0, 28)
    assert (rows[0].interval, rows[0].trade_count, str(rows[0].quote_volume)) == (
        "1m",
        30,
        "9116.04600000",
    )
    assert rows[1].push_version > rows[0].push_version  # the closed push wins


def test_partial_depth_takes_its_symbol_from_the_stream(spark: Any) -> None:
    (row,) = parse(spark, "depth", PARTIAL_DEPTH)
    assert row.reason is None
    assert (row.symbol, row.last_update_id, row.levels) == ("BTCUSDT", 50093239218, 5)
    assert [(str(b.price), str(b.qty)) for b in row.bids] == [
        ("61837.63000000", "3.78826000"),
        ("61837.62000000", "0.61700000"),
    ]
    assert row.date == dt.date(2024, 8, 8)  # receipt date: the payload has no time


def test_diff_depth_and_book_ticker(spark: Any) -> None:
    (depth,) = parse(spark, "depthUpdate", DIFF_DEPTH)
    assert depth.reason is None
    assert (depth.first_update_id, depth.final_update_id) == (50093239203, 50093239207)
    (book,) = parse(spark, "bookTicker", BOOK)
    assert book.reason is None
    assert (book.update_id, str(book.ask_qty)) == (50093239212, "1.54698000")
