"""1m OHLCV bars from trades, as Binance builds its klines. Pure DataFrame transforms.

- `trade_rows` puts bronze trades or aggTrades into one shape (an aggTrade
  counts last - first + 1 trades);
- `minute_bars` aggregates trades into 1m bars by exchange trade time,
  summing decimals exactly (Spark: the one step that reads every trade).

The trade-less minutes, the longer intervals and the indicators follow per
symbol in streaming_jobs/silver/series.py. Times are epoch milliseconds
(`open_ms`).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, functions as F

from streaming_jobs.silver.series import BAR_COLUMNS, MINUTE_MS

__all__ = ["BAR_COLUMNS", "MINUTE_MS", "floor_ms", "minute_bars", "trade_rows"]


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


def minute_bars(trades: DataFrame, with_times: bool = False) -> DataFrame:
    """trade_rows -> one real 1m bar per (symbol, minute) with trades; `with_times` adds the
    exchange times of its first and last trade (first_ms, last_ms)."""
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
        F.min("time_ms").alias("first_ms"),
        F.max("time_ms").alias("last_ms"),
    )
    times = ["first_ms", "last_ms"] if with_times else []
    return bars.withColumn("is_filled", F.lit(False)).select(*BAR_COLUMNS, *times)
