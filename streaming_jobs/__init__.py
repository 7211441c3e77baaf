"""Spark Structured Streaming jobs: Kafka -> bronze -> silver -> gold Hudi tables."""
