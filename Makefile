# The project's commands. `make setup` installs everything the pipeline and
# its tests need from the package registries (pip, Maven, the Go module
# proxy, Debian), idempotent and cached: a second run does nothing.
#
#   make setup     venv + project, Spark jars, Kafka broker libs, MinIO, Prometheus
#   make up        start Kafka, MinIO, Prometheus, the producer live against Binance, bronze, silver, gold
#   make demo      the same offline: the producer reads the replay exchange serving a real capture
#                  (CAPTURE=f1[,f2] SPEED=<factor>|max; ONCE=1 plays once, waits, stops, exits 0)
#   make status    each component up/down, pid, uptime, address, log; non-zero if any is down
#   make down      stop what `make up` started (pid files only)
#   make cluster-up    a Spark standalone master and workers on loopback; then
#                      SPARK_MASTER=spark://127.0.0.1:7077 STORAGE=minio make up (docs/DEPLOY.md)
#   make cluster-down  stop it
#   make test      the test suite against real services (started and stopped by the tests)
#   make lint      ruff + mypy
#   make chaos     the chaos suite: every fault ROUNDS times (default 10) on a stack of its own,
#                  then a clean run, then the invariants; writes docs/RELIABILITY.md (SEED, SPEED)
#   make bench     benchmarks against their peers, results in docs/BENCHMARKS.md: the targets
#                  bench-live, bench-cpu, bench-bronze, bench-write, bench-market, bench-silver,
#                  bench-producer (each at most 45 min); bench-quick: results in .state/bench-quick/
#   make soak      2 h 15 min of the whole stack at 1,000 trades/s (alone on the machine)

SHELL := /bin/bash
.DEFAULT_GOAL := help
include infra/versions.env

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := $(CURDIR)/.tools
MINIO_BIN := $(TOOLS)/minio/$(MINIO_VERSION)/minio
KAFKA_LIBS := $(TOOLS)/kafka/libs
PYFILES := .build/streaming_jobs.zip
LOCALFS_JAR := .build/lakehouse-localfs.jar
MVN := mvn -q -B -Dstyle.color=never
STATE_DIR ?= $(CURDIR)/.state
TEST_STATE_DIR ?= $(STATE_DIR)/test
PYTEST_ARGS ?=
export STATE_DIR

.PHONY: help setup up demo where down status test chaos bench bench-quick bench-write bench-live \
	bench-cpu bench-bronze bench-market bench-silver bench-producer soak lint jars-streamer \
	clean-state pyfiles cluster-up cluster-down

help:
	@sed -n 's/^#   //p' Makefile

setup: $(VENV)/.installed $(PYFILES) jars/lib/.resolved $(LOCALFS_JAR) $(KAFKA_LIBS)/.resolved $(MINIO_BIN) \
	.tools/.prometheus
	@echo "setup: done"

# The project's code for Spark executors (--py-files); ./spark-submit.sh runs
# this target, so the archive never lags behind the sources.
pyfiles: $(PYFILES)
$(PYFILES): $(shell find streaming_jobs -name '*.py' -not -path '*/__pycache__/*') infra/package.py
	@$(PY) infra/package.py $@

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Spark's extra jars: exactly the list in jars/pom.xml, no transitive ones.
jars/lib/.resolved: jars/pom.xml
	rm -rf jars/lib
	$(MVN) -f jars/pom.xml dependency:copy-dependencies -DexcludeTransitive=true -DoutputDirectory=lib
	@touch $@

# Hadoop's local file system without a forked chmod / ls per file
# (jars/localfs/lakehouse/hadoop/NioLocalFileSystem.java), against the Hadoop API
# Spark ships; the JDK's javac (Spark runs on the same JDK 17).
$(LOCALFS_JAR): $(shell find jars/localfs -name '*.java') $(VENV)/.installed
	@command -v javac >/dev/null || { echo "setup: javac (JDK 17) is needed to build $@" >&2; exit 1; }
	@rm -rf .build/localfs && mkdir -p .build/localfs
	javac -nowarn --release 8 -d .build/localfs \
	  -cp "$$(ls $(VENV)/lib/python3*/site-packages/pyspark/jars/hadoop-client-api-*.jar)" \
	  $(shell find jars/localfs -name '*.java')
	jar cf $@.tmp -C .build/localfs . && mv $@.tmp $@

# Optional peer for `make bench`: HoodieStreamer (not served by every registry).
jars-streamer:
	$(MVN) -f jars/pom.xml -P hoodie-streamer dependency:copy-dependencies \
	  -DexcludeTransitive=true -DincludeArtifactIds=hudi-utilities-slim-bundle_2.12 -DoutputDirectory=lib

# The Kafka broker runtime from Maven artifacts (KRaft; no tarball).
$(KAFKA_LIBS)/.resolved: infra/kafka/pom.xml
	rm -rf $(KAFKA_LIBS)
	$(MVN) -f infra/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(KAFKA_LIBS)
	@touch $@

$(MINIO_BIN):
	@command -v go >/dev/null || { echo "setup: Go 1.24+ is needed to build MinIO" >&2; exit 1; }
	GOBIN=$(dir $@) go install github.com/minio/minio@$(MINIO_VERSION)

# Prometheus from Debian's package when the machine has none.
.tools/.prometheus:
	@mkdir -p .tools
	@if ! command -v prometheus >/dev/null; then \
	  echo "setup: installing prometheus from Debian's packages"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	fi
	@touch $@

up: setup
	@infra/services.sh up
	@$(MAKE) --no-print-directory where

