"""The replay exchange: Binance's spot market-data protocol served locally from real captures.

`captures` reads recorded sessions into frames (and shifts them for looping),
`exchange` serves them over WebSocket + REST on one port with chaos controls,
`__main__` is the command line (`python -m producer.replay --capture FILE`).
The `captures/` folder holds the real captures shipped for demos and tests
(provenance in captures/PROVENANCE.md).
"""
