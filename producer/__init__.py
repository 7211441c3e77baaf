"""Binance WebSocket -> Kafka producer service (built in a later issue)."""
