"""What every layer shares: typed settings, the Spark session, storage paths, Hudi and Kafka I/O."""
