#!/usr/bin/env bash
# A Spark standalone cluster on services.host: one master and
# spark_cluster.workers workers, from the installed pyspark (bin/spark-class).
#   infra/spark-cluster.sh start|stop|status|health|url
# start waits until every worker has registered with the master. Run a layer
# on it with SPARK_MASTER=$(infra/spark-cluster.sh url) ./spark-submit.sh <layer>.
#
# Executors inherit the worker's environment: the storage profile's S3
# credentials reach them that way, never through a --conf value (on a real
# cluster they come from the nodes' environment or an instance role, see
# docs/DEPLOY.md).
source "$(dirname "$0")/lib.sh"

SPARK_CLASS="$ROOT/.venv/bin/spark-class"
MASTER_URL="spark://$LAKE_HOST:$CLUSTER_MASTER_PORT"
UI="http://$LAKE_HOST:$CLUSTER_MASTER_UI_PORT"
WORK="$STATE_DIR/spark-cluster"
START_TIMEOUT=${CLUSTER_START_TIMEOUT:-90}

worker_ui_port() { echo $((CLUSTER_WORKER_UI_PORT + $1 - 1)); }
master_pattern() { echo "deploy.master.Master --host $LAKE_HOST --port $CLUSTER_MASTER_PORT "; }
worker_pattern() { echo "deploy.worker.Worker --host $LAKE_HOST --webui-port $(worker_ui_port "$1") "; }

# The master's JSON view (/json/) counts the workers that registered.
alive_workers() {
  curl -sf --max-time 5 "$UI/json/" | sed -n 's/.*"aliveworkers" *: *\([0-9]*\).*/\1/p'
}
healthy() { [[ $(alive_workers) == "$CLUSTER_WORKERS" ]]; }

DAEMON_ENV=(env SPARK_DAEMON_MEMORY=512m SPARK_LOCAL_IP="$LAKE_HOST"
  AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER" AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD")

stop_all() {
  local n rc=0
  for ((n = CLUSTER_WORKERS; n >= 1; n--)); do
    stop_pid "spark-worker-$n" "$(worker_pattern "$n")" 30 || rc=1
  done
  stop_pid spark-cluster "$(master_pattern)" 30 || rc=1
  return $rc
}

case "${1:-}" in
  start)
    if pid_of spark-cluster "$(master_pattern)" >/dev/null; then echo "spark-cluster: already running"; exit 0; fi
    [[ -x "$SPARK_CLASS" ]] || { echo "spark-cluster: $SPARK_CLASS missing: run 'make setup'" >&2; exit 1; }
    require_port_free spark-cluster "$LAKE_HOST" "$CLUSTER_MASTER_PORT"
    require_port_free spark-cluster "$LAKE_HOST" "$CLUSTER_MASTER_UI_PORT"
    start_bg spark-cluster "${DAEMON_ENV[@]}" "$SPARK_CLASS" org.apache.spark.deploy.master.Master \
      --host "$LAKE_HOST" --port "$CLUSTER_MASTER_PORT" --webui-port "$CLUSTER_MASTER_UI_PORT"
    for ((n = 1; n <= CLUSTER_WORKERS; n++)); do
      # Executors keep their scratch space (shuffle, spill) under the worker's dir.
      mkdir -p "$WORK/worker-$n/local"
      require_port_free spark-cluster "$LAKE_HOST" "$(worker_ui_port $n)" || { stop_all >/dev/null; exit 1; }
      start_bg "spark-worker-$n" "${DAEMON_ENV[@]}" SPARK_LOCAL_DIRS="$WORK/worker-$n/local" "$SPARK_CLASS" org.apache.spark.deploy.worker.Worker \
        --host "$LAKE_HOST" --webui-port "$(worker_ui_port $n)" \
        --cores "$CLUSTER_WORKER_CORES" --memory "$CLUSTER_WORKER_MEMORY" \
        --work-dir "$WORK/worker-$n" "$MASTER_URL"
    done
    if ! wait_healthy spark-cluster "$(master_pattern)" "$START_TIMEOUT" healthy; then
      echo "spark-cluster: $(alive_workers || echo 0) of $CLUSTER_WORKERS workers registered; see $LOG_DIR/spark-*.log" >&2
      stop_all >/dev/null
      exit 1
    fi
    echo "spark-cluster: up, master $MASTER_URL with $CLUSTER_WORKERS workers x $CLUSTER_WORKER_CORES cores, UI $UI"
    ;;
  stop) stop_all ;;
  status) pid_of spark-cluster "$(master_pattern)" ;;
  health) healthy ;;
  url) echo "$MASTER_URL" ;;
  *) echo "usage: $0 start|stop|status|health|url" >&2; exit 2 ;;
esac
