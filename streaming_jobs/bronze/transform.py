"""Bronze transforms: Kafka records -> typed rows per stream type, or quarantine with a reason.

Pure DataFrame -> DataFrame functions, no I/O:
- `with_envelope` decodes a Kafka record (value, headers) into lineage
  columns, the stream it was published as (the producer's header), the
  symbol from the stream name and a first reason (not UTF-8, a topic
  bronze does not know);
- `parse_<kind>` parses one stream type's frames, each once and whole
  (`_Frame`), into typed columns and a `reason` (null when the row is
  good) from the validation rules: an envelope that is not JSON or names
  another stream, then the payload's.

Conversions are checked before they happen: decimals must match
`^[0-9]+(\\.[0-9]{1,8})?$` (Binance sends at most 8 decimals, so the cast
never rounds), ids `^[0-9]{1,18}$`; exchange times are ms, or us when they
have 16 digits (the archive's format since 2025).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, functions as F, types as T

from streaming_jobs.common import schemas
from streaming_jobs.common.columns import Projection, any_of, batch_clock, built_once

# An exchange time further than this from the producer's receive time is not
# plausible for a live frame (backfilled rows are exempt: fetched later).
MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000
_DECIMAL_RE = r"^[0-9]+(\.[0-9]{1,8})?$"
_ID_RE = r"^[0-9]{1,18}$"
_US_FROM = 10**15  # 16-digit times are microseconds

LINEAGE = ["kafka_topic", "kafka_partition", "kafka_offset", "recv_time", "backfill", "ingest_time"]
# The columns with_envelope adds to a Kafka record's, in order.
ENVELOPE_COLUMNS = (
    "kind",
    "raw",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "recv_ns",
    "recv_time",
    "recv_exchange_ms",
    "backfill",
    "ingest_time",
    "producer_reason",
    "stream",
    "symbol",
    "reason",
)
# The envelope's stream, and whether it has a `data` object: an empty struct makes
# the parser skip the object's content instead of copying it out as text. Only
# for records without the producer's stream header (or on a topic bronze does not
# know): each route parses its frames once, whole (`_Frame`).
ENVELOPE = T.StructType(
    [T.StructField("stream", T.StringType()), T.StructField("data", T.StructType([]))]
)


def _header(name: str) -> Column:
    """The first value of the record's header `name`, as text (null if absent).

    By position in the headers' keys: generated code, where a lambda over the
    headers (`filter`) is interpreted row by row. As SQL text: a Python lambda
    costs a round of signature inspection and JVM calls each time a batch
    builds it.
    """
    if not name.isidentifier():
        raise ValueError(f"not a header name: {name!r}")
    at = f"array_position(headers.key, '{name}')"
    return F.expr(f"CASE WHEN {at} > 0 THEN element_at(headers.value, CAST({at} AS INT)) END").cast(
        "string"
    )


def with_envelope(topic_kinds: Mapping[str, str]) -> Callable[[DataFrame], DataFrame]:
    """Kafka rows -> lineage, stream, symbol, kind and a first reason.

    The stream is the producer's `stream` header: a record is routed without
    parsing its JSON, which its route's parser reads once, whole, and checks
    against that stream (`_Frame`). A record without the header (written by
    another tool) has its envelope parsed here for the stream, as does one
    on a topic bronze does not know, to tell not_json from unknown_topic.
    """

    def build() -> Projection:
        kinds = F.create_map(*[F.lit(x) for pair in topic_kinds.items() for x in pair])
        text = F.decode("value", "UTF-8")
        envelope = F.from_json(text, ENVELOPE)
        # Records without the producer's header (written by other tools) fall
        # back to Kafka's own timestamp.
        recv_ns = F.coalesce(
            _header("recv_ns").cast("long"), F.unix_micros("timestamp") * F.lit(1000)
        )
        kind = kinds[F.col("topic")]
        stream = F.coalesce(_header("stream"), envelope["stream"])
        columns = [
            kind.alias("kind"),
            F.col("value").alias("raw"),
            F.col("topic").alias("kafka_topic"),
            F.col("partition").alias("kafka_partition"),
            F.col("offset").alias("kafka_offset"),
            recv_ns.alias("recv_ns"),
            F.timestamp_micros(F.floor(recv_ns / 1000)).alias("recv_time"),
            # The receive time on the exchange's clock (see the producer's
            # clock_offset_ns header): what exchange times are judged against.
            F.floor(
                (recv_ns + F.coalesce(_header("clock_offset_ns").cast("long"), F.lit(0)))
                / 1_000_000
            ).alias("recv_exchange_ms"),
            F.coalesce(_header("backfill") == "1", F.lit(False)).alias("backfill"),
            batch_clock().alias("ingest_time"),
            _header("reason").alias("producer_reason"),
            stream.alias("stream"),
            F.upper(F.substring_index(stream, "@", 1)).alias("symbol"),
            (F.encode(text, "UTF-8") == F.col("value")).alias("_utf8"),
        ]
        # An envelope that is not JSON has neither field.
        not_json = envelope["data"].isNull() | envelope["stream"].isNull()
        reason = (
            F.when(F.col("kind") == "quarantine", F.coalesce("producer_reason", F.lit("producer")))
            .when(~F.col("_utf8"), "not_utf8")
            .when(F.col("kind").isNull(), F.when(not_json, "not_json").otherwise("unknown_topic"))
        )
        return Projection(columns, {"reason": reason}, drop=("_utf8",))

    return built_once(build)


# The streams each topic may carry (the producer routes by them): a
# lower-case symbol as Binance spells stream names (it becomes the `symbol`
# column and a partition folder, so nothing else may pass), then the type.
_SYMBOL = r"^[a-z0-9]{5,20}"
_STREAM_PATTERNS = {
    "trade": _SYMBOL + r"@trade$",
    "aggTrade": _SYMBOL + r"@aggTrade$",
    "kline": _SYMBOL + r"@kline_[0-9]+[smhdwM]$",
    "ticker": _SYMBOL + r"@ticker$",
    "depth": _SYMBOL + r"@depth(5|10|20)?(@100ms)?$",
    "bookTicker": _SYMBOL + r"@bookTicker$",
}


@dataclass(frozen=True)
class _Frame:
    """A route's frames, each parsed once, whole, with its stream type's schema.

    `topic`: the stream type of the route's topic (diff depth: depth), whose
    stream names the frames may carry.
    """

    topic: str
    schema: T.StructType

    def parsed(self) -> Column:
        frame = T.StructType(
            [T.StructField("stream", T.StringType()), T.StructField("data", self.schema)]
        )
        return F.from_json(F.decode("raw", "UTF-8"), frame)

    @property
    def data(self) -> Column:
        return self.parsed()["data"]

    def columns(self) -> list[Column]:
        return [
            self.parsed()["stream"].alias("_frame_stream"),
            self.data.isNull().alias("_no_data"),
        ]

    def rules(self) -> list[tuple[Column, str]]:
        """Its envelope: JSON with a stream and a data object, the stream the record
        was routed by (the producer's header), one its topic may carry."""
        return [
            # A frame that is not JSON has neither field.
            (F.col("_no_data") | F.col("_frame_stream").isNull(), "not_json"),
            (F.col("_frame_stream") != F.col("stream"), "stream_mismatch"),
            (~F.col("stream").rlike(_STREAM_PATTERNS[self.topic]), "unknown_stream"),
        ]


def decimal(text: Column) -> Column:
    return F.when(text.rlike(_DECIMAL_RE), text.cast(schemas.DECIMAL))


def long_id(text: Column) -> Column:
    return F.when(text.rlike(_ID_RE), text.cast("long"))


def boolean(text: Column) -> Column:
    return F.when(text == "true", True).when(text == "false", False)


def exchange_time(text: Column) -> Column:
    """ms (or us with 16 digits) since the epoch -> UTC timestamp."""
    value = long_id(text)
    return F.when(value >= _US_FROM, F.timestamp_micros(value)).otherwise(F.timestamp_millis(value))


def levels(text_levels: Column) -> Column:
    """[[price, qty], ...] as text -> array<struct<price, qty>>; a bad value is a null
    (`bad_levels` finds it)."""
    return F.transform(
        text_levels,
        lambda level: F.struct(decimal(level[0]).alias("price"), decimal(level[1]).alias("qty")),
    )


def bad_levels(*sides: str) -> Column:
    """Whether a side's levels (columns of `levels`) are missing or one is not a decimal.

    A rule on the typed columns, never part of them: the typed levels are
    built once (a lambda over every level is interpreted, not generated
    code), where a column that checked itself would build them twice.
    """
    return any_of(
        [
            F.col(side).isNull()
            | F.exists(side, lambda lv: lv["price"].isNull() | lv["qty"].isNull())
            for side in sides
        ]
    )


def _first_reason(*rules: tuple[Column, str]) -> Column:
    """The reason of the first rule that holds, else null."""
    out = F.lit(None).cast("string")
    for condition, reason in reversed(rules):
        out = F.when(condition, reason).otherwise(out)
    return out


def _plausible(event: Column) -> Column:
    skew = F.abs(F.unix_millis(event) - F.col("recv_exchange_ms"))
    return F.col("backfill") | (skew <= MAX_CLOCK_SKEW_MS)


def _price_rules(
    name: str, text: Column, value: Column, positive: bool
) -> list[tuple[Column, str]]:
    rules = [
        (text.isNull(), f"missing_{name}"),
        (text.startswith("-"), f"negative_{name}"),
        (value.isNull(), f"bad_{name}"),
    ]
    if positive:
        rules.append((value <= 0, f"{name}_not_positive"))
    return rules


def _checked(
    frame: _Frame,
    columns: list[Column],
    rules: list[tuple[Column, str]],
    date: Column,
    **more: Column,
) -> Projection:
    """The frame's and the parsed `columns`, then the reason (the envelope's, else the
    first rule that fails: the frame's, the symbol's, then `rules`), `more` and the date."""
    symbol_ok = F.col("payload_symbol").isNull() | (F.col("payload_symbol") == F.col("symbol"))
    reason = F.coalesce(
        F.col("reason"),
        _first_reason(*frame.rules(), (~symbol_ok, "symbol_mismatch"), *rules),
    )
    return Projection([*frame.columns(), *columns], {"reason": reason, **more, "date": date})


@built_once
def parse_trades() -> Projection:
    frame = _Frame("trade", schemas.TRADE)
    d = frame.data
    columns = [
        d["s"].alias("payload_symbol"),
        long_id(d["t"]).alias("trade_id"),
        decimal(d["p"]).alias("price"),
        decimal(d["q"]).alias("qty"),
        exchange_time(d["T"]).alias("trade_time"),
        exchange_time(d["E"]).alias("event_time"),
        boolean(d["m"]).alias("is_buyer_maker"),
        boolean(d["M"]).alias("is_best_match"),
        d["t"].alias("_t"),
        d["p"].alias("_p"),
        d["q"].alias("_q"),
    ]
    rules = [
        (F.col("_t").isNull(), "missing_trade_id"),
        (F.col("trade_id").isNull(), "bad_trade_id"),
        *_price_rules("price", F.col("_p"), F.col("price"), positive=True),
        *_price_rules("qty", F.col("_q"), F.col("qty"), positive=False),
        (F.col("trade_time").isNull(), "missing_trade_time"),
        (~_plausible(F.col("trade_time")), "implausible_time"),
    ]
    return _checked(frame, columns, rules, F.to_date("trade_time"))


@built_once
def parse_agg_trades() -> Projection:
    frame = _Frame("aggTrade", schemas.AGG_TRADE)
    d = frame.data
    columns = [
        d["s"].alias("payload_symbol"),
        long_id(d["a"]).alias("agg_trade_id"),
        decimal(d["p"]).alias("price"),
        decimal(d["q"]).alias("qty"),
        long_id(d["f"]).alias("first_trade_id"),
        long_id(d["l"]).alias("last_trade_id"),
        exchange_time(d["T"]).alias("trade_time"),
        exchange_time(d["E"]).alias("event_time"),
        boolean(d["m"]).alias("is_buyer_maker"),
        d["p"].alias("_p"),
        d["q"].alias("_q"),
    ]
    rules = [
        (F.col("agg_trade_id").isNull(), "bad_agg_trade_id"),
        (F.col("first_trade_id").isNull() | F.col("last_trade_id").isNull(), "bad_trade_ids"),
        (F.col("last_trade_id") < F.col("first_trade_id"), "bad_trade_ids"),
        *_price_rules("price", F.col("_p"), F.col("price"), positive=True),
        *_price_rules("qty", F.col("_q"), F.col("qty"), positive=False),
        (F.col("trade_time").isNull(), "missing_trade_time"),
        (~_plausible(F.col("trade_time")), "implausible_time"),
    ]
    return _checked(frame, columns, rules, F.to_date("trade_time"))


@built_once
def parse_klines() -> Projection:
    frame = _Frame("kline", schemas.KLINE)
    d = frame.data
    k = d["k"]
    prices = ["o", "h", "l", "c"]
    volumes = ["v", "q", "V", "Q"]
    names = {
        "o": "open",
        "h": "high",
        "l": "low",
        "c": "close",
        "v": "volume",
        "q": "quote_volume",
        "V": "taker_buy_base",
        "Q": "taker_buy_quote",
    }
    columns = [
        F.coalesce(k["s"], d["s"]).alias("payload_symbol"),
        k["i"].alias("interval"),
        exchange_time(k["t"]).alias("open_time"),
        exchange_time(k["T"]).alias("close_time"),
        exchange_time(d["E"]).alias("event_time"),
        long_id(k["f"]).alias("first_trade_id"),
        long_id(k["L"]).alias("last_trade_id"),
        *[decimal(k[c]).alias(names[c]) for c in prices + volumes],
        long_id(k["n"]).alias("trade_count"),
        boolean(k["x"]).alias("is_closed"),
        *[k[c].alias(f"_{names[c]}") for c in prices + volumes],
    ]
    rules = [
        (F.col("interval").isNull() | F.col("open_time").isNull(), "missing_kline_key"),
        (F.col("event_time").isNull(), "missing_event_time"),
        (F.col("is_closed").isNull(), "missing_closed_flag"),
        (F.col("trade_count").isNull(), "bad_trade_count"),
    ]
    for c in prices:
        rules += _price_rules(names[c], F.col(f"_{names[c]}"), F.col(names[c]), positive=True)
    for c in volumes:
        rules += _price_rules(names[c], F.col(f"_{names[c]}"), F.col(names[c]), positive=False)
    rules.append((~_plausible(F.col("event_time")), "implausible_time"))
    # The closed push beats every open push; among equals the later event wins.
    version = F.col("is_closed").cast("long") * F.lit(10**16) + F.unix_millis("event_time")
    return _checked(frame, columns, rules, F.to_date("open_time"), push_version=version)


@built_once
def parse_tickers() -> Projection:
    frame = _Frame("ticker", schemas.TICKER)
    d = frame.data
    fields = {
        "p": "price_change",
        "P": "price_change_pct",
        "w": "weighted_avg_price",
        "x": "prev_close",
        "c": "last_price",
        "Q": "last_qty",
        "b": "bid_price",
        "B": "bid_qty",
        "a": "ask_price",
        "A": "ask_qty",
        "o": "open_price",
        "h": "high_price",
        "l": "low_price",
        "v": "volume",
        "q": "quote_volume",
    }
    signed = {"p", "P"}  # changes can be negative
    columns = [
        d["s"].alias("payload_symbol"),
        exchange_time(d["E"]).alias("event_time"),
        *[
            (
                F.when(d[c].rlike(r"^-?[0-9]+(\.[0-9]{1,8})?$"), d[c].cast(schemas.DECIMAL))
                if c in signed
                else decimal(d[c])
            ).alias(name)
            for c, name in fields.items()
        ],
        exchange_time(d["O"]).alias("window_open_time"),
        exchange_time(d["C"]).alias("window_close_time"),
        long_id(d["F"]).alias("first_trade_id"),
        long_id(d["L"]).alias("last_trade_id"),
        long_id(d["n"]).alias("trade_count"),
        d["c"].alias("_c"),
    ]
    rules = [
        (F.col("event_time").isNull(), "missing_event_time"),
        *_price_rules("last_price", F.col("_c"), F.col("last_price"), positive=True),
        (~_plausible(F.col("event_time")), "implausible_time"),
    ]
    return _checked(frame, columns, rules, F.to_date("event_time"))


@built_once
def parse_depth() -> Projection:
    """Partial book snapshots (depth5/10/20): no symbol and no event time in the payload."""
    frame = _Frame("depth", schemas.PARTIAL_DEPTH)
    d = frame.data
    columns = [
        F.lit(None).cast("string").alias("payload_symbol"),
        long_id(d["lastUpdateId"]).alias("last_update_id"),
        levels(d["bids"]).alias("bids"),
        levels(d["asks"]).alias("asks"),
        F.regexp_extract("stream", r"@depth([0-9]+)", 1).cast("int").alias("levels"),
    ]
    rules = [
        (F.col("last_update_id").isNull(), "bad_update_id"),
        (bad_levels("bids", "asks"), "bad_levels"),
    ]
    # No exchange time exists in this payload: the UTC date of receipt is the
    # only date there is.
    return _checked(frame, columns, rules, F.to_date("recv_time"))


@built_once
def parse_depth_updates() -> Projection:
    """Diff depth (depth, depth@100ms): U..u update ids, changed levels."""
    frame = _Frame("depth", schemas.DIFF_DEPTH)
    d = frame.data
    columns = [
        d["s"].alias("payload_symbol"),
        exchange_time(d["E"]).alias("event_time"),
        long_id(d["U"]).alias("first_update_id"),
        long_id(d["u"]).alias("final_update_id"),
        levels(d["b"]).alias("bids"),
        levels(d["a"]).alias("asks"),
    ]
    rules = [
        (F.col("first_update_id").isNull() | F.col("final_update_id").isNull(), "bad_update_id"),
        (F.col("final_update_id") < F.col("first_update_id"), "bad_update_id"),
        (bad_levels("bids", "asks"), "bad_levels"),
        (F.col("event_time").isNull(), "missing_event_time"),
        (~_plausible(F.col("event_time")), "implausible_time"),
    ]
    return _checked(frame, columns, rules, F.to_date("event_time"))


@built_once
def parse_book_tickers() -> Projection:
    """Best bid/ask: no event time in the payload (date of receipt, as for partial depth)."""
    frame = _Frame("bookTicker", schemas.BOOK_TICKER)
    d = frame.data
    names = {"b": "bid_price", "B": "bid_qty", "a": "ask_price", "A": "ask_qty"}
    columns = [
        d["s"].alias("payload_symbol"),
        long_id(d["u"]).alias("update_id"),
        *[decimal(d[c]).alias(name) for c, name in names.items()],
        *[d[c].alias(f"_{name}") for c, name in names.items()],
    ]
    rules: list[tuple[Column, str]] = [(F.col("update_id").isNull(), "bad_update_id")]
    for c, name in names.items():
        rules += _price_rules(name, F.col(f"_{name}"), F.col(name), positive=c in "ba")
    return _checked(frame, columns, rules, F.to_date("recv_time"))


def is_diff_depth(stream: Column) -> Column:
    return stream.rlike(r"@depth(@100ms)?$")
