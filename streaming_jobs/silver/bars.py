"""OHLCV bars from trades, as Binance builds its klines. Pure DataFrame transforms.

- `trade_rows` puts bronze trades or aggTrades into one shape (an aggTrade
  counts last - first + 1 trades);
- `minute_bars` aggregates trades into 1m bars by exchange trade time,
  summing decimals exactly;
- `fill_minutes` adds the trade-less minutes of a span the way Binance's
  archive has them: open = high = low = close = the previous close, zero
  volume and count;
- `roll_up` builds any longer interval from complete 1m bars: prices from
  the minutes that traded, sums over all.

Times are epoch milliseconds (`open_ms`) inside; `with_times` adds the
table's UTC timestamps.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window, functions as F

MINUTE_MS = 60_000

# The bar columns every transform here produces, in order.
BAR_COLUMNS = (
    "symbol",
    "open_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_base",
    "taker_buy_quote",
    "first_trade_id",
    "last_trade_id",
    "is_filled",
)


def trade_rows(df: DataFrame, bars_from: str) -> DataFrame:
    """bronze_trades or bronze_agg_trades rows -> symbol, time, price, qty, ids, count, taker."""
    if bars_from == "trades":
        first, last = F.col("trade_id"), F.col("trade_id")
    elif bars_from == "agg_trades":
        first, last = F.col("first_trade_id"), F.col("last_trade_id")
    else:
        raise ValueError(f"bars_from must be trades or agg_trades, got {bars_from!r}")
    return df.select(
        "symbol",
        F.unix_millis("trade_time").alias("time_ms"),
        "price",
        "qty",
        first.alias("first_id"),
        last.alias("last_id"),
        (last - first + 1).alias("n"),
        # The buyer is the taker when the buyer is not the maker.
        (~F.col("is_buyer_maker")).alias("taker_buy"),
    )


def floor_ms(ms: Column | str, interval_ms: int) -> Column:
    col = F.col(ms) if isinstance(ms, str) else ms
    return col - F.pmod(col, F.lit(interval_ms))


def minute_bars(trades: DataFrame) -> DataFrame:
    """trade_rows -> one real 1m bar per (symbol, minute) with trades."""
    quote = F.col("price") * F.col("qty")
    bars = trades.groupBy("symbol", floor_ms("time_ms", MINUTE_MS).alias("open_ms")).agg(
        # Ids order trades within a millisecond; the first and last trade
        # give the open and the close.
        F.min_by("price", "first_id").alias("open"),
        F.max("price").alias("high"),
        F.min("price").alias("low"),
        F.max_by("price", "last_id").alias("close"),
        F.sum("qty").alias("volume"),
        F.sum(quote).alias("quote_volume"),
        F.sum("n").alias("trade_count"),
        F.sum(F.when(F.col("taker_buy"), F.col("qty")).otherwise(F.lit(0))).alias("taker_buy_base"),
        F.sum(F.when(F.col("taker_buy"), quote).otherwise(F.lit(0))).alias("taker_buy_quote"),
        F.min("first_id").alias("first_trade_id"),
        F.max("last_id").alias("last_trade_id"),
    )
    return bars.withColumn("is_filled", F.lit(False)).select(*BAR_COLUMNS)


def fill_minutes(real: DataFrame, spans: DataFrame) -> DataFrame:
    """Every minute of each symbol's span, trade-less ones filled with the previous close.

    `spans`: symbol, first_ms, last_ms (minutes, inclusive), carry_close (the
    close before first_ms, null when the series starts inside the span).
    Real bars outside the spans are dropped.
    """
    minutes = spans.select(
        "symbol",
        "carry_close",
        F.explode(F.sequence("first_ms", "last_ms", F.lit(MINUTE_MS))).alias("open_ms"),
    )
    joined = minutes.join(real, ["symbol", "open_ms"], "left")
    # The last close at or before each minute, within the span.
    order = F.col("open_ms")

    upto = Window.partitionBy("symbol").orderBy(order).rowsBetween(Window.unboundedPreceding, 0)
    price = F.coalesce(F.last("close", ignorenulls=True).over(upto), F.col("carry_close"))
    filled = F.col("is_filled").isNull()
    zero_qty = F.lit(0).cast(real.schema["volume"].dataType)
    zero_quote = F.lit(0).cast(real.schema["quote_volume"].dataType)
    out = joined.select(
        "symbol",
        "open_ms",
        *[F.when(filled, price).otherwise(F.col(c)).alias(c) for c in ("open", "high", "low")],
        F.when(filled, price).otherwise(F.col("close")).alias("close"),
        F.when(filled, zero_qty).otherwise(F.col("volume")).alias("volume"),
        F.when(filled, zero_quote).otherwise(F.col("quote_volume")).alias("quote_volume"),
        F.when(filled, F.lit(0).cast("long")).otherwise(F.col("trade_count")).alias("trade_count"),
        F.when(filled, zero_qty).otherwise(F.col("taker_buy_base")).alias("taker_buy_base"),
        F.when(filled, zero_quote).otherwise(F.col("taker_buy_quote")).alias("taker_buy_quote"),
        "first_trade_id",
        "last_trade_id",
        filled.alias("is_filled"),
    )
    # A span that starts before the series' first trade has nothing to carry.
    return out.filter(F.col("close").isNotNull()).select(*BAR_COLUMNS)


def roll_up(minutes: DataFrame, interval_ms: int) -> DataFrame:
    """Complete 1m bars -> bars of `interval_ms`: prices from the minutes that traded."""
    real = ~F.col("is_filled")

    def first_last(fn: str, c: str, only: Column | None) -> Column:
        pair = F.struct("open_ms", F.col(c).alias("v"))
        picked = F.when(only, pair) if only is not None else pair
        return (F.min(picked) if fn == "min" else F.max(picked))["v"]

    bars = minutes.groupBy("symbol", floor_ms("open_ms", interval_ms).alias("open_ms")).agg(
        first_last("min", "open", real).alias("_open"),
        F.max(F.when(real, F.col("high"))).alias("_high"),
        F.min(F.when(real, F.col("low"))).alias("_low"),
        first_last("max", "close", real).alias("_close"),
        # A trade-less interval: every minute carries the previous close.
        first_last("max", "close", None).alias("_carry"),
        F.sum("volume").alias("volume"),
        F.sum("quote_volume").alias("quote_volume"),
        F.sum("trade_count").alias("trade_count"),
        F.sum("taker_buy_base").alias("taker_buy_base"),
        F.sum("taker_buy_quote").alias("taker_buy_quote"),
        F.min("first_trade_id").alias("first_trade_id"),
        F.max("last_trade_id").alias("last_trade_id"),
        F.min("is_filled").alias("is_filled"),
    )
    carry = F.col("_carry")
    return bars.select(
        "symbol",
        "open_ms",
        F.coalesce("_open", carry).alias("open"),
        F.coalesce("_high", carry).alias("high"),
        F.coalesce("_low", carry).alias("low"),
        F.coalesce("_close", carry).alias("close"),
        *BAR_COLUMNS[6:],
    )


def with_times(bars: DataFrame, interval: str, interval_ms: int) -> DataFrame:
    """Add interval, open_time and close_time (UTC timestamps; close = next open - 1 ms)."""
    return (
        bars.withColumn("interval", F.lit(interval))
        .withColumn("open_time", F.timestamp_millis("open_ms"))
        .withColumn("close_time", F.timestamp_millis(F.col("open_ms") + interval_ms - 1))
    )