demo: setup
	@ONCE=$(ONCE) infra/demo.sh
	@[[ -n "$(ONCE)" ]] || $(MAKE) --no-print-directory where

where:
	@eval "$$($(PY) -m streaming_jobs.common.settings shell)"; \
	echo; \
	echo "Kafka        $$KAFKA_BOOTSTRAP_SERVERS"; \
	echo "MinIO (S3)   $$S3_ENDPOINT  (console http://$$LAKE_HOST:$$MINIO_CONSOLE_PORT, bucket $$S3_BUCKET)"; \
	echo "Prometheus   http://$$LAKE_HOST:$$PROMETHEUS_PORT  (targets: /targets)"; \
	echo "Producer     http://$$LAKE_HOST:$$PRODUCER_METRICS_PORT/metrics and /health"; \
	echo "Spark UIs    bronze/silver/gold on http://$$LAKE_HOST ports $$SPARK_UI_PORTS (metrics: /metrics/prometheus/)"; \
	echo "Query metrics bronze/silver/gold on http://$$LAKE_HOST ports $$METRICS_PORTS (/metrics)"; \
	echo "Status       make status   (the lake: .venv/bin/lakehouse --help)"; \
	echo "Logs         $$STATE_DIR/logs/"; \
	echo "Stop with    make down"

down:
	@infra/services.sh down

cluster-up: setup
	@infra/spark-cluster.sh start

cluster-down:
	@infra/spark-cluster.sh stop

status:
	@infra/services.sh status

test: setup
	@rc=0; TEST_STATE_DIR=$(TEST_STATE_DIR) $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [[ -d $(TEST_STATE_DIR)/pids ]]; then \
	  STATE_DIR=$(TEST_STATE_DIR) LAKE_CONF_DIR=$(TEST_STATE_DIR)/conf infra/services.sh down >/dev/null 2>&1 || true; \
	fi; \
	exit $$rc

SEED ?= 20261127
ROUNDS ?= 10
chaos: setup
	$(PY) -m tests.chaos --seed $(SEED) --rounds $(ROUNDS) --speed $(or $(SPEED),1) $(if $(FAULTS),--faults $(FAULTS))

# `make bench`: every benchmark target below but the soak, one after the other; each
# writes docs/bench/<name>.json and regenerates docs/BENCHMARKS.md from all of them.
# Each target takes at most 45 minutes on 2 cores, with its peers in the same target.
bench: bench-live bench-cpu bench-bronze bench-write bench-market bench-silver bench-producer

# The whole stack at 1,000 trades/s (20 symbols): freshness, trade -> gold row, CPU, batches,
# measured 10 min after a 5 min start-up (reported apart); then the same on MinIO (about 38 min).
bench-live: setup
	$(PY) -m tests.bench.live_bench --minutes 15 --warmup-s 300
	$(PY) -m tests.bench.live_bench --minutes 15 --warmup-s 300 --storage minio

# CPU of every process of the stack while `make demo`'s capture plays at real speed:
# 3 min after an 8 min warm-up (the drivers' JIT keeps a quarter core each busy for about
# 8 min; the report gives every minute's figure from the start too; about 13 min).
bench-cpu: setup
	$(PY) -m tests.bench.live_bench --capture demo --minutes 11 --warmup-s 480 --no-sampler

# Bronze against a plain Kafka -> Parquet query: backlog throughput, latency at 1k and 10k
# frames/s (about 25 min).
bench-bronze: setup
	$(PY) -m tests.bench.bronze_bench --loops 2 --reps 2 --rates 1000,10000 --seconds 60

# Hudi's write paths one factor at a time, at 2, 200 and 2,000 symbols (about 40 min).
bench-write: setup
	$(PY) -m tests.bench.write_paths --commits 7

# The whole spot market: 2,000 symbols through the whole stack, then a 5x burst (about 30 min).
bench-market: setup
	$(PY) -m tests.bench.market_bench --symbols 2000 --minutes 10 --burst-minutes 5

# Silver's backfill of 3 million trades against Spark's plain 1m query and DuckDB (about 5 min).
bench-silver: setup
	$(PY) -m tests.bench.silver_bench --loops 88

# The producer against a bare kafka-python loop (about 10 min).
bench-producer: setup
	$(PY) -m tests.bench.producer_bench --loops 4 --reps 3

# Hours at 1,000 trades/s with every layer running: batch durations must not creep
# (2 h 15 min; run it on its own, nothing else on the machine).
soak: setup
	$(PY) -m tests.bench.live_bench --minutes 135 --warmup-s 900 --soak --no-sampler

# A smaller pass of the same benchmarks; its figures go to .state/bench-quick/,
# never over the full run's in docs/.
bench-quick: export BENCH_RESULTS_DIR = $(STATE_DIR)/bench-quick
bench-quick: setup
	$(PY) -m tests.bench.producer_bench --loops 1 --reps 1
	$(PY) -m tests.bench.bronze_bench --loops 1 --reps 1 --rates 1000 --seconds 15
	$(PY) -m tests.bench.silver_bench --loops 10
	$(PY) -m tests.bench.live_bench --minutes 4 --warmup-s 60

lint: $(VENV)/.installed
	$(PY) -m ruff check producer streaming_jobs tests infra
	$(PY) -m ruff format --check producer streaming_jobs tests infra
	$(PY) -m mypy

# Deletes tables, checkpoints, topics' data and logs (asks nothing: stop first).
clean-state:
	@if infra/services.sh status >/dev/null 2>&1; then echo "clean-state: run 'make down' first" >&2; exit 1; fi
	rm -rf $(STATE_DIR)
