#!/usr/bin/env bash
# The bronze streaming query (./spark-submit.sh bronze), long-running.
#   infra/bronze.sh start|stop|status|health
# start waits for its Spark UI to answer; health asks the UI whether the
# application runs. Progress (lag, last commits): python -m streaming_jobs.common.progress
source "$(dirname "$0")/lib.sh"

NAME=bronze
# The wrapper execs spark-submit, which execs java: the same pid throughout.
PATTERN="(spark-submit.sh|launch.py) bronze"
START_TIMEOUT=${BRONZE_START_TIMEOUT:-120}
UI_PORT=$(cut -d' ' -f1 <<<"$SPARK_UI_PORTS")
URL="http://$LAKE_HOST:$UI_PORT"

healthy() { http_ok "$URL/api/v1/applications"; }

case "${1:-}" in
  start)
    if pid_of $NAME "$PATTERN" >/dev/null; then echo "$NAME: already running"; exit 0; fi
    require_port_free $NAME "$LAKE_HOST" "$UI_PORT"
    (cd "$ROOT" && start_bg $NAME "$ROOT/spark-submit.sh" bronze)
    wait_healthy $NAME "$PATTERN" "$START_TIMEOUT" healthy
    echo "$NAME: up, Spark UI $URL (log $(log_path $NAME))"
    ;;
  stop) stop_pid $NAME "$PATTERN" 60 ;;
  status) pid_of $NAME "$PATTERN" ;;
  health) healthy ;;
  *) echo "usage: $0 start|stop|status|health" >&2; exit 2 ;;
esac
