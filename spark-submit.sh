#!/usr/bin/env bash
# Run one layer of the pipeline (or a SQL query on the lake) with spark-submit.
#
#   ./spark-submit.sh bronze|silver|gold [args...]   long-running streaming query
#   ./spark-submit.sh sql "SELECT ..."                query the lake, CSV on stdout
#   ./spark-submit.sh migrate [--check]               rewrite tables of an older layout
#
# Passes the jars (jars/lib, as spark.jars), the project's code for the
# executors (.build/streaming_jobs.zip as --py-files, rebuilt by `make pyfiles`
# when a source changed), conf/spark-defaults.conf, the log config, the master
# (SPARK_MASTER, default local[2]; spark://host:port for a standalone cluster,
# see docs/DEPLOY.md) and the storage profile (STORAGE=local|minio), then runs
# streaming_jobs.<layer> in client mode. Each layer gets its own Spark UI port
# (conf/pipeline.yaml) and app name lakehouse-<layer>.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY="$ROOT/.venv/bin/python"
LAYERS="bronze silver gold sql migrate"

usage() {
  echo "usage: $0 <bronze|silver|gold|sql|migrate> [args...]" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
layer=$1
shift
[[ " $LAYERS " == *" $layer "* ]] || { echo "spark-submit: unknown layer '$layer'" >&2; usage; }
[[ -x "$PY" ]] || { echo "spark-submit: $PY missing: run 'make setup' first" >&2; exit 1; }
cd "$ROOT"

if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('streaming_jobs.$layer') is None)"; then
  echo "spark-submit: streaming_jobs.$layer does not exist yet in this checkout" >&2
  exit 1
fi

# Settings as exports (validates the config first: a bad key stops here).
exports=$("$PY" -m streaming_jobs.common.settings shell) || exit 78
eval "$exports"
# S3A reads credentials from the environment (never from a --conf value).
export AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER" AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD"
# Executors run PYSPARK_PYTHON (a packed venv on a real cluster, docs/DEPLOY.md).
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}" PYSPARK_DRIVER_PYTHON="$PY"
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-$LAKE_HOST}"

# Spark's scratch space (copies of the jars, shuffle and spill files) goes
# under the state dir, one directory per run: a driver killed with SIGKILL
# cannot delete its own, so each start removes those of runs that are gone.
scratch_root="$STATE_DIR/spark-local"
mkdir -p "$scratch_root"
for dir in "$scratch_root"/*-[0-9]*; do
  [[ -d $dir ]] || continue
  kill -0 "${dir##*-}" 2>/dev/null || rm -rf "$dir"
done
scratch="$scratch_root/$layer-$$" # $$: the driver's pid once this script execs it
mkdir -p "$scratch"

# Executors import the project from this archive, on any machine.
make --no-print-directory -s -C "$ROOT" pyfiles >&2 || { echo "spark-submit: building .build/streaming_jobs.zip failed" >&2; exit 1; }

mapfile -t conf_args < <("$PY" -m streaming_jobs.common.spark "$layer")
[[ ${#conf_args[@]} -gt 0 ]] || exit 1

# The parallel collector, not G1: a driver's heap here is small and mostly
# short-lived batch data, and G1's concurrent marking and write barriers kept
# up to 0.07 cores of a driver busy (silver's GC threads, make bench-cpu) with
# nothing to collect concurrently. The demo at real speed (make bench-cpu):
# the stack 1.19 -> 1.04 cores, its peak RSS 8,425 -> 6,400 MB.
# The JIT stays tiered (C1 then C2): C1 alone (-XX:TieredStopAtLevel=1) cut the
# compiler threads from 0.12 to 0.03 cores, but the tasks and the stream execution
# thread ran 1.7x longer on C1's code: the demo's stack 0.90 -> 1.11 cores
# (2026-12-07, same hour: LAKE_DRIVER_JAVA_OPTS=-XX:TieredStopAtLevel=1
# python -m tests.bench.live_bench --capture demo --minutes 11 --warmup-s 480
# --no-sampler, against the same command without it).
# LAKE_DRIVER_JAVA_OPTS: further JVM options for every driver (a flag to try).
submit=("$ROOT/.venv/bin/spark-submit"
  --master "${SPARK_MASTER:-local[2]}"
  --properties-file "$ROOT/conf/spark-defaults.conf"
  --driver-java-options "-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties -XX:+UseParallelGC ${LAKE_DRIVER_JAVA_OPTS:-}"
  --py-files "$ROOT/.build/streaming_jobs.zip"
  --conf "spark.local.dir=$scratch"
  "${conf_args[@]}"
  "$ROOT/streaming_jobs/launch.py" "$layer")

if [[ $layer != sql ]]; then
  # The layer's CPU priority (streaming.<layer>.nice); nice execs, keeping the pid.
  nice_var="NICE_${layer^^}"
  exec nice -n "${!nice_var:-0}" "${submit[@]}" "$@"
fi
# spark-submit merges the Python driver's stderr into its stdout, so the
# query writes its CSV to a file and everything else goes to stderr.
out=$(mktemp "${TMPDIR:-/tmp}/lakehouse-sql.XXXXXX")
trap 'rm -f "$out"' EXIT
"${submit[@]}" --output "$out" "$@" >&2
cat "$out"
