"""Binance's wire formats as explicit Spark schemas, one comment per cryptic key.

Every leaf is read as its JSON text (Spark gives a number's or a boolean's
text for a string field) and converted on purpose by bronze, which checks
each text before the cast: a decimal never loses a digit, an id that is not
a number or a missing field becomes a quarantine reason instead of a null.
"""

from __future__ import annotations

from pyspark.sql import types as T

# Binance sends up to 8 decimals; 20 integer digits cover any price or volume.
DECIMAL = T.DecimalType(28, 8)


def _fields(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype) for name, dtype in fields])


S = T.StringType()
L = S  # a long, converted by bronze
B = S  # a boolean, converted by bronze

TRADE = _fields(
    ("e", S),  # event type: "trade"
    ("E", L),  # event time, ms
    ("s", S),  # symbol
    ("t", L),  # trade id, consecutive per symbol
    ("p", S),  # price
    ("q", S),  # quantity
    ("T", L),  # trade time, ms
    ("m", B),  # buyer is the maker (the taker sold)
    ("M", B),  # ignore (best match)
)

AGG_TRADE = _fields(
    ("e", S),  # "aggTrade"
    ("E", L),  # event time, ms
    ("s", S),  # symbol
    ("a", L),  # aggregate trade id
    ("p", S),  # price
    ("q", S),  # quantity
    ("f", L),  # first trade id
    ("l", L),  # last trade id
    ("T", L),  # trade time, ms
    ("m", B),  # buyer is the maker
    ("M", B),  # ignore
)

KLINE_BAR = _fields(
    ("t", L),  # open time, ms
    ("T", L),  # close time, ms
    ("s", S),  # symbol
    ("i", S),  # interval, e.g. "1m"
    ("f", L),  # first trade id
    ("L", L),  # last trade id
    ("o", S),  # open
    ("c", S),  # close
    ("h", S),  # high
    ("l", S),  # low
    ("v", S),  # base volume
    ("n", L),  # number of trades
    ("x", B),  # is this bar closed (the last push of the bar)
    ("q", S),  # quote volume
    ("V", S),  # taker-buy base volume
    ("Q", S),  # taker-buy quote volume
)

KLINE = _fields(
    ("e", S),  # "kline"
    ("E", L),  # event time, ms
    ("s", S),  # symbol
    ("k", KLINE_BAR),
)

TICKER = _fields(
    ("e", S),  # "24hrTicker"
    ("E", L),  # event time, ms
    ("s", S),  # symbol
    ("p", S),  # price change over the rolling 24 h
    ("P", S),  # price change percent
    ("w", S),  # weighted average price
    ("x", S),  # first trade before the window (previous close)
    ("c", S),  # last price
    ("Q", S),  # last quantity
    ("b", S),  # best bid price
    ("B", S),  # best bid quantity
    ("a", S),  # best ask price
    ("A", S),  # best ask quantity
    ("o", S),  # open price of the window
    ("h", S),  # high
    ("l", S),  # low
    ("v", S),  # base volume
    ("q", S),  # quote volume
    ("O", L),  # window open time, ms
    ("C", L),  # window close time, ms
    ("F", L),  # first trade id
    ("L", L),  # last trade id
    ("n", L),  # number of trades
)

LEVELS = T.ArrayType(T.ArrayType(S))  # [[price, qty], ...]

PARTIAL_DEPTH = _fields(
    ("lastUpdateId", L),  # order book update id of this snapshot
    ("bids", LEVELS),
    ("asks", LEVELS),
)

DIFF_DEPTH = _fields(
    ("e", S),  # "depthUpdate"
    ("E", L),  # event time, ms
    ("s", S),  # symbol
    ("U", L),  # first update id in this event
    ("u", L),  # final update id in this event
    ("b", LEVELS),  # bids to update (qty 0: remove the level)
    ("a", LEVELS),  # asks to update
)

BOOK_TICKER = _fields(
    ("u", L),  # order book update id
    ("s", S),  # symbol
    ("b", S),  # best bid price
    ("B", S),  # best bid quantity
    ("a", S),  # best ask price
    ("A", S),  # best ask quantity
)
